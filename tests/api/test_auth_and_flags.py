"""--api-auth (HTTP Basic on the API only, constant-time) and --api / --no-api, on apps of their own."""

from __future__ import annotations

import secrets

import httpx
import pytest

from app import parse_args
from tests.support.live_app import start_live_app
from ui.api import PREFIX, parse_credentials
from ui.api.auth import credentials_match

ROUTES = [("get", "options"), ("get", "sd-models"), ("get", "progress"), ("post", "interrupt"), ("get", "samplers")]


@pytest.fixture(scope="module")
def guarded(api_models_dir, tmp_path_factory):
    app = start_live_app(api_models_dir, tmp_path_factory.mktemp("auth-outputs"), api_auth="alice:s3cret,bob:pa:ss")
    yield app
    app.close()


@pytest.mark.parametrize("method,route", ROUTES)
def test_api_routes_need_the_credentials(guarded, method, route):
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        anonymous = client.request(method, f"{PREFIX}/{route}")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Basic"
        for wrong in (("alice", "S3CRET"), ("alice", "s3cre"), ("mallory", "s3cret"), ("bob", "pa")):
            assert client.request(method, f"{PREFIX}/{route}", auth=wrong).status_code == 401, wrong
        for right in (("alice", "s3cret"), ("bob", "pa:ss")):  # a password may contain ':'
            assert client.request(method, f"{PREFIX}/{route}", auth=right).status_code == 200, right


def test_a_generation_with_credentials_and_a_malformed_header(guarded):
    with httpx.Client(base_url=guarded.url, timeout=120) as client:
        body = {"prompt": "guarded", "steps": 1, "width": 64, "height": 64}
        assert client.post(f"{PREFIX}/txt2img", json=body).status_code == 401
        assert guarded.services.queue.counts()["known"] == 0  # refused before anything was queued
        assert client.post(f"{PREFIX}/txt2img", json=body, headers={"Authorization": "Basic !!!"}).status_code == 401
        answer = client.post(f"{PREFIX}/txt2img", json=body, auth=("alice", "s3cret"))
        assert answer.status_code == 200 and len(answer.json()["images"]) == 1


def test_the_page_and_the_docs_stay_open(guarded):
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        assert client.get("/").status_code == 200
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        # the docs say how to authenticate (Swagger's "Authorize" button)
        assert any(s.get("scheme") == "basic" for s in spec["components"]["securitySchemes"].values())


def test_credentials_are_compared_in_constant_time_every_pair_every_time(monkeypatch):
    pairs = parse_credentials("alice:s3cret, bob:pa:ss")
    assert pairs == [("alice", "s3cret"), ("bob", "pa:ss")]
    calls = []
    real = secrets.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(secrets, "compare_digest", counting)
    assert credentials_match("alice", "s3cret", pairs)  # a match on the first pair still compares the second
    assert len(calls) == 4 and all(isinstance(a, bytes) for a, _ in calls)
    calls.clear()
    assert not credentials_match("alice", "wrong", pairs) and len(calls) == 4
    assert credentials_match("bob", "pa:ss", pairs) and not credentials_match("bob", "s3cret", pairs)
    assert not credentials_match("", "", pairs) and credentials_match("ünï", "cödé", [("ünï", "cödé")])


@pytest.mark.parametrize("text", ["alice", "alice:", ":pw", "alice:pw,bob"])
def test_malformed_api_auth_is_refused_at_start(text, capsys):
    with pytest.raises(ValueError, match="user:password"):
        parse_credentials(text)
    with pytest.raises(SystemExit) as stop:
        parse_args(["--api-auth", text])
    assert stop.value.code == 2
    assert "--api-auth expects user:password" in capsys.readouterr().err


def test_api_flags():
    cfg, _ = parse_args([])
    assert cfg.api is True and cfg.api_auth is None
    cfg, _ = parse_args(["--no-api"])
    assert cfg.api is False
    cfg, _ = parse_args(["--api", "--api-auth", "u:p"])  # A1111's spelling still works
    assert cfg.api is True and cfg.api_auth == "u:p"


def test_no_api_serves_the_page_only(api_models_dir, tmp_path):
    app = start_live_app(api_models_dir, tmp_path, api=False)
    try:
        with httpx.Client(base_url=app.url, timeout=30) as client:
            assert client.get("/").status_code == 200
            assert client.get(f"{PREFIX}/options").status_code == 404
            assert not any(p.startswith(PREFIX) for p in client.get("/openapi.json").json()["paths"])
    finally:
        app.close()
