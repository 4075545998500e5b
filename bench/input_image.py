"""What image input costs: Vary at 0.5 against a text-to-image of the same size, and the peak memory of
Upscale (2x) from 1024x1024 with and without tiles.

1. Vary (Subtle) runs denoise x steps of the schedule, so it should take about half the UNet calls of a
   text-to-image job of the same size and steps, plus one VAE encode. Both run through the engine on a
   tiny SD 1.5 model (the same loaded pipeline, interleaved, median of several rounds); UNet calls are
   counted with a hook on its forward.
2. Upscale (2x) of a 1024x1024 image with a Real-ESRGAN Compact network of realesr-general-x4v3's size
   (64 features, 32 convolutions, 4x; random weights in its published layout), through the engine's
   upscaler library: in 512-pixel tiles (the default) and in one piece. Each runs in a fresh process;
   peak memory is that process's peak resident set size (getrusage ru_maxrss, so torch's allocations
   count, which tracemalloc would not see) minus its size just before the upscale.

    python bench/input_image.py [--steps 20] [--size 256] [--rounds 3] [--skip-upscale]
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


def vary_against_txt2img(steps: int, size: int, rounds: int) -> None:
    import diffusers
    from PIL import Image

    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest, ImageInput, JobState
    from tests.support.ckpt_export import save_single_file
    from tests.support.tiny_models import tiny_sd15_pipeline

    diffusers.utils.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    save_single_file(tiny_sd15_pipeline(), work / "models" / "checkpoints" / "tiny.safetensors")
    services = build_services(AppConfig(models_dir=work / "models", output_dir=work / "out", device="cpu", precision="fp32"))
    try:
        stored = services.inputs.put_image(Image.effect_noise((size, size), 60).convert("RGB"))
        common = dict(
            model="tiny",
            prompt="a harbour at dusk",
            steps=steps,
            width=size,
            height=size,
            seed=1,
            save_images=False,
            sampler="Euler",
            scheduler="Automatic",
        )
        requests = {
            "txt2img": GenerationRequest(**common),
            "vary 0.5": GenerationRequest(**common, input=ImageInput(stored.sha256, mode="vary_subtle")),
        }
        calls = {"n": 0}
        seconds: dict[str, list[float]] = {name: [] for name in requests}
        unet_calls: dict[str, int] = {}
        hook = None
        for round_ in range(rounds + 1):  # the first round loads and warms up, it is not counted
            for name, request in requests.items():
                calls["n"] = 0
                start = time.perf_counter()
                info = services.queue.wait(services.queue.submit(request), timeout=3600)
                took = time.perf_counter() - start
                assert info.state is JobState.FINISHED, info.error
                if hook is None:
                    unet = services.cache.loaded()[0].pipe.unet
                    hook = unet.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
                    continue
                if round_:
                    seconds[name].append(took)
                    unet_calls[name] = calls["n"]
        t, v = statistics.median(seconds["txt2img"]), statistics.median(seconds["vary 0.5"])
        print(f"Vary at 0.5 vs txt2img, tiny SD 1.5, {size}x{size}, {steps} steps, CFG on (one UNet call per step):")
        print(f"  txt2img : {unet_calls['txt2img']:3d} UNet calls, {t:.3f} s")
        print(f"  vary 0.5: {unet_calls['vary 0.5']:3d} UNet calls, {v:.3f} s (with the VAE encode)")
        print(f"  ratio vary/txt2img: UNet calls {unet_calls['vary 0.5'] / unet_calls['txt2img']:.2f}, time {v / t:.2f}")
    finally:
        services.close()


def upscale_once(tiled: bool) -> None:
    """Child process: one Upscale (2x) of a 1024x1024 image; prints JSON with the peak memory and time."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from pipelines.generation.upscale import UpscalerLibrary
    from pipelines.loading.registry import ModelRegistry
    from pipelines.loading.upscalers import UpscalerLoader
    from tests.support.upscaler_files import compact_state

    work = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    folder = work / "models" / "upscale_models"
    folder.mkdir(parents=True)
    save_file(compact_state(scale=4, nf=64, num_conv=32), str(folder / "x4v3.safetensors"))
    registry = ModelRegistry(work / "models", work / "cache")
    registry.refresh()
    library = UpscalerLibrary(registry, UpscalerLoader(torch.device("cpu")))
    if not tiled:
        library.tile = 1 << 20
    image = Image.effect_noise((1024, 1024), 60).convert("RGB")
    library.loader.get(library.resolve("x4v3").record)  # loaded before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = library.upscale(image, 2048, 2048, "x4v3")
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert out.size == (2048, 2048)
    print(json.dumps({"peak_mib": (peak - before) / 1024, "seconds": took}))


def upscale_memory() -> None:
    results = {}
    for tiled in (True, False):
        child = subprocess.run(
            [sys.executable, __file__, "--upscale-child", "tiled" if tiled else "whole"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        results[tiled] = json.loads(child.stdout.strip().splitlines()[-1])
    tiled, whole = results[True], results[False]
    print("Upscale (2x) of 1024x1024, Real-ESRGAN Compact 4x (64 features, 32 convs), CPU fp32, peak RSS above the loaded model:")
    print(f"  tiles of 512: {tiled['peak_mib']:7.0f} MiB, {tiled['seconds']:.1f} s")
    print(f"  one piece   : {whole['peak_mib']:7.0f} MiB, {whole['seconds']:.1f} s")
    print(
        f"  ratio tiled/whole: memory {tiled['peak_mib'] / whole['peak_mib']:.2f}, time {tiled['seconds'] / whole['seconds']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-upscale", action="store_true")
    parser.add_argument("--upscale-child", choices=["tiled", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upscale_child:
        upscale_once(args.upscale_child == "tiled")
        return
    vary_against_txt2img(args.steps, args.size, args.rounds)
    if not args.skip_upscale:
        upscale_memory()


if __name__ == "__main__":
    main()
