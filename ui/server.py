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

from pipelines import APP_NAME, AppConfig, __version__

log = logging.getLogger(__name__)


def load_credentials(auth: str | None, auth_file: Path | None) -> list[tuple[str, str]] | None:
    """Logins from --auth and --auth-file ("user:password", comma or newline separated); None when neither is set.

    A password may contain ':' (only the first one separates). A malformed entry is an error naming where
    it came from, never silently skipped: a typo must not leave the page open.
    """
    entries: list[tuple[str, str]] = []
    sources: list[tuple[str, str]] = []
    if auth:
        sources.append(("--auth", auth))
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--auth-file {auth_file}: cannot be read ({exc.strerror or exc})") from None
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        sources.append((f"--auth-file {auth_file}", ",".join(lines)))
    if not sources:
        return None
    for where, text in sources:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            user, sep, password = item.partition(":")
            if not sep or not user.strip() or not password:
                raise ValueError(f"{where}: {item.split(':')[0]!r} is not a user:password pair")
            entries.append((user.strip(), password))
    if not entries:
        raise ValueError(f"{sources[0][0]}: no user:password pairs found")
    return entries


def build_http_app(
    cfg: AppConfig,
    demo: gr.Blocks,
    css: str,
    routers: tuple = (),
    head: str | None = None,
    auth: list[tuple[str, str]] | None = None,
) -> FastAPI:
    app = FastAPI(title=f"{APP_NAME} API", version=__version__, docs_url="/docs", redoc_url=None)
    for router in routers:
        app.include_router(router)
    allowed = {str(Path(cfg.output_dir).resolve()), str(Path(cfg.resolved_cache_dir).resolve())}
    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=cfg.host,
        server_port=cfg.port,
        allowed_paths=sorted(allowed),
        css=css,
        head=head,
        auth=auth,
        auth_message=f"{APP_NAME}: log in to continue." if auth else None,
        footer_links=["api", "settings"],
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
