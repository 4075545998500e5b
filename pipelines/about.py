"""The app's name and version, for metadata, the page title and the API (imported by every layer)."""

__version__ = "0.1.0"
APP_NAME = "Easel"
