"""The effect of reusing freed memory (pipelines/speed/allocator.py, on by default on a CPU): the app's engine
with and without `--reuse-memory`, each in a process of its own, asked for the same image in turn.

The malloc settings are process-wide and cannot be undone, so the two sides are two processes; asking them
alternately puts the machine's slow and fast spells on both. Full-size SD1.5 with random weights (the file
bench/cpu_full_size.py writes), 512x512, 4 Euler steps, CFG 7.5, through the job queue (the worker thread).
Reported per side: median and best seconds, page faults, kernel and user CPU seconds per image.

    python bench/memory_reuse.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ROOT / "bench" / ".cache" / "models"
REQUEST = dict(
    model="sd15-random",
    prompt="a lighthouse on a cliff at dusk, dramatic sky",
    negative_prompt="blurry",
    steps=4,
    width=512,
    height=512,
    sampler="Euler",
    scheduler="Automatic",
    cfg_scale=7.5,
    seed=1,
    save_images=False,
)


def engine_child(reuse: bool) -> None:
    """One side: the engine built as the app builds it, an image per `image` line on stdin."""
    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest, JobState

    cfg = AppConfig(models_dir=MODELS, output_dir=Path(tempfile.mkdtemp()), device="cpu", reuse_memory=reuse)
    services = build_services(cfg)

    def image() -> dict:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        info = services.queue.wait(services.queue.submit(GenerationRequest(**REQUEST)), timeout=3600)
        assert info.state is JobState.FINISHED, info.error
        seconds, now = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        return {
            "seconds": seconds,
            "faults": now.ru_minflt - before.ru_minflt,
            "sys": now.ru_stime - before.ru_stime,
            "user": now.ru_utime - before.ru_utime,
        }

    image()  # the model load and the first image's one-time costs
    print(json.dumps({"line": services.optimizations()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "image":
            break
        print(json.dumps(image()), flush=True)
    services.close()


class Side:
    def __init__(self, reuse: bool):
        command = [sys.executable, __file__, "--engine-child", "on" if reuse else "off"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.line = self._answer()["line"]

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"an engine process ended (exit code {self.process.wait()})")
        return json.loads(line)

    def image(self) -> dict:
        self.process.stdin.write("image\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--engine-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args.engine_child == "on")
        return
    if not (MODELS / "checkpoints" / "sd15-random.safetensors").exists():
        sys.exit("run bench/cpu_full_size.py once first: it writes the full-size random SD1.5 checkpoint")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), "?")
    print(f"CPU: {cpu}; load average at start {os.getloadavg()[0]:.2f}")
    sides = {"reuse": Side(True), "hand back": Side(False)}  # loaded one after the other, then alternated
    for name, side in sides.items():
        print(f"  {name}: {side.line}")
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for turn in range(args.rounds):
        order = list(sides) if turn % 2 == 0 else list(reversed(sides))  # neither side always goes first
        for name in order:
            runs[name].append(sides[name].image())
    print(f"\nwhole image, {args.rounds} rounds alternated (load average now {os.getloadavg()[0]:.2f}):")
    for name, rows in runs.items():
        med = {m: statistics.median(r[m] for r in rows) for m in ("seconds", "faults", "sys", "user")}
        print(
            f"  {name:<10} median {med['seconds']:.2f} s, best {min(r['seconds'] for r in rows):.2f} s; page faults "
            f"{med['faults']:,.0f}, kernel {med['sys']:.2f} s, user {med['user']:.2f} s"
        )
    ratio = statistics.median(r["seconds"] for r in runs["reuse"]) / statistics.median(r["seconds"] for r in runs["hand back"])
    paired = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(runs["reuse"], runs["hand back"]))
    print(f"  reuse / hand back: {ratio:.3f} (medians), {paired:.3f} (median of the rounds' ratios)")
    print("  rounds (s): " + "; ".join(f"{k} " + ", ".join(f"{r['seconds']:.2f}" for r in v) for k, v in runs.items()))
    for side in sides.values():
        side.close()


if __name__ == "__main__":
    main()
