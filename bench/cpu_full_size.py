"""Full-size SD1.5 at 512x512 on this machine's CPU: the app (default, CPU Turbo) against plain diffusers at its best.

Speed depends on the architecture, not on what the weights learned, so random-weight stand-ins of the real
sizes are used (written once under bench/.cache/): the SD1.5 checkpoint, the LCM LoRA CPU Turbo applies
(kohya layout, rank 64), and TAESD. Reported in one run:

- the machine: CPU, threads, bf16 and fp32 matmul TFLOP/s measured now;
- plain diffusers runs in a process of its own, as users run it (its own malloc settings: the app's
  memory reuse, pipelines/speed/allocator.py, is process-wide); the app runs in this one;
- with --compile: the one-time compile of each graph (CFG and no-CFG) as the app does it in the background,
  and a warm start (a fresh process with the cache present) until the compiled UNet is loaded;
- one UNet step (CFG batch) and one VAE decode: plain best, app eager (and app compiled with --compile); each
  step as % of the matmul peak; the compiled step's deviation from eager;
- CPU Turbo's switches: the saving and the image deviation of each (CFG 1, step caching, token merging, TAESD
  decode);
- whole images through the HTTP API (/sdapi/v1/txt2img) in the default faithful setting and in CPU Turbo
  (after a default job, and again right after, with its LoRA kept), alternating with plain diffusers in its
  best CPU setting (bf16 + channels-last where the CPU has native bf16, else fp32), median and best of
  --rounds, the ratios against the targets, and each one's page faults and kernel time.

    python bench/cpu_full_size.py [--rounds 3] [--steps 4] [--size 512] [--compile [--cold]]
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

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.config import AppConfig  # noqa: E402
from pipelines.devices import choose  # noqa: E402
from pipelines.loading.configs import bundled_config_dir, tokenizer_kwargs  # noqa: E402
from pipelines.services import build_services  # noqa: E402
from pipelines.speed.runner import UNetRunner, unet_module  # noqa: E402
from pipelines.speed.step_cache import shallow_forward  # noqa: E402
from pipelines.speed.token_merging import TokenMerging  # noqa: E402
from pipelines.types import Architecture, GenerationRequest, JobState  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
MODELS = CACHE / "models"
CHECKPOINT = MODELS / "checkpoints" / "sd15-random.safetensors"
MERGE_RATIO = 0.5  # tomesd's suggested ratio, and the one issue 16 measured
PROMPT, NEGATIVE = "a lighthouse on a cliff at dusk, dramatic sky", "blurry"


def ensure_files() -> None:
    from tests.support.full_size import full_sd15_pipeline

    if not CHECKPOINT.exists():
        from tests.support.ckpt_export import save_single_file

        print("writing a full-size random SD1.5 checkpoint (once) ...", flush=True)
        save_single_file(full_sd15_pipeline(dtype=torch.float16), CHECKPOINT)
    lora = MODELS / "loras" / "lcm-lora-sdv1-5.safetensors"
    taesd = MODELS / "vae_approx" / "taesd_decoder.safetensors"
    if not lora.exists() or not taesd.exists():
        from types import SimpleNamespace

        from tests.support.full_size import bundled_configs
        from tests.support.lora_files import kohya_lora
        from tests.test_preview_decoder import random_taesd, write_original_decoder

        with torch.device("meta"):  # only the shapes are needed
            unet = diffusers.UNet2DConditionModel.from_config(bundled_configs(Architecture.SD1)["unet"])
        kohya_lora(SimpleNamespace(unet=unet), Architecture.SD1, lora, rank=64, text_encoders=False, dtype=torch.float16)
        write_original_decoder(random_taesd(0), taesd)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")


def kernel_time(before: resource.struct_rusage) -> dict:
    """This process's page faults and kernel time since `before`: where memory that was handed back is paid for."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults": now.ru_minflt - before.ru_minflt,
        "sys": now.ru_stime - before.ru_stime,
        "user": now.ru_utime - before.ru_utime,
    }


def best_of(fn, n: int = 3) -> float:
    return min(timed(fn) for _ in range(n))


