"""The AUTOMATIC1111-compatible HTTP API (/sdapi/v1), served beside the page on the same queue."""

from ui.api.auth import parse_credentials
from ui.api.router import PREFIX, build_api_router

__all__ = ["PREFIX", "build_api_router", "parse_credentials"]
