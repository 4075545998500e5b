"""How long switching LoRA sets between two jobs takes, against one denoising step; and the per-step cost.

Full-size SD1.5 with random weights (tests/support/full_size.py), three random kohya LoRAs of rank 32 over
every attention and feed-forward layer of the UNet and the text encoder, written to a temporary models folder.

Measured, in seconds:
- one denoising step at 512x512: one UNet forward with the CFG batch of 2;
- our approach (pipelines/loras.py, weights patched in place, restored from a copy): time to go from LoRA
  set A to set B between two jobs (restore A + patch B, files already in memory), the first use of a set
  (reading the files), and the step time with LoRAs patched in;
- the same switch to a LyCORIS LoHa over the same layers at the same rank (two low-rank products per layer,
  multiplied element-wise: pipelines/loras/layer_changes.py), for comparison with a LoRA's one product;
- diffusers' PEFT adapters, the alternative: load_lora_weights per file, set_adapters to switch, and the step
  time with the adapters active (unfused).

Run:  python bench/lora_switch.py [--dtype bf16] [--rank 32] [--steps 2] [--no-peft]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from pipelines.loading.hashing import HashCache  # noqa: E402
from pipelines.loading.loader import LoadedModel  # noqa: E402
from pipelines.loading.registry import ModelRegistry  # noqa: E402
from pipelines.loras.patching import LoraManager  # noqa: E402
from pipelines.types import Architecture, LoraRef, ModelFormat, ModelKind, ModelRecord  # noqa: E402
from tests.support.full_size import full_sd15_pipeline  # noqa: E402
from tests.support.lora_files import kohya_lora  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def unet_step(pipe, size: int) -> float:
    """Seconds for one UNet forward with the CFG batch (2 latents) at `size` pixels."""
    unet = pipe.unet
    latents = torch.randn(2, 4, size // 8, size // 8, dtype=unet.dtype)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, dtype=unet.dtype)
    with torch.inference_mode():
        start = time.perf_counter()
        unet(latents, torch.tensor([500, 500]), encoder_hidden_states=context)
        return time.perf_counter() - start


def best_step(pipe, size: int, repeats: int) -> float:
    return min(unet_step(pipe, size) for _ in range(repeats))


def best_switch(manager: LoraManager, model: LoadedModel, before: list[LoraRef], after: list[LoraRef], rounds: int = 3) -> float:
    """Best seconds from the end of a job with `before` patched in to the start of one with `after` (restore + patch)."""
    times = []
    for _ in range(rounds):
        job = manager.activate(model, before)
        job.__enter__()
        start = time.perf_counter()
        job.__exit__(None, None, None)
        with manager.activate(model, after):
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="UNet forwards per measurement (the best is kept)")
    parser.add_argument("--no-peft", action="store_true", help="skip the diffusers/PEFT comparison")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, LoRA rank {args.rank}")

    t0 = time.perf_counter()
    pipe = full_sd15_pipeline(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    print(f"built full-size SD1.5 in {time.perf_counter() - t0:.1f}s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = ["lora-a", "lora-b", "lora-c"]
        for seed, name in enumerate(names):
            kohya_lora(
                pipe,
                Architecture.SD1,
                root / "loras" / f"{name}.safetensors",
                rank=args.rank,
                alpha=args.rank / 2,
                seed=seed,
                dtype=torch.float16,
            )
        write_loha_like(root / "loras" / "lora-a.safetensors", root / "loras" / "loha-a.safetensors")
        size_mb = sum((root / "loras" / f"{n}.safetensors").stat().st_size for n in names) / 1e6 / len(names)
        print(f"wrote {len(names)} kohya LoRAs, {size_mb:.0f} MB each")
        registry = ModelRegistry(root, root / "cache")
        registry.refresh()
        record = ModelRecord("bench-sd15", ModelKind.CHECKPOINT, Architecture.SD1, ModelFormat.SINGLE_FILE, None)
        model = LoadedModel(record, Architecture.SD1, pipe, "", 0)
        manager = LoraManager(registry, HashCache(root / "cache" / "hashes.json"))
        set_a = [LoraRef("lora-a", 0.8), LoraRef("lora-b", 0.5)]
        set_b = [LoraRef("lora-c", 1.0), LoraRef("lora-a", -0.3)]

        best_step(pipe, args.size, 1)  # warm-up
        step = best_step(pipe, args.size, args.steps)
        print(f"\none denoising step ({args.size}x{args.size}, CFG batch 2): {step:.2f}s")

        # our approach -------------------------------------------------------------------------------
        with contextlib.ExitStack() as stack:
            start = time.perf_counter()
            stack.enter_context(manager.activate(model, set_a))
            first_use = time.perf_counter() - start
            patched_step = best_step(pipe, args.size, args.steps)
        switch = best_switch(manager, model, set_a, set_b)
        print("\npatch in place, restore from a copy (pipelines/loras.py):")
        print(f"  first use of a 2-LoRA set (reads the files): {first_use:.2f}s")
        print(f"  switch set A -> set B between jobs:           {switch:.2f}s")
        print(
            f"  step with LoRAs in effect:                    {patched_step:.2f}s "
            f"(overhead {100 * (patched_step / step - 1):+.1f}%)"
        )
        print(f"  RATIO switch / step: {switch / step:.2f}")
        loha = best_switch(manager, model, set_a, [LoraRef("loha-a", 0.8)])
        print(f"  switch set A -> a LoHa of lora-a's layers:    {loha:.2f}s (RATIO to the LoRA switch {loha / switch:.2f})")

        if not args.no_peft:
            peft_compare(pipe, root, names, step, args)
    return 0


def write_loha_like(lora: Path, out: Path) -> None:
    """A LyCORIS LoHa over the layers of a kohya file, at its rank: hada_w1_a/w2_a (out, rank) and hada_w1_b/w2_b
    (rank, in·kh·kw), as LyCORIS writes them without Tucker cores."""
    gen = torch.Generator().manual_seed(7)
    source = load_file(str(lora))
    tensors = {}
    for key, down in source.items():
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key.removesuffix(".lora_down.weight")
        rank, fan_in, out_dim = down.shape[0], down[0].numel(), source[f"{stem}.lora_up.weight"].shape[0]
        for n in ("1", "2"):
            tensors[f"{stem}.hada_w{n}_a"] = (torch.randn(out_dim, rank, generator=gen) * 0.1).half()
            tensors[f"{stem}.hada_w{n}_b"] = (torch.randn(rank, fan_in, generator=gen) / fan_in**0.5).half()
        tensors[f"{stem}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(tensors, str(out))


def peft_compare(pipe, root: Path, names: list[str], step: float, args) -> None:
    """diffusers' own way: named PEFT adapters, switched with set_adapters, unfused."""
    gc.collect()
    loads = []
    for name in names:
        start = time.perf_counter()
        pipe.load_lora_weights(str(root / "loras" / f"{name}.safetensors"), adapter_name=name.replace("-", "_"))
        loads.append(time.perf_counter() - start)
    switches = []
    for _ in range(3):
        pipe.set_adapters(["lora_a", "lora_b"], [0.8, 0.5])
        start = time.perf_counter()
        pipe.set_adapters(["lora_c", "lora_a"], [1.0, -0.3])
        switches.append(time.perf_counter() - start)
    adapter_step = best_step(pipe, args.size, args.steps)
    pipe.disable_lora()
    disabled_step = best_step(pipe, args.size, args.steps)
    print("\ndiffusers PEFT adapters (load_lora_weights + set_adapters, unfused):")
    print(f"  load_lora_weights per file (first use):       {sum(loads) / len(loads):.2f}s")
    print(f"  switch set A -> set B (set_adapters):         {min(switches):.3f}s")
    print(
        f"  step with 2 adapters active:                  {adapter_step:.2f}s (overhead {100 * (adapter_step / step - 1):+.1f}%)"
    )
    print(
        f"  step with adapters loaded but disabled:       {disabled_step:.2f}s (overhead {100 * (disabled_step / step - 1):+.1f}%)"
    )
    pipe.unload_lora_weights()


if __name__ == "__main__":
    raise SystemExit(main())
