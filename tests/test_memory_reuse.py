"""Memory reuse on the CPU (pipelines/speed/allocator.py): freed blocks come back without page faults, the
memory of an unloaded model goes back to the system, and images are the same bits either way.

Each case runs in a fresh process: the malloc settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.speed import allocator

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not allocator.available(), reason="the settings are glibc's")

FAULTS = """
import json, resource, sys, threading
import torch
from pipelines.speed.allocator import keep_freed_memory, release_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "on" else None

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def work(out):
    for _ in range(10):  # 64 MB, as the VAE's last blocks at 512x512; glibc settles after a few rounds
        torch.empty(16 * 2**20, dtype=torch.float32).fill_(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(16 * 2**20, dtype=torch.float32).fill_(1)
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    big = torch.ones(128 * 2**20)  # 512 MB, as a model's weights
    out["rss_loaded"] = rss_mb()
    del big
    out["rss_freed"] = rss_mb()
    release_freed_memory()
    out["rss_released"] = rss_mb()

out = {"kept": kept}
thread = threading.Thread(target=work, args=(out,))  # generation runs on the queue's worker thread
thread.start()
thread.join()
print(json.dumps(out))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults_and_an_unloaded_model_is_handed_back():
    default, kept = child(FAULTS, "off"), child(FAULTS, "on")
    assert default["kept"] is None and kept["kept"] == "freed memory reused"
    # five more 64 MB allocations: each faults its 16,384 pages in afresh by default
    assert default["faults"] > 5 * 16_384 * 0.9
    assert kept["faults"] < 0.02 * default["faults"]
    # freed memory stays with the process until released, then goes back to the system
    assert kept["rss_freed"] > kept["rss_loaded"] - 64
    assert kept["rss_released"] < kept["rss_loaded"] - 400
    assert default["rss_freed"] < default["rss_loaded"] - 400  # glibc's default: handed back at once


IMAGE = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
from tests.support.engine import SIZE, running_engine
from pipelines.types import GenerationRequest

models, out, reuse = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "on"
with running_engine(models, out, precision="bf16", reuse_memory=reuse) as services:
    digests = []
    for seed in (1, 2):  # the second image runs in the memory the first one freed
        job = services.queue.submit(GenerationRequest(model="tiny-sd15", prompt="a red fox", seed=seed, steps=3, **SIZE))
        info = services.queue.wait(job, timeout=600)
        assert info.result is not None, info.error
        digests.append(hashlib.sha256(np.asarray(info.result.images[0].image).tobytes()).hexdigest())
    print(json.dumps({"line": services.optimizations(), "digests": digests}))
"""


def test_images_are_the_same_bits_with_and_without_memory_reuse(tiny_models_dir: Path, tmp_path: Path):
    on = child(IMAGE, str(tiny_models_dir), str(tmp_path / "on"), "on")
    off = child(IMAGE, str(tiny_models_dir), str(tmp_path / "off"), "off")
    assert "freed memory reused" in on["line"]
    assert "freed memory handed back (--reuse-memory keeps it)" in off["line"]
    assert on["digests"] == off["digests"]
    assert on["digests"][0] != on["digests"][1]
