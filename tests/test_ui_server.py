"""Serving: logins from --auth/--auth-file guard the page and the image files; flags reach the config."""

from __future__ import annotations

import socket

import gradio as gr
import httpx
import pytest

import app
from pipelines.config import AppConfig
from ui.server import Server, build_http_app, load_credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_credentials_from_flag_and_file(tmp_path):
    assert load_credentials(None, None) is None
    assert load_credentials("ann:secret", None) == [("ann", "secret")]
    assert load_credentials(" ann:a:b , bob:x ", None) == [("ann", "a:b"), ("bob", "x")]
    logins = tmp_path / "logins.txt"
    logins.write_text("# users\ncarl:one\n\n dana:two,erin:three\n", encoding="utf-8")
    assert load_credentials("ann:secret", logins) == [("ann", "secret"), ("carl", "one"), ("dana", "two"), ("erin", "three")]


@pytest.mark.parametrize(
    "auth, text, message",
    [
        ("ann", None, "--auth: 'ann' is not a user:password pair"),
        ("ann:", None, "--auth: 'ann' is not a user:password pair"),
        (":pw", None, "is not a user:password pair"),
        (None, "# only comments\n", "no user:password pairs found"),
        (None, "carl:one\nbroken\n", "'broken' is not a user:password pair"),
    ],
)
def test_bad_credentials_are_refused_not_skipped(tmp_path, auth, text, message):
    path = None
    if text is not None:
        path = tmp_path / "logins.txt"
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_credentials(auth, path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_credentials(None, tmp_path / "missing.txt")


def test_login_guards_the_page_and_its_files(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    image = out / "image.png"
    image.write_bytes(b"\x89PNG fake")
    with gr.Blocks() as demo:
        gr.Markdown("the secret page")
    cfg = AppConfig(output_dir=out, port=free_port())
    server = Server(build_http_app(cfg, demo, "", auth=[("ann", "pw:1")]), cfg.host, cfg.port)
    server.start()
    try:
        client = httpx.Client(base_url=server.local_url)
        denied = client.get("/config")
        assert denied.status_code == 401 and "log in" in denied.text
        assert client.get(f"/gradio_api/file={image}").status_code in (401, 403)
        assert client.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        assert client.post("/login", data={"username": "ann", "password": "pw:1"}).json() == {"success": True}
        assert "the secret page" in client.get("/config").text
        assert client.get(f"/gradio_api/file={image}").content == b"\x89PNG fake"
    finally:
        server.stop()


def test_flags_reach_the_config(tmp_path):
    cfg, args = app.parse_args(
        [
            "--preset",
            "anime",
            "--auth",
            "ann:pw",
            "--auth-file",
            str(tmp_path / "f"),
            "--listen",
            "--port",
            "7999",
            "--share",
            "--inbrowser",
        ]
    )
    assert (cfg.preset, cfg.auth, cfg.auth_file, cfg.host, cfg.port, cfg.share) == (
        "anime",
        "ann:pw",
        tmp_path / "f",
        "0.0.0.0",
        7999,
        True,
    )
    assert args.inbrowser
    described = AppConfig.describe()
    assert all(described[name] for name in ("preset", "auth", "auth_file"))


def test_bad_preset_or_login_stops_the_app_with_a_message(tmp_path, capsys):
    base = [
        "--models-dir",
        str(tmp_path / "models"),
        "--output-dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--port",
        str(free_port()),
    ]
    assert app.main([*base, "--auth", "nopassword"]) == 2
    assert "error: --auth: 'nopassword' is not a user:password pair" in capsys.readouterr().err
    assert app.main([*base, "--preset", "turbo"]) == 2
    assert "error: No preset named 'turbo'. Available: default, anime, lightning, realistic." in capsys.readouterr().err
