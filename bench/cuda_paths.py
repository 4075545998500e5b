"""The CUDA paths on a real GPU: precision choice, SDXL's fp16 VAE upcast, memory, and speed vs plain diffusers.

The test suite runs on the CPU; this script is what a session with a GPU runs to check what only a GPU shows.
It prints one line per check and a table, and exits non-zero when a check fails:

- `auto` picks bf16 where the GPU has it (fp16 otherwise), and the engine loads and runs in it;
- tiny SD1.5 / SDXL through the engine equal plain diffusers on the same GPU, in fp16 and bf16
  (same weights, same seed; both sides run the same CUDA kernels, so the comparison is exact or
  within one level on a few pixels where cuDNN picks its algorithms per call);
- SDXL in fp16 decodes through the upcast VAE (`force_upcast`) and gives no NaN/black image;
- peak CUDA memory of a full-size SD1.5 512x512 job, and the /memory route's CUDA figures;
- full-size random SD1.5 at 512x512, 20 Euler steps, CFG 7: seconds per image, app vs plain, alternated.

    python bench/cuda_paths.py [--rounds 3] [--steps 20]
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
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.config import AppConfig  # noqa: E402
from pipelines.devices import choose  # noqa: E402
from pipelines.services import build_services  # noqa: E402
from pipelines.types import GenerationRequest, JobState  # noqa: E402

FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILED.append(what)


def write_models(root: Path) -> None:
    from tests.support.ckpt_export import save_single_file
    from tests.support.full_size import full_sd15_pipeline
    from tests.support.tiny_models import tiny_sd15_pipeline, tiny_sdxl_pipeline

    (root / "checkpoints").mkdir(parents=True)
    save_single_file(tiny_sd15_pipeline(seed=0), root / "checkpoints" / "tiny-sd15.safetensors")
    save_single_file(tiny_sdxl_pipeline(seed=0), root / "checkpoints" / "tiny-sdxl.safetensors")
    save_single_file(full_sd15_pipeline(dtype=torch.float16), root / "checkpoints" / "sd15-full.safetensors")


def plain_image(pipe, seed: int, steps: int, size: int, cfg: float = 6.5) -> np.ndarray:
    """Plain diffusers given the engine's starting noise: the engine draws it on the CPU in fp32 and casts it (the
    same picture for a seed on any device and precision), where plain diffusers draws it in the pipeline's dtype."""
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(pipe.device, pipe.unet.dtype)
    out = plain(
        "a red fox in snow",
        negative_prompt="blurry",
        num_inference_steps=steps,
        guidance_scale=cfg,
        width=size,
        height=size,
        generator=generator,
        latents=latents,
    )
    return np.asarray(out.images[0])


def job(services, **fields):
    request = GenerationRequest(
        prompt="a red fox in snow", negative_prompt="blurry", sampler="Euler", scheduler="Automatic", seed=7, **fields
    )
    info = services.queue.wait(services.queue.submit(request), timeout=1800)
    assert info.state is JobState.FINISHED, info.error
    return info


def compare_tiny(models: Path, out: Path, precision: str) -> None:
    """The engine against plain diffusers built from the engine's own loaded components, same GPU, same dtype."""
    with_services = build_services(AppConfig(models_dir=models, output_dir=out / precision, device="cuda", precision=precision))
    try:
        for name in ("tiny-sd15", "tiny-sdxl"):
            info = job(with_services, model=name, steps=5, cfg_scale=6.5, width=64, height=64, save_images=False)
            ours = np.asarray(info.result.images[0].image)
            [loaded] = [m for m in with_services.cache.loaded() if m.name == name]
            theirs = plain_image(loaded.pipe, 7, 5, 64)
            differ = np.abs(ours.astype(int) - theirs.astype(int))
            check(
                differ.max() <= 1 and (differ > 0).mean() <= 0.01,
                f"{name} {precision}: engine vs plain diffusers, max diff {differ.max()}, {(differ > 0).mean():.2%} of values",
            )
            check(not np.isnan(ours.astype(float)).any() and ours.std() > 1, f"{name} {precision}: a picture, not NaN/flat")
            if name == "tiny-sdxl" and precision == "fp16":
                vae = loaded.pipe.vae
                check(bool(vae.config.force_upcast), f"tiny-sdxl fp16: VAE config says force_upcast ({vae.dtype} at rest)")
    finally:
        with_services.close()


def full_size_speed(models: Path, out: Path, rounds: int, steps: int) -> None:
    plan = choose("cuda", "auto")
    services = build_services(AppConfig(models_dir=models, output_dir=out / "full", device="cuda"))
    try:
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        job(services, model="sd15-full", steps=steps, cfg_scale=7.0, width=512, height=512)
        first = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30
        [loaded] = [m for m in services.cache.loaded() if m.name == "sd15-full"]
        plain = diffusers.StableDiffusionPipeline(**{**loaded.pipe.components})
        plain.scheduler = diffusers.EulerDiscreteScheduler.from_config(plain.scheduler.config)
        plain.set_progress_bar_config(disable=True)
        app_times, plain_times = [], []
        for _ in range(rounds):
            torch.cuda.synchronize()
            t = time.perf_counter()
            job(services, model="sd15-full", steps=steps, cfg_scale=7.0, width=512, height=512)
            torch.cuda.synchronize()
            app_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            plain(
                "a red fox in snow",
                negative_prompt="blurry",
                num_inference_steps=steps,
                guidance_scale=7.0,
                width=512,
                height=512,
                generator=torch.Generator().manual_seed(7),
            )
            torch.cuda.synchronize()
            plain_times.append(time.perf_counter() - t)
        app, ref = statistics.median(app_times), statistics.median(plain_times)
        print(f"\nfull-size SD1.5 512x512, {steps} Euler steps, CFG 7, {plan.label} ({plan.reason}), median of {rounds}:")
        print(f"  first job incl. load {first:.2f} s; peak CUDA memory {peak:.2f} GiB")
        print(f"  plain diffusers {ref:.3f} s/image, app {app:.3f} s/image, app/plain {app / ref:.3f}")
        try:  # the API's /memory route (its package needs fastapi, which a bare GPU image may lack)
            from ui.api.catalog import memory_stats
        except ImportError as exc:
            print(f"  /memory route not checked: {exc}")
        else:
            _ram, cuda = memory_stats()
            check("system" in cuda and cuda["system"]["total"] > 0, f"/memory route reports CUDA figures: {str(cuda)[:160]}")
    finally:
        services.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    diffusers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, diffusers {diffusers.__version__}")
    plan = choose("auto", "auto")
    check(plan.device.type == "cuda", f"auto picks the GPU: {plan.label} ({plan.reason})")
    check(
        plan.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16),
        "auto precision: bf16 where supported",
    )
    with tempfile.TemporaryDirectory() as tmp:
        models, out = Path(tmp) / "models", Path(tmp) / "out"
        write_models(models)
        for precision in ("fp16", "bf16"):
            compare_tiny(models, out, precision)
        full_size_speed(models, out, args.rounds, args.steps)
    print("\nall checks passed" if not FAILED else f"\n{len(FAILED)} check(s) failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
