"""One HTTP server for everything: the Gradio page at /, and (when enabled) the HTTP API beside it.

FastAPI is the root app so that the API routes and their OpenAPI docs live next to the page in one
process, on the one queue; Gradio is mounted last so its catch-all does not shadow them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI

from pipelines import APP_NAME, __version__
from pipelines.config import AppConfig

log = logging.getLogger(__name__)


def build_http_app(cfg: AppConfig, demo: gr.Blocks, css: str, routers: tuple = ()) -> FastAPI:
    app = FastAPI(title=f"{APP_NAME} API", version=__version__, docs_url="/docs", redoc_url=None)
    for router in routers:
        app.include_router(router)
    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=cfg.host,
        server_port=cfg.port,
        allowed_paths=[str(Path(cfg.output_dir).resolve())],
        css=css,
        footer_links=["api"],
    )


class Server:
    """uvicorn in a background thread, so the caller can print links and open a share tunnel."""

    def __init__(self, app: FastAPI, host: str, port: int):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the web server could not start on {self.host}:{self.port} (is the port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError("the web server did not start in time")
            time.sleep(0.05)

    def wait(self) -> None:
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    @property
    def local_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def open_share_link(host: str, port: int) -> str | None:
    """A public gradio.live link to this server; None (with a warning) when it cannot be made, e.g. offline."""
    from gradio import networking

    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        return networking.setup_tunnel(local, port, secrets.token_urlsafe(32), None, None)
    except Exception as exc:  # offline, firewall, missing frpc binary: all mean "serve locally"
        log.warning("Could not create a share link (%s); serving locally only.", exc)
        return None
