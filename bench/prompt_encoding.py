"""Prompt encoding time: CompelEncoder against the pipeline's own `encode_prompt` (plain diffusers).

Full-size text encoders (CLIP-L for SD1.5; CLIP-L + OpenCLIP bigG for SDXL) with random weights, since
time depends only on the architecture. The two encoders run alternately and each case prints the median
times, the median of the per-round ratios ours / diffusers (meaningful even on a busy machine), and how
many text-encoder passes each made (the part of the cost no machine changes). Diffusers cuts long prompts at 75 tokens and reads brackets as text, so for those rows
the ratio is the price of encoding every chunk and of weighting, not of doing the same work slower.

Run: `python bench/prompt_encoding.py [--sdxl] [--runs N] [--dtype fp32|bf16]`
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.loading.loader import LoadedModel  # noqa: E402
from pipelines.prompts.compel_encoder import CompelEncoder  # noqa: E402
from pipelines.prompts.conditioning import PlainEncoder  # noqa: E402
from pipelines.types import Architecture, ModelFormat, ModelKind, ModelRecord  # noqa: E402
from tests.support.full_size import bundled_configs  # noqa: E402
from tests.support.random_models import build_model  # noqa: E402
from tests.support.tiny_models import tiny_sd15_pipeline, tiny_sdxl_pipeline  # noqa: E402

PLAIN = "a red fox sitting in deep snow at dawn, soft light, detailed fur, sharp focus"
CASES = {
    "plain prompt": (PLAIN, "blurry, lowres"),
    "A1111 weights": ("a (red fox:1.3) sitting in [deep] snow at dawn, ((soft light)), detailed fur", "(blurry:1.4), lowres"),
    "150-token prompt": (", ".join([PLAIN] * 8), "blurry, lowres"),
}


def model_with_full_text_encoders(arch: Architecture, dtype: torch.dtype) -> LoadedModel:
    """A pipeline whose text encoders are full size (the UNet/VAE are tiny: encoding never touches them)."""
    pipe = tiny_sd15_pipeline() if arch is Architecture.SD1 else tiny_sdxl_pipeline()
    configs = bundled_configs(arch)
    names = ["text_encoder"] + (["text_encoder_2"] if arch is Architecture.SDXL else [])
    pipe = type(pipe)(**{**pipe.components, **{n: build_model(n, configs[n], 0, dtype, "cpu") for n in names}})
    record = ModelRecord("bench", ModelKind.CHECKPOINT, arch, ModelFormat.DIFFUSERS, None)
    return LoadedModel(record, arch, pipe, "0" * 64, 0)


def encoder_passes(model: LoadedModel, fn) -> int:
    """How many times `fn` runs a text encoder: the machine-independent part of the cost."""
    calls: list[int] = []
    encoders = [model.pipe.text_encoder] + ([model.pipe.text_encoder_2] if model.architecture is Architecture.SDXL else [])
    hooks = [e.register_forward_hook(lambda *args: calls.append(1)) for e in encoders]
    try:
        fn()
    finally:
        for hook in hooks:
            hook.remove()
    return len(calls)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(theirs, ours, runs: int) -> tuple[float, float, float]:
    """Median seconds of each and the median ratio, from rounds that run both back to back."""
    theirs(), ours()  # warm-up
    pairs = [(timed(theirs), timed(ours)) for _ in range(runs)]
    return (
        statistics.median(t for t, _ in pairs),
        statistics.median(o for _, o in pairs),
        statistics.median(o / t for t, o in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl", action="store_true", help="also SDXL (builds the 695 M-parameter bigG encoder)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    torch.manual_seed(0)
    archs = [Architecture.SD1] + ([Architecture.SDXL] if args.sdxl else [])
    logging.disable(logging.WARNING)  # diffusers' truncation warnings would bury the table
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, median of {args.runs}")
    print(f"{'model':6} {'case':18} {'diffusers ms':>13} {'ours ms':>9} {'ratio':>6} {'encoder passes':>15}", flush=True)
    for arch in archs:
        model = model_with_full_text_encoders(arch, dtype)
        plain, ours = PlainEncoder(), CompelEncoder()
        for case, (prompt, negative) in CASES.items():
            run_theirs = lambda: plain.encode(model, prompt, negative, 1, True)  # noqa: E731
            run_ours = lambda: ours.encode(model, prompt, negative, 1, True)  # noqa: E731
            with torch.inference_mode():
                theirs, mine, ratio = compare(run_theirs, run_ours, args.runs)
                passes = f"{encoder_passes(model, run_theirs)} vs {encoder_passes(model, run_ours)}"
            print(f"{arch.label:6} {case:18} {theirs * 1000:13.1f} {mine * 1000:9.1f} {ratio:6.2f} {passes:>15}", flush=True)


if __name__ == "__main__":
    main()
