"""The engine: models, prompts, styles, the queue and generation. Never imports the UI."""

from pipelines.about import APP_NAME, __version__

__all__ = ["APP_NAME", "__version__"]
