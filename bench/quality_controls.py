"""What Fooocus's sampling controls and its prompt expansion cost: per denoising step, and per continuation.

1. Steps: a full-size random-weight SDXL pipeline (the real 2.6 B UNet; speed does not depend on what the
   weights learned) denoises with CFG, plain and with sharpness + adaptive CFG + ADM hooked in
   (pipelines/generation/guidance.py), interleaved; the median step time of each and the ratio are
   printed, and beside them the hooks' own work per step, timed alone on tensors of the same size.
2. Expansion: a GPT-2 of GPT-2 small's size (124 M parameters, random weights, written once to
   bench/.cache/) continues a short prompt to its 75-token CLIP chunk, as the engine does (CPU, float32).

    python bench/quality_controls.py [--size 1024] [--steps 4] [--rounds 2] [--dtype bf16|fp32|fp16]
                                     [--device cpu|cuda] [--skip-steps] [--skip-expansion]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipelines.generation.guidance import GuidedPrediction, SizeConditioning, applied  # noqa: E402
from pipelines.generation.quality import QualityControls  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FOOOCUS = QualityControls(sharpness=2.0, adaptive_cfg=7.0, adm_positive=1.5, adm_negative=0.8, adm_end=0.3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(pipe, size: int, steps: int, controls: QualityControls | None, device: torch.device) -> list[float]:
    """Seconds of each denoising step (callback to callback), CFG 9 so adaptive CFG acts."""
    marks: list[float] = []

    def mark(_pipe, _i, _t, _tensors):
        sync(device)
        marks.append(time.perf_counter())
        return {}

    def call():
        sync(device)
        marks.append(time.perf_counter())
        pipe(
            prompt_embeds=embeds[0],
            negative_prompt_embeds=embeds[1],
            pooled_prompt_embeds=embeds[2],
            negative_pooled_prompt_embeds=embeds[3],
            num_inference_steps=steps,
            guidance_scale=9.0,
            width=size,
            height=size,
            generator=torch.Generator().manual_seed(1),
            output_type="latent",
            callback_on_step_end=mark,
        )

    with torch.inference_mode():
        embeds = pipe.encode_prompt("a lighthouse on a cliff at dusk", negative_prompt="blurry", device=device)
        if controls is None:
            call()
        else:
            with applied(controls, [(pipe, pipe.unet)]):
                call()
    return [b - a for a, b in zip(marks, marks[1:])]


def hook_work(pipe, size: int, device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Seconds the two hooks take for one step, alone: the guided prediction and the ADM numbers."""
    latent = size // 8
    pred = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    sample = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    pipe.scheduler.set_timesteps(10)
    guided, adm = GuidedPrediction(pipe, FOOOCUS), SizeConditioning(pipe, FOOOCUS)
    ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=dtype)
    t = torch.tensor(899.0, device=device)
    runs = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            guided(pipe.unet, (sample, t), {}, (pred,))
            adm(pipe.unet, (sample, t), {"added_cond_kwargs": {"time_ids": ids}})
            sync(device)
            runs.append(time.perf_counter() - start)
    return statistics.median(runs[1:])


def bench_steps(args) -> None:
    import diffusers

    from tests.support.full_size import full_sdxl_pipeline

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    diffusers.utils.logging.set_verbosity_error()
    print(f"building a full-size random SDXL pipeline in {args.dtype} on {device} ...", flush=True)
    pipe = full_sdxl_pipeline(dtype=dtype, device=device)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    step_times(pipe, args.size, 1, None, device)  # warm-up
    plain, tuned = [], []
    for _ in range(args.rounds):
        plain += step_times(pipe, args.size, args.steps, None, device)
        tuned += step_times(pipe, args.size, args.steps, FOOOCUS, device)
    p, t = statistics.median(plain), statistics.median(tuned)
    work = hook_work(pipe, args.size, device, dtype)
    print(f"\n== SDXL full size, {args.size}x{args.size}, {args.dtype}, CFG 9, Euler, {len(plain)} steps each")
    print(f"plain step:                          {p:9.3f} s")
    print(f"sharpness + adaptive CFG + ADM step: {t:9.3f} s   ratio {t / p:.3f}")
    print(f"the hooks' own work per step:        {work * 1000:9.1f} ms  ({100 * work / p:.2f} % of a plain step)")


def expansion_folder() -> Path:
    """GPT-2 small's shape (n_embd 768, 12 layers, 50257 tokens) with random weights and the tests' BPE files."""
    folder = CACHE / "prompt_expansion" / "gpt2-size-random"
    if not (folder / "model.safetensors").exists():
        from transformers import GPT2Config, GPT2LMHeadModel

        from tests.support.expansion_model import write_tiny_expansion

        write_tiny_expansion(folder)  # tokenizer files (and a tiny model, replaced below)
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024)).save_pretrained(folder)
    return folder


def bench_expansion(args) -> None:
    from pipelines.loading.registry import ModelRegistry
    from pipelines.prompts.expansion import PromptExpander

    folder = expansion_folder()
    registry = ModelRegistry(folder.parent.parent, CACHE / "registry")
    registry.refresh()
    expander = PromptExpander(registry)
    params = sum(p.numel() for p in expander.load(expander.find(folder.name)).model.parameters())
    prompt = "a lighthouse"
    expander.expand(folder.name, prompt, 0)  # warm-up (loading, the CLIP tokenizer)
    runs, tokens = [], []
    for seed in range(1, args.rounds + 3):
        start = time.perf_counter()
        words = expander.expand(folder.name, prompt, seed)
        runs.append(time.perf_counter() - start)
        tokens.append(expander.clip_tokens(f"{prompt}, {words}") - expander.clip_tokens(prompt))
    print(f"\n== prompt expansion: GPT-2 small's size ({params / 1e6:.0f} M parameters, random), CPU float32")
    print(f"continuation of {prompt!r} to its 75-token chunk: {statistics.median(runs):.2f} s (median of {len(runs)};")
    print(f"  CLIP tokens added: {statistics.median(tokens):.0f}; {1000 * statistics.median(runs) / 75:.0f} ms per chunk token)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-expansion", action="store_true")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    if not args.skip_expansion:
        bench_expansion(args)
    if not args.skip_steps:
        bench_steps(args)


if __name__ == "__main__":
    main()
