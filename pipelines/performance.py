"""Performance modes (Quality, Speed, Extreme Speed, Lightning, Hyper-SD) from tables/performance.yaml.

A mode is data: the steps, guidance, sampler and schedule it sets, and for the fast modes an acceleration
LoRA per architecture, found in models/loras by file name or downloaded from its hub location. Whether a
mode can be used with a model is answered up front (`availability`), so the UI can say why a mode is not
offered and a job that would need a missing file is refused at submit time instead of failing mid-job.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from pipelines.errors import HubDownloadError, InvalidRequest, ModelNotFound
from pipelines.generation.quality import FLOAT_FIELDS
from pipelines.loading import hub
from pipelines.loading.registry import FOLDERS, ModelRegistry
from pipelines.samplers import SamplerTable
from pipelines.types import Architecture, GenerationRequest, LoraRef, ModelKind
from pipelines.validation import LIMITS

log = logging.getLogger(__name__)

TABLE_PATH = Path(__file__).parent / "tables" / "performance.yaml"
HUB_CHECK_TIMEOUT = 5.0
HUB_RECHECK_AFTER = 30.0  # seconds a failed hub check is remembered, so a UI polling modes stays quick

ProgressFn = Callable[[str, float | None], None]


@dataclass(frozen=True)
class ModeLora:
    file: str  # its name in models/loras
    repo: str
    filename: str  # its name in the hub repo
    weight: float = 1.0
    also: tuple[str, ...] = ()  # other names the same file goes by

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}"


@dataclass(frozen=True)
class PerformanceMode:
    name: str
    description: str = ""
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    loras: dict[Architecture, ModeLora] = field(default_factory=dict)
    input_steps: int | None = None  # steps run by Vary/Upscale passes (Fooocus's steps_uov)
    controls: dict[str, float] = field(default_factory=dict)  # Fooocus's sampling controls the mode sets (off)
    step_cache: int = 0  # CPU Turbo's approximations (pipelines/speed); every mode sets them, off unless named
    token_merging: float = 0.0
    fast_decode: bool = False

    @property
    def architectures(self) -> list[Architecture]:
        return list(self.loras)


class PerformanceTable:
    def __init__(self, modes: dict[str, PerformanceMode], registry: ModelRegistry | None = None):
        self._modes = modes
        self.registry = registry
        self._reachable: set[tuple[str, str]] = set()  # hub files seen to exist this session
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}  # recent failed checks: (when, why)

    @classmethod
    def load(
        cls, registry: ModelRegistry | None = None, samplers: SamplerTable | None = None, path: Path = TABLE_PATH
    ) -> PerformanceTable:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        modes = {name: _mode(name, entry or {}, samplers) for name, entry in (data.get("modes") or {}).items()}
        return cls(modes, registry)

    # -- the table ----------------------------------------------------------------------------------

    def modes(self) -> list[PerformanceMode]:
        return list(self._modes.values())

    def names(self) -> list[str]:
        return list(self._modes)

    def get(self, name: str) -> PerformanceMode:
        if name in self._modes:
            return self._modes[name]
        for known, mode in self._modes.items():
            if known.lower() == str(name).strip().lower():
                return mode
        raise InvalidRequest(f"Unknown performance mode {name!r}. Known: {', '.join(self._modes)}.", field="performance")

    def settings(self, request: GenerationRequest) -> GenerationRequest:
        """The request with the mode's steps, guidance, sampler and schedule (no files touched)."""
        if not request.performance:
            return request
        mode = self.get(request.performance)
        changes: dict[str, Any] = {"performance": mode.name}
        for name in ("steps", "cfg_scale", "sampler", "scheduler"):
            if getattr(mode, name) is not None:
                changes[name] = getattr(mode, name)
        changes.update(step_cache=mode.step_cache, token_merging=mode.token_merging, fast_decode=mode.fast_decode)
        return request.replace(**changes, **mode.controls)

    # -- the acceleration LoRA ------------------------------------------------------------------------

    def availability(self, name: str, architecture: Architecture) -> str | None:
        """None when the mode can run on a model of `architecture`, else a sentence saying why not.

        UNKNOWN architecture (a hub model not downloaded yet) passes; the check is repeated once it is loaded.
        """
        mode = self.get(name)
        if not mode.loras or architecture is Architecture.UNKNOWN:
            return None
        lora = mode.loras.get(architecture)
        if lora is None:
            needs = " or ".join(a.label for a in mode.loras)
            return f"{mode.name} needs an {needs} model (there is no {mode.name} LoRA for {architecture.label})."
        if self._local(lora) is not None:
            return None
        problem = self._hub_problem(lora)
        if problem is None:
            return None
        return (
            f"{mode.name} needs the LoRA {lora.file}, which is not in {self._folder()} and cannot be downloaded: "
            f"{problem}. Get {lora.filename} from {lora.url} and save it as {self._folder() / lora.file}."
        )

    def apply(
        self, request: GenerationRequest, architecture: Architecture, progress: ProgressFn | None = None
    ) -> GenerationRequest:
        """settings(request) plus the mode's LoRA for `architecture` (downloaded first if needed)."""
        request = self.settings(request)
        if not request.performance:
            return request
        mode = self.get(request.performance)
        if not mode.loras:
            return request
        why = self.availability(mode.name, architecture)
        if why:
            raise InvalidRequest(why, field="performance")
        ref = self.ensure_lora(mode.loras[architecture], progress or (lambda message, fraction=None: None))
        if any(r.name == ref.name and r.enabled for r in request.loras):
            return request
        return request.replace(loras=request.loras + (ref,))

    def ensure_lora(self, lora: ModeLora, progress: ProgressFn) -> LoraRef:
        path = self._local(lora)
        if path is None:
            path = self._download(lora, progress)
        registry = self._registry()
        try:
            record = registry.find(ModelKind.LORA, path.name)
        except ModelNotFound:
            registry.refresh()
            record = registry.find(ModelKind.LORA, path.name)
        return LoraRef(record.name, lora.weight)

    def _local(self, lora: ModeLora) -> Path | None:
        """The mode's file under any of its names, in any LoRA folder (ours, A1111's, ComfyUI's)."""
        registry = self._registry()
        for file in (lora.file, *lora.also):
            for folder in FOLDERS[ModelKind.LORA]:
                candidate = registry.models_dir / folder / file
                if candidate.is_file():
                    return candidate
            try:
                record = registry.find(ModelKind.LORA, file)
            except ModelNotFound:
                continue
            if record.path is not None and record.path.name == file:
                return record.path
        return None

    def _hub_problem(self, lora: ModeLora) -> str | None:
        """None when the file can be fetched from the hub now, else why not (offline, no connection, gone)."""
        key = (lora.repo, lora.filename)
        if key in self._reachable:
            return None
        if _hub_offline():
            return "the Hugging Face hub is switched off (HF_HUB_OFFLINE is set)"
        failed = self._failed.get(key)
        if failed and time.monotonic() - failed[0] < HUB_RECHECK_AFTER:
            return failed[1]
        import huggingface_hub

        try:
            huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(lora.repo, lora.filename), timeout=HUB_CHECK_TIMEOUT)
        except Exception as exc:  # network errors come in many classes; all mean "not now" to the user
            self._failed[key] = (time.monotonic(), _explain(exc))
            return self._failed[key][1]
        self._failed.pop(key, None)
        self._reachable.add(key)
        return None

    def _download(self, lora: ModeLora, progress: ProgressFn) -> Path:
        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / lora.file
        if _hub_offline():
            raise HubDownloadError(f"{lora.file} is not in {folder} and the Hugging Face hub is switched off (HF_HUB_OFFLINE).")
        import huggingface_hub

        progress(f"Downloading {lora.file} from {lora.repo}", 0.0)
        try:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                got = huggingface_hub.hf_hub_download(
                    lora.repo, lora.filename, local_dir=tmp, tqdm_class=hub._progress_tqdm(lora.file, progress)
                )
                os.replace(got, target)
        except Exception as exc:
            raise HubDownloadError(f"Could not download {lora.file} from {lora.url}: {_explain(exc)}.") from exc
        log.info("downloaded %s to %s", lora.file, target)
        self._registry().refresh()
        return target

    def _folder(self) -> Path:
        return self._registry().folder(ModelKind.LORA)

    def _registry(self) -> ModelRegistry:
        if self.registry is None:
            raise RuntimeError("PerformanceTable needs a registry to find acceleration LoRAs")
        return self.registry


