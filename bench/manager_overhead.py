"""What the pipeline manager costs on top of plain diffusers: seconds per step and the ratio.

A tiny model and many steps make the per-step work small, so any overhead of ours (queue, events,
step callback with previews, saving with metadata, history) shows up instead of hiding behind the UNet.
Both paths run the same loaded pipeline, sampler, size and seed in this process, interleaved, and the
median of several rounds is reported.

    python bench/manager_overhead.py [--steps 100] [--rounds 5] [--size 64] [--arch sd1|sdxl] [--prompt TEXT]

With a prompt that edits itself, e.g. --prompt "a [lighthouse|castle] on a cliff" (a new prompt every step),
the ratio shows what switching the conditioning costs; plain diffusers reads the brackets as text and does
the same work per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffusers  # noqa: E402
import torch  # noqa: E402

from pipelines.config import AppConfig  # noqa: E402
from pipelines.services import build_services  # noqa: E402
from pipelines.types import GenerationRequest, JobState  # noqa: E402
from tests.support.ckpt_export import save_single_file  # noqa: E402
from tests.support.tiny_models import tiny_sd15_pipeline, tiny_sdxl_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--arch", choices=["sd1", "sdxl"], default="sd1")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk")
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()

    work = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    build = tiny_sd15_pipeline if args.arch == "sd1" else tiny_sdxl_pipeline
    save_single_file(build(), work / "models" / "checkpoints" / "tiny.safetensors")
    services = build_services(
        AppConfig(models_dir=work / "models", output_dir=work / "out", device="cpu", precision=args.precision)
    )
    request = GenerationRequest(
        model="tiny",
        prompt=args.prompt,
        negative_prompt="blurry",
        steps=args.steps,
        width=args.size,
        height=args.size,
        sampler="Euler",
        scheduler="Automatic",
        seed=1,
        cfg_scale=7,
    )

    def manager_run() -> float:
        start = time.perf_counter()
        info = services.queue.wait(services.queue.submit(request), timeout=3600)
        assert info.state is JobState.FINISHED, info.error
        return time.perf_counter() - start

    manager_run()  # loads the model, warms caches
    [loaded] = services.cache.loaded()
    plain = type(loaded.pipe)(
        **{**loaded.pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(loaded.scheduler_config)}
    )
    plain.set_progress_bar_config(disable=True)

    def plain_run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            plain(
                request.prompt,
                negative_prompt=request.negative_prompt,
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
                guidance_scale=7,
                generator=torch.Generator().manual_seed(1),
            )
        return time.perf_counter() - start

    plain_run()
    ours, theirs = [], []
    for _ in range(args.rounds):
        theirs.append(plain_run())
        ours.append(manager_run())
    services.close()
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"tiny {args.arch} {args.precision}, {args.size}x{args.size}, {args.steps} steps, median of {args.rounds} rounds")
    print(f"plain diffusers : {t / args.steps * 1000:8.2f} ms/step  ({t:.2f} s per image)")
    print(f"pipeline manager: {o / args.steps * 1000:8.2f} ms/step  ({o:.2f} s per image, queue + events + save)")
    print(f"ratio manager/plain: {o / t:.3f}  (overhead {100 * (o / t - 1):+.1f}%)")


if __name__ == "__main__":
    main()
