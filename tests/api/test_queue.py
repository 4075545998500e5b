"""The API and the page share one queue and one worker: order, progress, interrupt and skip across both."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
from PIL import Image

from tests.support.gates import StepGate
from ui.api import PREFIX

SMALL = {"width": 64, "height": 64}


def poll_progress(client, until, timeout: float = 60) -> dict:
    """GET progress until `until(body)` holds; returns that answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{PREFIX}/progress").json()
        if until(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"progress never reached the expected state; last: {body}")


class Background:
    """Run a call in a thread and keep its result (or exception) for later."""

    def __init__(self, fn, *args, **kwargs):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in get()
            self.error = exc

    def get(self, timeout: float = 120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def post_txt2img(url: str, body: dict) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=300) as own:  # one connection per client, as separate tools would
        return own.post(f"{PREFIX}/txt2img", json=body)


def test_concurrent_clients_are_all_answered_in_queue_order(live, page):
    queue = live.services.queue
    poll = httpx.Client(base_url=live.url, timeout=30)
    with StepGate(queue, lambda request: request.prompt == "first", step=2) as gate:
        blocker = Background(post_txt2img, live.url, {"prompt": "first", "steps": 150, "batch_size": 8, "seed": 0, **SMALL})
        gate.wait()
        assert poll_progress(poll, lambda b: b["state"]["sampling_steps"] == 150)["state"]["sampling_step"] == 2
        # while the first job holds the worker, eight API clients and the page submit, one after another
        calls = []
        for i in range(8):
            calls.append(Background(post_txt2img, live.url, {"prompt": f"client {i}", "steps": 2, "seed": 100 + i, **SMALL}))
            poll_progress(poll, lambda b, n=i + 1: b["state"]["queue_pending"] >= n)
        from_page = Background(page.generate, prompt="from the page", steps=2, seed=500)
        poll_progress(poll, lambda b: b["state"]["queue_pending"] >= 9)
        assert queue.counts()["waiting"] == 9
        assert poll.post(f"{PREFIX}/interrupt").json() == {}

    answers = [call.get() for call in calls]
    answer, files = from_page.get()
    assert answer["status"] == "finished" and len(files) == 1
    first = blocker.get()
    assert first.status_code == 200 and json.loads(first.json()["info"])["interrupted"] is True
    poll.close()

    infos = []
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        info = json.loads(answer.json()["info"])
        assert info["prompt"] == f"client {i}" and info["all_seeds"] == [100 + i]  # each got its own job back
        assert len(answer.json()["images"]) == 1
        infos.append(info)
    [page_entry] = [e for e in live.services.history.list("from the page", limit=10)]
    jobs = [queue.status(info["job_id"]) for info in infos] + [queue.status(page_entry.job_id)]
    # run in the order submitted, one at a time on the one worker
    assert [j.job_id for j in sorted(jobs, key=lambda j: j.started_at)] == [j.job_id for j in jobs]
    for before, after in zip(jobs, jobs[1:]):
        assert before.finished_at <= after.started_at


def test_progress_shows_a_running_job_with_preview_and_interrupt_keeps_finished_images(client, live):
    with StepGate(live.services.queue, lambda request: request.prompt == "long", step=5, image=1) as gate:
        call = Background(post_txt2img, live.url, {"prompt": "long", "steps": 20, "batch_size": 3, "seed": 9, **SMALL})
        gate.wait()
        running = poll_progress(client, lambda b: b["state"]["job_no"] >= 1 and b["current_image"] is not None)
        assert client.post(f"{PREFIX}/interrupt").json() == {}
    state = running["state"]
    assert state["job_count"] == 3 and state["sampling_steps"] == 20 and 0 <= state["sampling_step"] <= 20
    assert state["job"] and len(state["job_timestamp"]) == 14 and not state["interrupted"]
    assert running["state"]["job_no"] == 1 and running["state"]["sampling_step"] == 5  # held at image 2, step 5
    assert 1 / 3 <= running["progress"] < 1 and running["eta_relative"] > 0
    assert running["textinfo"].startswith("Step ")
    preview = Image.open(io.BytesIO(base64.b64decode(running["current_image"])))
    assert preview.format == "PNG" and preview.size == (8, 8)  # the latent preview of a 64x64 image
    answer = call.get()
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["interrupted"] is True
    assert len(answer.json()["images"]) == 1 and info["all_seeds"] == [9]  # the image finished before the stop
    assert live.services.queue.status(info["job_id"]).state.value == "cancelled"
    assert poll_progress(client, lambda b: b["state"]["job"] == "")["progress"] == 0


def test_skip_drops_the_current_image_only(client, live):
    with StepGate(live.services.queue, lambda request: request.prompt == "skip me", step=2) as gate:
        call = Background(post_txt2img, live.url, {"prompt": "skip me", "steps": 20, "batch_size": 2, "seed": 20, **SMALL})
        gate.wait()
        assert client.post(f"{PREFIX}/skip").status_code == 200
    answer = call.get()
    info = json.loads(answer.json()["info"])
    assert info["skipped_images"] == 1 and info["all_seeds"] == [21] and len(answer.json()["images"]) == 1


def test_progress_and_interrupt_reach_a_job_started_from_the_page(client, live, page):
    with StepGate(live.services.queue, lambda request: request.prompt == "page job", step=1) as gate:
        job = page.submit(prompt="page job", steps=150, image_count=4, seed=3)
        gate.wait()
        running = poll_progress(client, lambda b: b["state"]["sampling_steps"] == 150 and b["state"]["sampling_step"] > 0)
        job_id = running["state"]["job"]
        assert running["state"]["job_count"] == 4
        assert client.post(f"{PREFIX}/interrupt").json() == {}
    answer, files = job.result(timeout=120)
    assert json.loads(answer)["status"] == "cancelled"
    info = live.services.queue.status(job_id)
    assert info.state.value == "cancelled" and info.request.prompt == "page job"
    assert len(files) == len(info.result.images) == 0  # stopped during its first image
