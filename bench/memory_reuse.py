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
import sys
import tempfile
from pathlib import Path

from cpu_full_size import MODELS, Asked, cpu_name, faithful_request, kernel_time, timed


def engine_child(reuse: bool) -> None:
    """One side: the engine built as the app builds it, an image per `image` line on stdin."""
    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest, JobState

    cfg = AppConfig(models_dir=MODELS, output_dir=Path(tempfile.mkdtemp()), device="cpu", reuse_memory=reuse)
    services = build_services(cfg)

    def image() -> dict:
        def job():
            info = services.queue.wait(services.queue.submit(GenerationRequest(**faithful_request())), timeout=3600)
            assert info.state is JobState.FINISHED, info.error

        before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = timed(job)
        return {"seconds": seconds, **kernel_time(before)}

    image()  # the model load and the first image's one-time costs
    print(json.dumps({"line": services.optimizations()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "image":
            break
        print(json.dumps(image()), flush=True)
    services.close()


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
    print(f"CPU: {cpu_name()}; load average at start {os.getloadavg()[0]:.2f}")
    sides = {  # loaded one after the other, then alternated
        name: Asked([sys.executable, __file__, "--engine-child", flag]) for name, flag in (("reuse", "on"), ("hand back", "off"))
    }
    for name, side in sides.items():
        print(f"  {name}: {side.ready['line']}")
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for turn in range(args.rounds):
        order = list(sides) if turn % 2 == 0 else list(reversed(sides))  # neither side always goes first
        for name in order:
            runs[name].append(sides[name].ask("image"))
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
