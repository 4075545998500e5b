"""Where one full-size SD1.5 UNet step (512x512, CFG batch 2) spends its time on this CPU, by kind of work.

For each kind (convolutions, linear layers, attention, everything else) it reports the time of the step's
operators (torch profiler, best of --rounds), the work (FLOP counter; attention's own count, which the
counter leaves out: 4·batch·heads·tokens²·head width per call), and the rate as a share of this machine's
best matrix-product rate measured in the same run. It bounds what any faithful speed-up can reach: kinds already
near the peak leave little, and a kind far below it says where to look.

The UNet is the app's: the bundled SD1.5 config with random weights (speed does not depend on what weights
learned), loaded and laid out as the app does it on a CPU (pipelines/loading/optimize.py), in the precision
the app picks here.

    python bench/unet_step_breakdown.py [--rounds 3] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pipelines.devices import choose  # noqa: E402
from pipelines.loading.configs import bundled_config_dir  # noqa: E402
from pipelines.loading.optimize import optimize_module  # noqa: E402
from pipelines.types import Architecture  # noqa: E402

KINDS = {  # profiler operator -> kind of work
    "aten::mkldnn_convolution": "convolution",
    "aten::convolution_overrideable": "convolution",
    "aten::_convolution": None,  # a wrapper: its time is its callee's
    "aten::addmm": "linear",
    "aten::mm": "linear",
    "aten::bmm": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
}
FLOP_KINDS = {"convolution": "convolution", "addmm": "linear", "mm": "linear", "bmm": "linear"}


def matmul_peak(dtype: torch.dtype) -> float:
    """The best rate of a few large matrix products, square and shaped like the UNet's linear layers (oneDNN
    runs a linear layer's product faster than a plain square one on some CPUs): this machine's reachable peak."""
    shapes = ((2048, 2048, 2048), (3072, 3072, 3072), (8192, 320, 1280), (2048, 640, 2560))
    rates = []
    for m, k, n in shapes:
        a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        torch.nn.functional.linear(a, w)
        best = min(_timed(lambda: [torch.nn.functional.linear(a, w) for _ in range(3)]) for _ in range(3)) / 3
        rates.append(2 * m * k * n / best / 1e12)
    return max(rates)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def attention_flops(unet: torch.nn.Module, inputs: dict) -> float:
    """4·B·heads·Lq·Lk·d for every attention call (QKᵀ and PV), counted with forward hooks on the processors."""
    total = 0.0

    def count(module, args, kwargs, output):
        nonlocal total
        batch, tokens, width = args[0].shape  # the UNet's transformer blocks: (batch, tokens, channels)
        context = kwargs.get("encoder_hidden_states")
        keys = context.shape[1] if context is not None else tokens
        total += 4 * batch * tokens * keys * width  # heads x head width = width

    from diffusers.models.attention_processor import Attention

    handles = [m.register_forward_hook(count, with_kwargs=True) for m in unet.modules() if isinstance(m, Attention)]
    try:
        with torch.inference_mode():
            unet(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    plan = choose("cpu", "auto")
    config = UNet2DConditionModel.load_config(str(bundled_config_dir(Architecture.SD1) / "unet"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config).to(plan.dtype).eval()
    optimize_module("unet", unet, torch.device("cpu"))
    side = args.size // 8
    inputs = dict(
        sample=torch.randn(2, 4, side, side).to(plan.dtype).contiguous(memory_format=torch.channels_last),
        timestep=torch.tensor(500.0),
        encoder_hidden_states=torch.randn(2, 77, config["cross_attention_dim"]).to(plan.dtype),
        return_dict=False,
    )
    peak = matmul_peak(plan.dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(**inputs)
    flops: dict[str, float] = defaultdict(float)
    for op, count in counter.get_flop_counts()["Global"].items():
        flops[FLOP_KINDS.get(str(op).split(".")[-1], "other")] += count
    flops["attention"] += attention_flops(unet, inputs)

    best: dict[str, float] = {}
    step = float("inf")
    for _ in range(args.rounds):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            unet(**inputs)
            elapsed = time.perf_counter() - started
        times: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            kind = KINDS.get(event.key, "other")
            if kind is not None:
                times[kind] += event.self_cpu_time_total / 1e6
        if elapsed < step:
            step, best = elapsed, dict(times)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, {plan.precision}")
    print(
        f"load average {os.getloadavg()[0]:.2f}; best {str(plan.dtype).removeprefix('torch.')} matrix product now: {peak:.2f} TFLOP/s"
    )
    print(f"one UNet step, {args.size}x{args.size}, CFG batch 2: {step:.2f} s (best of {args.rounds}, profiled)")
    print(f"{'kind':<12} {'time s':>7} {'share':>6} {'GFLOP':>8} {'TFLOP/s':>8} {'of peak':>8}")
    profiled = sum(best.values())
    for kind in ("convolution", "linear", "attention", "other"):
        seconds, work = best.get(kind, 0.0), flops.get(kind, 0.0)
        rate = work / seconds / 1e12 if seconds and work else 0.0
        share = f"{rate / peak:7.0%}" if work else "      –"
        print(f"{kind:<12} {seconds:7.2f} {seconds / profiled:6.0%} {work / 1e9:8.0f} {rate:8.2f} {share}")


if __name__ == "__main__":
    main()
