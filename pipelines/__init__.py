"""The pipeline manager: models, prompts, styles, queue and generation. Never imports the UI."""

__version__ = "0.1.0"
APP_NAME = "Easel"
