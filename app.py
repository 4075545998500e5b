"""Easel: run `python app.py` and open http://127.0.0.1:7865.

The composition root: the command line becomes one AppConfig, which builds the services; the UI and
the HTTP server are built on them. Nothing else reads argv or the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import webbrowser
from typing import TYPE_CHECKING, Sequence

from pipelines import APP_NAME, AppConfig, __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

EXTRA_FLAGS = {
    "listen": "Serve on all interfaces (0.0.0.0) so other machines on the network can connect.",
    "inbrowser": "Open the page in the default browser once the server is up.",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[AppConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="app.py", description=f"{APP_NAME} {__version__}: local image generation.")
    defaults = AppConfig()
    for f in dataclasses.fields(AppConfig):
        flag = "--" + f.name.replace("_", "-")
        kind, text = f.metadata["type"], f.metadata["help"].replace("%", "%%")
        if kind is bool:  # a setting on by default also gets its --no-... form
            action = argparse.BooleanOptionalAction if getattr(defaults, f.name) else "store_true"
            parser.add_argument(flag, action=action, default=getattr(defaults, f.name), help=text)
        else:
            parser.add_argument(flag, type=kind, default=getattr(defaults, f.name), help=text)
    for name, text in EXTRA_FLAGS.items():
        parser.add_argument("--" + name, action="store_true", help=text)
    args = parser.parse_args(argv)
    from ui.api.auth import parse_credentials

    try:
        parse_credentials(args.api_auth)
    except ValueError as exc:
        parser.error(str(exc))
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AppConfig)}
    if args.listen:
        values["host"] = "0.0.0.0"
    return AppConfig(**values), args


def build_app(cfg: AppConfig, services, ctx=None, credentials=None) -> FastAPI:
    """The one HTTP app: the page at /, and the A1111-compatible API (unless --no-api) with its docs at /docs.

    `ctx` is the page's UIContext (built from cfg.preset when not given); `credentials` the page's logins.
    """
    from ui.api import build_api_router, parse_credentials
    from ui.context import UIContext
    from ui.gradio_app import CSS, HEAD, build_ui
    from ui.server import build_http_app

    ctx = ctx if ctx is not None else UIContext.build(services, preset=cfg.preset)
    routers = (build_api_router(services, parse_credentials(cfg.api_auth)),) if cfg.api else ()
    return build_http_app(cfg, build_ui(ctx), CSS, routers=routers, head=HEAD, auth=credentials)


def quiet_libraries() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    quiet_libraries()

    from pipelines import build_services
    from ui.context import UIContext
    from ui.server import Server, load_credentials, open_share_link

    try:
        credentials = load_credentials(cfg.auth, cfg.auth_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        services = build_services(cfg)
    except ValueError as exc:  # a bad --device/--precision and the like
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{APP_NAME} {__version__} on {services.plan.label}: {services.optimizations()}. ({services.plan.reason})")
    for path, why in services.registry.skipped:
        print(f"  skipped {path}: {why}")
    if not any(r.usable for r in services.registry.checkpoints()):
        print("  " + services.registry.missing_checkpoint_message())
    try:
        ctx = UIContext.build(services, preset=cfg.preset)
    except (KeyError, ValueError) as exc:  # an unknown --preset, or a preset file with a mistake
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        services.close()
        return 2
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and credentials is None:
        print("  note: the page is open to your network without a login; --auth user:password adds one.")

    server = Server(build_app(cfg, services, ctx, credentials), cfg.host, cfg.port)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        services.close()
        return 1
    print(f"Running on {server.local_url}")
    if cfg.api:
        protected = " (HTTP Basic, --api-auth)" if cfg.api_auth else ""
        print(f"A1111-compatible API at {server.local_url}/sdapi/v1{protected}; docs at {server.local_url}/docs")
        if not cfg.api_auth and (cfg.host not in ("127.0.0.1", "localhost", "::1") or cfg.share):
            print("  The API is reachable from other machines: protect it with --api-auth user:password, or use --no-api.")
    if cfg.share:
        link = open_share_link(cfg.host, cfg.port)
        print(f"Public link: {link}" if link else "No share link could be made (offline?); serving locally only.")
    if args.inbrowser:
        webbrowser.open(server.local_url)
    try:
        server.wait()
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
