"""Full-size SD1.5 at 512x512 on this machine's CPU: plain diffusers vs the app, in fp32 and bf16.

Speed depends on the architecture, not on what the weights learned, so a random-weight SD1.5 of the
real size stands in for a real checkpoint. It is written once as a single-file checkpoint in the
original layout (bench/.cache/), then:

- plain: `StableDiffusionPipeline.from_single_file(...)` in the precision, Euler, CFG 7.5, 4 steps;
- app:   the same request through the queue and the pipeline manager (loader, optimizations, saving).

Printed per precision: seconds per image, seconds per UNet step (CFG batch), seconds per VAE decode,
and the ratio app/plain. Runs interleave plain and app and report the median.

    python bench/cpu_full_size.py [--steps 4] [--size 512] [--rounds 2] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import gc
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
import torch  # noqa: E402

from pipelines.config import AppConfig  # noqa: E402
from pipelines.loading.configs import bundled_config_dir, tokenizer_kwargs  # noqa: E402
from pipelines.services import build_services  # noqa: E402
from pipelines.types import Architecture, GenerationRequest, JobState  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
CHECKPOINT = CACHE / "models" / "checkpoints" / "sd15-random.safetensors"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def ensure_checkpoint() -> Path:
    if not CHECKPOINT.exists():
        from tests.support.ckpt_export import save_single_file
        from tests.support.full_size import full_sd15_pipeline

        print("writing a full-size random SD1.5 checkpoint (once) ...", flush=True)
        save_single_file(full_sd15_pipeline(dtype=torch.float16), CHECKPOINT)
    return CHECKPOINT


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def component_times(pipe, size: int) -> tuple[float, float]:
    """One UNet step with the CFG batch of 2, and one VAE decode, in the pipeline's own dtype/layout."""
    dtype = pipe.unet.dtype
    latents = torch.randn(2, 4, size // 8, size // 8, dtype=dtype)
    context = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, dtype=dtype)
    if getattr(pipe, "_easel_channels_last", False):
        latents = latents.to(memory_format=torch.channels_last)
    t = torch.tensor([500, 500])
    with torch.inference_mode():
        unet = timed(lambda: pipe.unet(latents, t, encoder_hidden_states=context))
        vae = timed(lambda: pipe.vae.decode(latents[:1] / pipe.vae.config.scaling_factor))
    return unet, vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    path = ensure_checkpoint()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    prompt, negative = "a lighthouse on a cliff at dusk, dramatic sky", "blurry"

    for name in args.precisions.split(","):
        dtype = DTYPES[name]
        out = Path(tempfile.mkdtemp(prefix="easel-bench-out-"))
        services = build_services(AppConfig(models_dir=path.parent.parent, output_dir=out, device="cpu", precision=name))
        request = GenerationRequest(
            model="sd15-random",
            prompt=prompt,
            negative_prompt=negative,
            steps=args.steps,
            width=args.size,
            height=args.size,
            sampler="Euler",
            scheduler="Automatic",
            cfg_scale=7.5,
            seed=1,
        )

        def app_image() -> None:
            info = services.queue.wait(services.queue.submit(request), timeout=7200)
            assert info.state is JobState.FINISHED, info.error

        load_app = timed(app_image)  # includes loading
        plain = diffusers.StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(bundled_config_dir(Architecture.SD1)),
            local_files_only=True,
            torch_dtype=dtype,
            **tokenizer_kwargs(Architecture.SD1),
        )
        plain.scheduler = diffusers.EulerDiscreteScheduler.from_config(plain.scheduler.config)
        plain.set_progress_bar_config(disable=True)

        def plain_image() -> None:
            with torch.inference_mode():
                plain(
                    prompt,
                    negative_prompt=negative,
                    num_inference_steps=args.steps,
                    width=args.size,
                    height=args.size,
                    guidance_scale=7.5,
                    generator=torch.Generator().manual_seed(1),
                )

        plain_image()  # warm-up
        plain_runs, app_runs = [], []
        for _ in range(args.rounds):
            plain_runs.append(timed(plain_image))
            app_runs.append(timed(app_image))
        [loaded] = services.cache.loaded()
        p_unet, p_vae = component_times(plain, args.size)
        a_unet, a_vae = component_times(loaded.pipe, args.size)
        p, a = statistics.median(plain_runs), statistics.median(app_runs)
        print(
            f"\n== {name}: SD1.5 full size, {args.size}x{args.size}, CFG, {args.steps} Euler steps (first app job incl. load: {load_app:.1f} s)"
        )
        print(f"{'':14}{'image s':>10}{'UNet step s':>13}{'VAE decode s':>14}")
        print(f"{'plain':14}{p:10.2f}{p_unet:13.2f}{p_vae:14.2f}")
        print(f"{'app':14}{a:10.2f}{a_unet:13.2f}{a_vae:14.2f}")
        print(f"{'ratio app/plain':14}{a / p:10.3f}{a_unet / p_unet:13.3f}{a_vae / p_vae:14.3f}")
        services.close()
        del plain, services, loaded
        gc.collect()


if __name__ == "__main__":
    main()
