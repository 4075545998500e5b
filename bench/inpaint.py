"""What "only masked" saves: an inpaint of a small region of a 1024x1024 picture, worked on as the whole picture
against only the masked region with its padding (A1111's "only masked", Fooocus's respective field).

Full-size SD 1.5 with random weights (speed and memory depend on the architecture, not on what the weights
learned), written once as a single-file checkpoint in bench/.cache/ (shared with bench/cpu_full_size.py). The
mask is a 128x128 square in the middle of the picture:

- whole picture: the 1024x1024 picture is encoded, denoised and decoded at 1024x1024;
- only masked:   the square with 32 pixels of context (192x192) is worked at SD 1.5's native 512x512 and pasted back.

Each runs through the engine (queue, manager, the inpaint pipeline) in a fresh process, after a small job that
loads the model; peak memory is the process's peak resident set size during the inpaint (Linux's VmHWM, reset
just before it through /proc/self/clear_refs; torch's allocations count) minus its size when it starts. Both
results keep every pixel outside the mask (checked).

    python bench/inpaint.py [--steps 4] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINT = ROOT / "bench" / ".cache" / "models" / "checkpoints" / "sd15-random.safetensors"
SIZE, SQUARE, PADDING = 1024, 128, 32


def memory_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in KiB."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def ensure_checkpoint() -> None:
    if not CHECKPOINT.exists():
        import torch

        from tests.support.ckpt_export import save_single_file
        from tests.support.full_size import full_sd15_pipeline

        print("writing a full-size random SD1.5 checkpoint (once) ...", flush=True)
        save_single_file(full_sd15_pipeline(dtype=torch.float16), CHECKPOINT)


def one_inpaint(only_masked: bool, steps: int, precision: str) -> None:
    """Child process: one inpaint through the engine; prints JSON with time, peak memory and the size worked at."""
    import numpy as np
    from PIL import Image

    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest, ImageInput, JobState

    out = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    services = build_services(AppConfig(models_dir=CHECKPOINT.parent.parent, output_dir=out, device="cpu", precision=precision))
    try:
        common = dict(model="sd15-random", prompt="a wooden door", steps=steps, seed=1, save_images=False, sampler="Euler")
        warm = services.queue.wait(services.queue.submit(GenerationRequest(**common, width=64, height=64)), timeout=3600)
        assert warm.state is JobState.FINISHED, warm.error
        picture = Image.effect_noise((SIZE, SIZE), 60).convert("RGB")
        mask = Image.new("L", (SIZE, SIZE), 0)
        low = (SIZE - SQUARE) // 2
        mask.paste(255, (low, low, low + SQUARE, low + SQUARE))
        part = ImageInput(
            services.inputs.put_image(picture).sha256,
            mode="inpaint",
            mask=services.inputs.put_mask_image(mask).sha256,
            only_masked=only_masked,
            only_masked_padding=PADDING,
            mask_blur_x=0,
            mask_blur_y=0,
        )
        worked: dict[str, tuple[int, ...]] = {}

        def note_size(_module, args) -> None:
            worked.setdefault("latents", tuple(args[0].shape[-2:]))

        unet = services.cache.loaded()[0].pipe.unet
        hook = unet.register_forward_pre_hook(note_size)
        Path("/proc/self/clear_refs").write_text("5")  # the peak so far (loading the model) is forgotten
        before = memory_kib("VmRSS")
        start = time.perf_counter()
        info = services.queue.wait(services.queue.submit(GenerationRequest(**common, input=part)), timeout=7200)
        took = time.perf_counter() - start
        peak = memory_kib("VmHWM")
        hook.remove()
        assert info.state is JobState.FINISHED, info.error
        result, keep = np.asarray(info.result.images[0].image), np.asarray(mask) == 0
        assert np.array_equal(result[keep], np.asarray(picture)[keep])
        h, w = worked["latents"]
        dtype = str(unet.dtype).removeprefix("torch.")
        print(json.dumps({"seconds": took, "peak_mib": (peak - before) / 1024, "worked": f"{w * 8}x{h * 8}", "dtype": dtype}))
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--child", choices=["whole", "masked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_inpaint(args.child == "masked", args.steps, args.precision)
        return
    ensure_checkpoint()
    results = {}
    for case in ("masked", "whole"):
        command = [sys.executable, __file__, "--child", case, "--steps", str(args.steps), "--precision", args.precision]
        child = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if child.returncode:
            sys.exit(f"{case} failed:\n{child.stderr[-3000:]}")
        results[case] = json.loads(child.stdout.strip().splitlines()[-1])
    masked, whole = results["masked"], results["whole"]
    print(
        f"Inpaint of a {SQUARE}x{SQUARE} square in a {SIZE}x{SIZE} picture, full-size SD 1.5, {args.steps} Euler steps, CFG, "
        f"CPU ({os.cpu_count()} cores), {whole['dtype']} ({args.precision}); peak RSS above the loaded model:"
    )
    print(f"  whole picture (worked at {whole['worked']}): {whole['seconds']:7.1f} s, {whole['peak_mib']:7.0f} MiB")
    print(f"  only masked   (worked at {masked['worked']}): {masked['seconds']:7.1f} s, {masked['peak_mib']:7.0f} MiB")
    print(
        f"  ratio only-masked/whole: time {masked['seconds'] / whole['seconds']:.2f}, "
        f"memory {masked['peak_mib'] / max(whole['peak_mib'], 1):.2f}"
    )


if __name__ == "__main__":
    main()