def _hub_offline() -> bool:
    if hub.offline():
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _explain(exc: Exception) -> str:
    name, text = type(exc).__name__, str(exc)
    if "Offline" in name:
        return "the Hugging Face hub is switched off (HF_HUB_OFFLINE is set)"
    if "NotFound" in name or "404" in text:
        return "the file is not on the hub any more"
    if "Gated" in name or "401" in text or "403" in text:
        return "the hub refused access (log in with `hf auth login`)"
    return f"no connection to the Hugging Face hub ({name})"


def _mode(name: str, entry: dict[str, Any], samplers: SamplerTable | None) -> PerformanceMode:
    """One table entry, checked: a typo in the YAML fails at startup, not in a user's job."""
    where = f"performance.yaml: mode {name!r}"
    known = {
        "description",
        "steps",
        "cfg_scale",
        "sampler",
        "scheduler",
        "lora",
        "input_steps",
        "controls",
        "step_cache",
        "token_merging",
        "fast_decode",
    }
    if set(entry) - known:
        raise ValueError(f"{where} has unknown fields {sorted(set(entry) - known)}")
    for key in ("steps", "cfg_scale", "input_steps", "step_cache", "token_merging"):
        if key in entry:
            low, high = LIMITS["steps" if key == "input_steps" else key]
            if not low <= float(entry[key]) <= high:
                raise ValueError(f"{where}: {key} {entry[key]} is outside {low:g}..{high:g}")
    if samplers is not None and (entry.get("sampler") or entry.get("scheduler")):
        choice = samplers.resolve(entry.get("sampler") or "Euler", entry.get("scheduler"))
        if choice.note:
            raise ValueError(f"{where}: {choice.note}")
    controls = entry.get("controls") or {}
    for key, value in controls.items():
        if key not in FLOAT_FIELDS:
            raise ValueError(f"{where}: controls: {key!r} is not one of {', '.join(FLOAT_FIELDS)}")
        if not LIMITS[key][0] <= float(value) <= LIMITS[key][1]:
            raise ValueError(f"{where}: controls: {key} {value} is outside {LIMITS[key][0]:g}..{LIMITS[key][1]:g}")
    loras: dict[Architecture, ModeLora] = {}
    for arch_name, lora in (entry.get("lora") or {}).items():
        arch = Architecture(arch_name)
        loras[arch] = ModeLora(
            file=lora["file"],
            repo=lora["repo"],
            filename=lora["filename"],
            weight=float(lora.get("weight", 1.0)),
            also=tuple(lora.get("also") or ()),
        )
    return PerformanceMode(
        name=name,
        description=str(entry.get("description", "")),
        steps=int(entry["steps"]) if "steps" in entry else None,
        cfg_scale=float(entry["cfg_scale"]) if "cfg_scale" in entry else None,
        sampler=entry.get("sampler"),
        scheduler=entry.get("scheduler"),
        loras=loras,
        input_steps=int(entry["input_steps"]) if "input_steps" in entry else None,
        controls={key: float(value) for key, value in controls.items()},
        step_cache=int(entry.get("step_cache", 0)),
        token_merging=float(entry.get("token_merging", 0.0)),
        fast_decode=bool(entry.get("fast_decode", False)),
    )
