"""UNetRunner: installed as the UNet module's `forward`, it picks how each call runs.

- the compiled graph, for call shapes whose compilation is ready (`ready`), else the eager forward: a call
  never waits for a compiler, and never compiles inside a job;
- the step cache's shallow pass (step_cache.py) on the calls it reuses.

It is installed on the UNet2DConditionModel itself (`unet.forward`), not on `pipe.unet`, so a wrapper
that holds the UNet (and calls it) gets the same treatment. What is compiled is the UNet class's own
forward, bound to that module: its parameters are inputs of the graph, read at every call, so LoRAs
patched into them in place take effect without a recompile (no `freezing`).

A call is described by a `CallSpec`: the structure of its arguments with each tensor's dtype, rank,
layout and the sizes that are not dynamic. Height, width and the prompt length are dynamic dimensions,
so every aspect ratio and long prompts share one graph; the batch (2 with CFG, 1 without) is not, so
those are two graphs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pipelines.speed import step_cache

log = logging.getLogger(__name__)

# (argument name, dimensions that vary between calls of one graph): latent height/width, prompt tokens.
DYNAMIC = {"sample": (2, 3), "encoder_hidden_states": (1,)}
PARAMETERS = ("sample", "timestep", "encoder_hidden_states")


def describe(value: Any, dynamic: tuple[int, ...] = ()) -> Any:
    """A JSON-able description of an argument: tensors by metadata, containers recursively, scalars as is."""
    if isinstance(value, torch.Tensor):
        return {
            "tensor": str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
            "stride": list(value.stride()),
            "dynamic": list(dynamic),
        }
    if isinstance(value, dict):
        return {"dict": {k: describe(v) for k, v in sorted(value.items())}}
    if isinstance(value, (list, tuple)):
        return {"list": [describe(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot describe a UNet argument of type {type(value).__name__}")


def _key_part(desc: Any) -> Any:
    """The description without the sizes of dynamic dimensions (and strides that follow from them)."""
    if "tensor" in desc:
        shape = ["*" if i in desc["dynamic"] else n for i, n in enumerate(desc["shape"])]
        order = sorted(range(len(desc["stride"])), key=lambda i: -desc["stride"][i])  # the memory layout
        return {"tensor": desc["tensor"], "shape": shape, "order": order}
    if "dict" in desc:
        return {"dict": {k: _key_part(v) for k, v in desc["dict"].items()}}
    if "list" in desc:
        return {"list": [_key_part(v) for v in desc["list"]]}
    return desc


@dataclass(frozen=True)
class CallSpec:
    """How the UNet was called: enough to rebuild an equivalent call elsewhere (warmup.py) and to key graphs."""

    arguments: str  # JSON: {name: description}

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> CallSpec:
        return cls(json.dumps({k: describe(v, DYNAMIC.get(k, ())) for k, v in sorted(kwargs.items())}, sort_keys=True))

    @property
    def key(self) -> str:
        """The same for every call one graph serves (whatever its height, width and prompt length)."""
        parts = {k: _key_part(v) for k, v in json.loads(self.arguments).items()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def batch(self) -> int:
        return int(json.loads(self.arguments)["sample"]["shape"][0])

    def example(self, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Arguments of this shape and layout (random values), for compiling without the real pipeline."""
        return {k: _build(v, generator) for k, v in json.loads(self.arguments).items()}


def _build(desc: Any, generator: torch.Generator | None) -> Any:
    if "tensor" in desc:
        dtype = getattr(torch, desc["tensor"])
        out = torch.empty_strided(desc["shape"], desc["stride"], dtype=dtype)
        if dtype.is_floating_point:
            out.copy_(torch.randn(desc["shape"], generator=generator))
        else:
            out.fill_(1)
        return out
    if "dict" in desc:
        return {k: _build(v, generator) for k, v in desc["dict"].items()}
    if "list" in desc:
        return tuple(_build(v, generator) for v in desc["list"])
    return desc["value"]


def unet_module(holder: Any) -> torch.nn.Module:
    """The UNet2DConditionModel in `holder` (pipe.unet, or a wrapper module around it)."""
    from diffusers import UNet2DConditionModel

    if isinstance(holder, UNet2DConditionModel):
        return holder
    if isinstance(holder, torch.nn.Module):
        for module in holder.modules():
            if isinstance(module, UNet2DConditionModel):
                return module
    for value in vars(holder).values():
        if isinstance(value, UNet2DConditionModel):
            return value
    raise TypeError(f"no UNet2DConditionModel in {type(holder).__name__}")


