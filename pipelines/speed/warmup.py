"""The one-time compile, run as a child process: `python -m pipelines.speed.warmup TASK.json`.

It builds a UNet of the same config, dtype and memory layout as the loaded one (weights zero: a compiled
graph does not depend on their values), attaches the same UNetRunner, and calls it once with arguments
shaped like the recorded call (runner.CallSpec). That fills torch's persistent caches (inductor's FX graph
cache and the AOTAutograd cache) in the folder the task names; the app then compiles the same graph in
seconds from them. A child process, so that the minutes of compiling never hold the app's worker (images
are made meanwhile, uncompiled), can run at a lower priority than the images, and cannot crash the app.

It prints one line per phase (`phase NAME`) for the progress shown in the page, and exits non-zero with
the reason on its last line of stderr when compiling fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(task_path: str) -> int:
    task = json.loads(Path(task_path).read_text(encoding="utf-8"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = task["cache_dir"]
    say("building")
    import torch
    from diffusers import UNet2DConditionModel

    from pipelines.loading.optimize import optimize_module
    from pipelines.speed.runner import CallSpec, UNetRunner

    torch.set_num_threads(int(task.get("threads") or torch.get_num_threads()))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(task["unet_config"])
    unet = unet.to_empty(device="cpu").to(getattr(torch, task["dtype"])).eval()
    with torch.no_grad():
        for tensor in [*unet.parameters(), *unet.buffers()]:
            tensor.zero_()
    optimize_module("unet", unet, torch.device("cpu"))
    runner = UNetRunner.attach(unet)
    spec = CallSpec(task["spec"])
    runner.raise_errors = True
    runner.use_compiled(torch.compile(runner.eager), {spec.key})
    say("compiling")
    started = time.perf_counter()
    with torch.inference_mode():
        unet(**spec.example(torch.Generator().manual_seed(0)))
    if runner.calls["compiled"] != 1:
        raise RuntimeError("the compiled UNet did not run")
    say(f"done {time.perf_counter() - started:.1f}")
    return 0


def say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except Exception as exc:  # the parent logs this last line as the reason: one line
        lines = [line for line in str(exc).splitlines() if line.strip()]
        print(f"{type(exc).__name__}: {lines[0] if lines else ''}", file=sys.stderr, flush=True)
        sys.exit(1)
