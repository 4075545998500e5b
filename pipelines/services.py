"""The composition root of the engine: the only place that names the concrete classes.

app.py builds one `Services` from an AppConfig; the UI and the HTTP API receive it and use its
members. Tests build their own with a tiny model folder, so nothing here reads globals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pipelines import devices
from pipelines.config import AppConfig
from pipelines.devices import DevicePlan
from pipelines.generation.upscale import UpscalerLibrary
from pipelines.images.inputs import InputStore
from pipelines.jobs.previews import PreviewDecoders
from pipelines.jobs.queue import JobQueue
from pipelines.loading.cache import ModelCache
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import ModelLoader
from pipelines.loading.registry import ModelRegistry
from pipelines.loading.upscalers import UpscalerLoader
from pipelines.loras.patching import LoraManager
from pipelines.manager import PipelineManager
from pipelines.outputs.history import History
from pipelines.outputs.store import ImageStore
from pipelines.performance import PerformanceTable
from pipelines.prompts.compel_encoder import CompelEncoder
from pipelines.prompts.embeddings import TextualInversions
from pipelines.prompts.expansion import PromptExpander
from pipelines.prompts.plan import PromptPlanner
from pipelines.prompts.styles import StyleLibrary
from pipelines.prompts.wildcards import Wildcards
from pipelines.samplers import SamplerTable
from pipelines.speed.allocator import keep_freed_memory
from pipelines.speed.compiler import UNetCompiler
from pipelines.speed.timing import StepTimes

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclass
class Services:
    config: AppConfig
    plan: DevicePlan
    registry: ModelRegistry
    cache: ModelCache
    manager: PipelineManager
    queue: JobQueue
    history: History
    samplers: SamplerTable
    loras: LoraManager
    performance: PerformanceTable
    styles: StyleLibrary
    wildcards: Wildcards
    inputs: InputStore  # input images, stored by content: the UI and the API put uploads here
    upscalers: UpscalerLibrary
    compiler: UNetCompiler | None = None
    memory: str | None = None  # what speed.allocator did, where it did something

    def optimizations(self) -> str:
        """One line for the start: precision, layout, memory reuse and whether the UNet is compiled (and cached)."""
        parts = [self.plan.precision]
        if self.plan.device.type == "cpu":
            parts.append("channels-last")
            parts.append(self.memory or "freed memory handed back (--reuse-memory keeps it)")
            parts.append(self.compiler.summary() if self.compiler else "UNet eager (--compile compiles it)")
        return ", ".join(parts)

    def compile_status(self):
        """What compiling the UNet is doing now (speed.compiler.CompileStatus), for the page."""
        return self.compiler.status() if self.compiler else None

    def lora_info(self, name: str):
        """A LoRA's training metadata for the UI (trigger words, top tags, base model): a lora_info.LoraInfo."""
        return self.loras.info(name)

    def close(self) -> None:
        if self.compiler is not None:
            self.compiler.close()
        self.queue.stop()
        self.cache.clear()


def cache_budgets(cfg: AppConfig, plan: DevicePlan) -> tuple[int, int]:
    """(device budget, host budget) in bytes: the configured size, else 60% of what the machine has."""
    host = int(0.6 * (devices.total_memory_bytes(torch.device("cpu")) or 16 * GIB))
    if cfg.cache_budget_gb is not None:
        return int(cfg.cache_budget_gb * GIB), host
    if plan.device.type == "cpu":
        return host, 0
    device_total = devices.total_memory_bytes(plan.device) or 8 * GIB
    return int(0.6 * device_total), host


def build_services(cfg: AppConfig, start_worker: bool = True) -> Services:
    plan = devices.choose(cfg.device, cfg.precision)
    log.info("device: %s (%s)", plan.label, plan.reason)
    # before any thread allocates: glibc picks a thread's arena at its first allocation
    memory = keep_freed_memory() if plan.device.type == "cpu" and cfg.reuse_memory else None
    cache_dir = cfg.resolved_cache_dir
    registry = ModelRegistry(cfg.models_dir, cache_dir, hub_model=cfg.hub_model)
    registry.ensure_folders()
    registry.refresh()
    device_budget, host_budget = cache_budgets(cfg, plan)
    cache = ModelCache(plan.device, device_budget, host_budget)
    samplers = SamplerTable.load()
    history = History(cfg.output_dir / "history.sqlite")
    hashes = HashCache(cache_dir / "hashes.json")
    loras = LoraManager(registry, hashes, cache_bytes=int(cfg.lora_cache_mb * 1024**2))
    performance = PerformanceTable.load(registry, samplers)
    styles = StyleLibrary(cfg.styles_dir)
    for problem in styles.problems:
        log.warning("styles: %s", problem)
    wildcards = Wildcards(cfg.wildcards_dir)
    inputs = InputStore(cfg.output_dir, int(cfg.max_input_megapixels * 1_000_000))
    upscalers = UpscalerLibrary(registry, UpscalerLoader(plan.device, plan.dtype))
    compiler = None
    if plan.device.type == "cpu" and cfg.compile:
        compiler = UNetCompiler(cache_dir)
    manager = PipelineManager(
        registry=registry,
        loader=ModelLoader(plan, cache_dir, hashes),
        cache=cache,
        samplers=samplers,
        encoder=CompelEncoder(TextualInversions(registry)),
        prompts=PromptPlanner(styles, wildcards, registry),
        store=ImageStore(cfg.output_dir),
        history=history,
        default_model=cfg.default_model,
        loras=loras,
        performance=performance,
        previews=PreviewDecoders(cfg.models_dir, cfg.previews),
        inputs=inputs,
        upscalers=upscalers,
        expander=PromptExpander(registry),
        compiler=compiler,
        step_times=StepTimes(cache_dir / "step_times.json"),
    )
    queue = JobQueue(manager.run, max_queue=cfg.max_queue, prepare=manager.validate, idle=manager.idle)
    if start_worker:
        queue.start()
    return Services(
        cfg,
        plan,
        registry,
        cache,
        manager,
        queue,
        history,
        samplers,
        loras,
        performance,
        styles,
        wildcards,
        inputs,
        upscalers,
        compiler,
        memory,
    )