class UNetRunner:
    """The UNet's `forward` while attached (see the module docstring). One per loaded UNet."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.eager: Callable[..., Any] = type(unet).forward.__get__(unet)
        self.compiled: Callable[..., Any] | None = None
        self.ready: set[str] = set()  # CallSpec keys the compiled function may run
        self.failed: set[str] = set()  # keys whose compiled call raised: eager from then on
        self.seen: dict[str, CallSpec] = {}  # every call shape met, for the compiler
        self.on_new_spec: Callable[[CallSpec], None] | None = None
        self.cache: step_cache.StepCache | None = None
        self.eager_only = False  # token merging's hooks are on: a compiled graph would not have them
        self.deep: torch.Tensor | None = None  # input of the last up block in the last full call
        self.calls = {"compiled": 0, "eager": 0, "shallow": 0}
        self.raise_errors = False  # warmup.py: a failing compile is the answer, not a reason to run eager
        self._lock = threading.Lock()
        self._hook = unet.up_blocks[-1].register_forward_pre_hook(self._keep_deep, with_kwargs=True)

    # -- installing ---------------------------------------------------------------------------------

    @classmethod
    def attach(cls, holder: Any) -> UNetRunner:
        """The runner of the UNet in `holder`, installed once (attaching again returns the same one)."""
        unet = unet_module(holder)
        current = unet.__dict__.get("forward")
        if isinstance(current, UNetRunner):
            return current
        runner = cls(unet)
        unet.forward = runner
        return runner

    def detach(self) -> None:
        self._hook.remove()
        if self.unet.__dict__.get("forward") is self:
            del self.unet.forward

    def _keep_deep(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        # Always kept, in eager and compiled runs alike, so the compiled graph is the same with or without
        # step caching; the tensor exists anyway until the last up block is done.
        self.deep = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    # -- one call -------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(PARAMETERS, args))
        timestep = kwargs.get("timestep")
        if not isinstance(timestep, torch.Tensor) or (timestep.ndim == 0 and timestep.dtype != torch.float32):
            # one graph for every sampler: float32 0-d (int64 DDIM steps, Python numbers give the same embedding)
            kwargs["timestep"] = torch.as_tensor(timestep, dtype=torch.float32, device=kwargs["sample"].device)
        cache = self.cache
        if cache is not None and step_cache.supported(self.unet, kwargs):
            if cache.reuse_now(self.deep, kwargs.get("sample")):
                self.calls["shallow"] += 1
                return step_cache.shallow_forward(self.unet, self.deep, **kwargs)
        return self.full(kwargs)

    def full(self, kwargs: dict[str, Any]) -> Any:
        spec = CallSpec.of(kwargs)
        key = spec.key
        if key not in self.seen:
            self.seen[key] = spec
            if self.on_new_spec is not None:
                self.on_new_spec(spec)
        compiled = self.compiled
        if compiled is not None and not self.eager_only and key in self.ready and key not in self.failed:
            for name, dims in DYNAMIC.items():
                if isinstance(kwargs.get(name), torch.Tensor):
                    # "maybe": a model whose deepest feature map is 1 pixel (tiny test models) specializes instead of failing
                    torch._dynamo.maybe_mark_dynamic(kwargs[name], dims)
            try:
                out = compiled(**kwargs)
            except Exception:  # a compiled graph that fails must not fail the image: eager, said once in the log
                if self.raise_errors:
                    raise
                log.warning("the compiled UNet failed; running it uncompiled from now on", exc_info=True)
                self.failed.add(key)
            else:
                self.calls["compiled"] += 1
                return out
        self.calls["eager"] += 1
        return self.eager(**kwargs)

    def use_compiled(self, compiled: Callable[..., Any], keys: set[str]) -> None:
        # Only the dimensions marked in DYNAMIC vary: torch's automatic promotion of other sizes that changed
        # (the batch, after CFG and no-CFG images) would trace a new graph the compile process never made.
        torch._dynamo.config.automatic_dynamic_shapes = False
        with self._lock:
            self.compiled = compiled
            self.ready |= keys