def matmul_tflops(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    seconds = best_of(lambda: [a @ b for _ in range(4)], 3) / 4
    return 2 * n**3 / seconds / 1e12


def unet_inputs(pipe, size: int, batch: int = 2) -> dict:
    dtype = pipe.unet.dtype
    gen = torch.Generator().manual_seed(0)
    return dict(
        sample=torch.randn(batch, 4, size // 8, size // 8, generator=gen).to(dtype),
        timestep=torch.tensor(500.0),
        encoder_hidden_states=torch.randn(batch, 77, pipe.unet.config.cross_attention_dim, generator=gen).to(dtype),
        return_dict=False,
    )


def deviation(a, b) -> float:
    """Mean absolute difference in units of the reference's standard deviation."""

    def values(x) -> torch.Tensor:
        return x.float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)

    a, b = values(a), values(b)
    return float((a - b).abs().mean() / b.std())


def plain_pipeline(precision: str):
    plan = choose("cpu", precision)
    pipe = diffusers.StableDiffusionPipeline.from_single_file(
        str(CHECKPOINT),
        config=str(bundled_config_dir(Architecture.SD1)),
        local_files_only=True,
        torch_dtype=plan.dtype,
        **tokenizer_kwargs(Architecture.SD1),
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if plan.dtype == torch.bfloat16:  # the best plain setting where the CPU has native bf16
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe


def plain_child(precision: str, size: int, steps: int) -> None:
    """Plain diffusers in a process of its own: once loaded it says so, then times what stdin asks, one line each
    (`step`: one UNet step with CFG, `vae`: one decode, `image`: a whole image with its page faults and kernel time)."""
    pipe = plain_pipeline(precision)
    latents = torch.randn(1, 4, size // 8, size // 8).to(pipe.unet.dtype)

    def image():
        pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            width=size,
            height=size,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(1),
        )

    work = {
        "step": lambda: pipe.unet(**unet_inputs(pipe, size)),
        "vae": lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor),
        "image": image,
    }
    with torch.inference_mode():  # warm: the first call of each pays one-time costs
        work["step"]()
        work["vae"]()
    print(json.dumps({"loaded": True}), flush=True)
    for line in sys.stdin:
        if line.strip() not in work:
            break
        before = resource.getrusage(resource.RUSAGE_SELF)
        with torch.inference_mode():
            seconds = timed(work[line.strip()])
        print(json.dumps({"seconds": seconds, **kernel_time(before)}), flush=True)


class Asked:
    """A bench child process that says once when it is ready, then answers one JSON line per word on stdin."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a bench process ended (exit code {self.process.wait()}): {self.process.args}")
        return json.loads(line)

    def ask(self, what: str) -> dict:
        """`what` once (plain_child: "step", "vae" or "image"): its seconds, page faults and kernel seconds."""
        self.process.stdin.write(what + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


def faithful_request(steps: int = 4, size: int = 512) -> dict:
    """The default (faithful) image both benches ask the app for: Euler, CFG 7.5, seed 1, not saved."""
    return dict(
        model="sd15-random",
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        steps=steps,
        width=size,
        height=size,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=7.5,
        seed=1,
        save_images=False,
    )


def warm_start_child(cache_dir: str, started: float) -> None:
    """A fresh process: the app's services on a warm cache, until the compiled UNet of the default model is loaded."""
    imported = time.time() - started
    services = build_services(
        AppConfig(models_dir=MODELS, output_dir=Path(tempfile.mkdtemp()), device="cpu", cache_dir=Path(cache_dir), compile=True)
    )
    model_at = first = None
    while True:
        loaded = services.cache.loaded()
        model_at = model_at or (time.time() - started if loaded else None)
        runner = unet_module(loaded[0].pipe.unet).forward if loaded else None
        left = services.compiler.unwarmed(runner) if getattr(runner, "ready", None) else None
        if left is not None and all(spec.batch != 2 for spec in left):
            first = first or time.time() - started  # the default (CFG) graph is loaded: ready for a faithful image
        if left == []:
            break
        time.sleep(0.05)
    ready = time.time() - started
    print(json.dumps({"ready": first, "all": ready, "imports": imported, "model": model_at, "graphs": len(runner.ready)}))
    services.close()


def http_image(client, url: str, payload: dict) -> float:
    start = time.perf_counter()
    answer = client.post(f"{url}/sdapi/v1/txt2img", json=payload)
    answer.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compile", action="store_true", help="also measure --compile: the compile, the warm start, the compiled step"
    )
    parser.add_argument(
        "--cold", action="store_true", help="with --compile, start from an empty compile cache (measures the compile)"
    )
    parser.add_argument("--warm-start-child", help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    if args.warm_start_child:
        warm_start_child(args.warm_start_child, args.started)
        return
    if args.plain_child:
        plain_child(args.plain_child, args.size, args.steps)
        return
    ensure_files()
    precision = choose("cpu", "auto").precision
    cpu = cpu_name()
    peak = {name: matmul_tflops(dtype) for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f}; matmul peak now: bf16 {peak['bf16']:.2f}, fp32 {peak['fp32']:.2f} TFLOP/s"
    )
    print(f"precision (auto): {precision}; {args.size}x{args.size}, {args.steps} Euler steps, CFG 7.5 unless said")

    cache_dir = Path(tempfile.mkdtemp(prefix="easel-compile-")) if args.cold else CACHE / "compile"
    out = Path(tempfile.mkdtemp(prefix="easel-bench-out-"))
    cfg = AppConfig(models_dir=MODELS, output_dir=out, device="cpu", cache_dir=cache_dir, port=7999, compile=args.compile)
    # before the app's threads: a process of its own
    plain = Asked([sys.executable, __file__, "--plain-child", precision, "--size", str(args.size), "--steps", str(args.steps)])
    from pipelines import services as services_module
    from pipelines.speed.compiler import UNetCompiler

    # the compile at normal priority: on a shared machine a niced one measures the others' load
    services_module.UNetCompiler = lambda cache_dir: UNetCompiler(cache_dir, niceness=0)
    services = build_services(cfg)
    print(f"app: {services.optimizations()}")
    faithful = faithful_request(args.steps, args.size)
    turbo = dict(
        model="sd15-random", prompt=PROMPT, width=args.size, height=args.size, seed=1, performance="CPU Turbo", save_images=False
    )

    def job(**fields):
        info = services.queue.wait(services.queue.submit(GenerationRequest(**fields)), timeout=7200)
        assert info.state is JobState.FINISHED, info.error
        return info

    # -- 1. the first jobs; with --compile, the one-time compile as the app does it (graphs compiled in the background)
    first = timed(lambda: job(**faithful))
    job(**turbo)
    print(f"\nfirst job (model load; eager unless compiled graphs were cached): {first:.1f} s")
    if args.compile:
        while services.compiler.working:
            time.sleep(1)
        manifest = services.compiler.manifest()
        compile_s = {json.loads(v["spec"])["sample"]["shape"][0]: v["seconds"] for v in manifest.values()}
        print(
            "compile (background child process): "
            + ", ".join(f"batch {b}: {s:.0f} s" for b, s in sorted(compile_s.items(), reverse=True))
            + ("" if args.cold else " (from earlier runs: --cold measures it now)")
        )
        services.manager.idle()  # load the compiled graphs now rather than in the first timed job
        started = time.time()
        child = subprocess.run(
            [sys.executable, __file__, "--warm-start-child", str(cache_dir), "--started", str(started)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        warm = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {"ready": float("nan")}
        print(
            f"warm start (fresh process, cache present) until the compiled CFG graph is loaded: {warm['ready']:.1f} s "
            f"(target <= 15 s); imports {warm.get('imports', float('nan')):.1f} s, model loaded at "
            f"{warm.get('model') or float('nan'):.1f} s, then re-trace + cached kernels + one step; all "
            f"{warm.get('graphs', 0)} graphs at {warm.get('all', float('nan')):.1f} s"
        )

    # -- 2. one UNet step (CFG batch of 2) and one VAE decode: plain best (its own process), app eager, app compiled
    [model] = services.cache.loaded()
    runner = UNetRunner.attach(model.pipe.unet)
    if args.compile:  # the app's own calls as the pipeline made them (the compiled graphs are keyed by their structure)
        specs = {spec.batch: spec for key, spec in runner.seen.items() if key in runner.ready}
        x, x1 = specs[2].example(), specs[1].example()
    else:
        x, x1 = unet_inputs(model.pipe, args.size), unet_inputs(model.pipe, args.size, batch=1)
    with torch.inference_mode():
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as flops:
            runner.eager(**x)
        gflop = flops.get_total_flops() / 1e9
        if args.compile:
            eager_out = runner.eager(**x)[0]
            compiled_out = model.pipe.unet(**x)[0]
            t_comp = best_of(lambda: model.pipe.unet(**x))
            t_step1 = best_of(lambda: model.pipe.unet(**x1))
        else:
            t_step1 = best_of(lambda: runner.eager(**x1))
        runner.eager(**x1)
        t_shallow = best_of(lambda: shallow_forward(runner.unet, runner.deep, **x1))
        merging = TokenMerging(runner.unet, MERGE_RATIO, seed=0)
        t_step1_merged = best_of(lambda: runner.eager(**x1))
        t_shallow_merged = best_of(lambda: shallow_forward(runner.unet, runner.deep, **x1))
        merging.remove()
        latents = torch.randn(1, 4, args.size // 8, args.size // 8).to(model.pipe.unet.dtype)
        tiny = services.manager.previews.final_decoder(model.architecture, torch.device("cpu"), model.pipe.unet.dtype)
        t_taesd = best_of(lambda: tiny(latents))
    # the step and the decode alternated with plain diffusers' (the machine's speed drifts): best of --rounds each
    t_plain = t_eager = t_plain_vae = t_vae = float("inf")
    for _ in range(args.rounds):
        t_plain = min(t_plain, plain.ask("step")["seconds"])
        with torch.inference_mode():
            t_eager = min(t_eager, timed(lambda: runner.eager(**x)))
        t_plain_vae = min(t_plain_vae, plain.ask("vae")["seconds"])
        with torch.inference_mode():
            t_vae = min(t_vae, timed(lambda: model.pipe.vae.decode(latents / model.pipe.vae.config.scaling_factor)))
    pct = lambda s: 100 * gflop / s / 1000 / peak[precision]  # noqa: E731
    print(f"\nUNet step, CFG batch ({gflop:.0f} GFLOP):   s      % of {precision} matmul peak")
    steps = [("plain best", t_plain), ("app eager", t_eager)] + ([("app compiled", t_comp)] if args.compile else [])
    for name, s in steps:
        print(f"  {name:<14}{s:8.2f}  {pct(s):6.1f} %")
    print(f"  app eager vs plain: {t_eager / t_plain:.3f}x")
    if args.compile:
        print(
            f"  compiled vs eager: {t_comp / t_eager:.3f}x, deviation {deviation(compiled_out, eager_out):.2%} of the output std"
        )
    t_step = t_comp if args.compile else t_eager
    print(f"VAE decode: plain {t_plain_vae:.2f} s, app {t_vae:.2f} s ({t_vae / t_plain_vae:.3f}x)")

    # -- 3. CPU Turbo's switches: saving and deviation, on whole images (engine) and parts
    def image(**fields):
        info = job(**fields)
        return info.result.seconds, np.asarray(info.result.images[0].image)

    all_on = image(**turbo)
    # the Turbo mode's settings named one by one (the LCM LoRA left out), so that each switch can be set alone
    explicit = {
        **turbo,
        "performance": None,
        "steps": 4,
        "cfg_scale": 1.0,
        "sampler": "LCM",
        "scheduler": "Automatic",
        "loras": (),
    }
    no_cache = image(**explicit, step_cache=0, fast_decode=True)
    same_on = image(**explicit, step_cache=2, fast_decode=True)
    merged = image(**explicit, step_cache=2, token_merging=MERGE_RATIO, fast_decode=True)
    full_vae = image(**explicit, step_cache=2, fast_decode=False)
    print("\nCPU Turbo switches               saving            deviation (image, of its std)")
    print(f"  CFG 1 (no-CFG batch)        step {t_step:.2f} -> {t_step1:.2f} s    needs the LCM LoRA (the model changes)")
    print(
        f"  step caching (interval 2)   step {t_step1:.2f} -> {t_shallow:.2f} s on cached steps; image "
        f"{no_cache[0]:.2f} -> {same_on[0]:.2f} s   {deviation(same_on[1], no_cache[1]):.2%}"
    )
    print(
        f"  token merging {MERGE_RATIO}          step {t_step1:.2f} -> {t_step1_merged:.2f} s, cached step {t_shallow:.2f} -> "
        f"{t_shallow_merged:.2f} s; image {same_on[0]:.2f} -> {merged[0]:.2f} s   {deviation(merged[1], same_on[1]):.2%}"
    )
    print(
        f"  TAESD final decode          decode {t_vae:.2f} -> {t_taesd:.2f} s; image {full_vae[0]:.2f} -> {same_on[0]:.2f} s"
        f"   {deviation(same_on[1], full_vae[1]):.2%} (approximate decoder)"
    )
    print(f"  all on (CPU Turbo, engine)  image {all_on[0]:.2f} s")

    # -- 4. whole images through the HTTP API, alternating with plain diffusers at its best
    import httpx

    from app import build_app
    from ui.server import Server

    server = Server(build_app(cfg, services), cfg.host, cfg.port)
    server.start()
    url = f"http://127.0.0.1:{cfg.port}"
    api = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        steps=args.steps,
        width=args.size,
        height=args.size,
        sampler_name="Euler",
        scheduler="Automatic",
        cfg_scale=7.5,
        seed=1,
    )
    turbo_api = dict(prompt=PROMPT, width=args.size, height=args.size, seed=1, performance="CPU Turbo")
    client = httpx.Client(timeout=3600)

    def app_image(payload: dict) -> dict:
        before = resource.getrusage(resource.RUSAGE_SELF)
        return {"seconds": http_image(client, url, payload), **kernel_time(before)}

    runs: dict[str, list[dict]] = {"plain": [], "app": [], "turbo": [], "turbo again": []}
    plain.ask("image")
    for _ in range(args.rounds):  # alternated, so that the machine's slow and fast spells fall on all of them
        runs["plain"].append(plain.ask("image"))
        runs["app"].append(app_image(api))
        runs["turbo"].append(app_image(turbo_api))  # after a default job: the LCM LoRA is patched in
        runs["turbo again"].append(app_image(turbo_api))  # after a Turbo job: the LCM LoRA is still in the weights
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "faults", "sys")} for k, v in runs.items()}
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    ratio = lambda k: f"ratio {med[k]['seconds'] / med['plain']['seconds']:.3f} (best {best[k] / best['plain']:.3f})"  # noqa: E731
    kernel = lambda k: f"page faults {med[k]['faults']:,.0f}, kernel {med[k]['sys']:.2f} s"  # noqa: E731
    print(f"\nwhole image, median of {args.rounds} alternated rounds (load average now {os.getloadavg()[0]:.2f}):")
    print(
        f"  plain diffusers best ({precision}{', channels-last' if precision == 'bf16' else ''}): "
        f"{med['plain']['seconds']:.2f} s; {kernel('plain')}"
    )
    print(
        f"  app default{', compiled' if args.compile else ''}, HTTP API: {med['app']['seconds']:.2f} s  {ratio('app')} "
        f"(target <= 0.75); {kernel('app')}"
    )
    print(
        f"  app CPU Turbo, HTTP API: {med['turbo']['seconds']:.2f} s  {ratio('turbo')} (targets <= 0.30 and <= 6 s); {kernel('turbo')}"
    )
    print(f"  the same, right after a Turbo job (LoRA kept): {med['turbo again']['seconds']:.2f} s  {ratio('turbo again')}")
    print("  rounds (s): " + "; ".join(f"{k} " + ", ".join(f"{r['seconds']:.2f}" for r in v) for k, v in runs.items()))
    server.stop()
    services.close()
    plain.close()


if __name__ == "__main__":
    main()
