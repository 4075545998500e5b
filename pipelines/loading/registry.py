"""Finds models on disk: checkpoints, LoRAs, VAEs and embeddings, in our layout or A1111's/ComfyUI's.

Nothing is configured by hand: every file is probed (probe.py) and listed under the kind its tensors
say it is, whichever folder it sits in. A refresh rescans; probe results are cached by size and mtime
so a rescan of a large collection stays quick.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ModelNotFound
from pipelines.loading.probe import MODEL_SUFFIXES, PROBE_RULES, ProbeResult, probe_diffusers_folder, probe_file, probe_vae_folder
from pipelines.prompts.expansion import probe_expansion_folder
from pipelines.types import Architecture, ModelFormat, ModelKind, ModelRecord

# Sub-folder names per kind: ours, A1111's and ComfyUI's. The first one is created when missing.
FOLDERS: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.CHECKPOINT: ("checkpoints", "Stable-diffusion", "diffusers"),
    ModelKind.LORA: ("loras", "Lora", "LyCORIS"),
    ModelKind.VAE: ("vae", "VAE"),
    ModelKind.EMBEDDING: ("embeddings",),
    ModelKind.UPSCALER: ("upscale_models", "ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT"),
    ModelKind.PROMPT_EXPANSION: ("prompt_expansion",),  # Fooocus's folder name
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith(tuple(MODEL_SUFFIXES))


@dataclass(frozen=True)
class ScanReport:
    records: tuple[ModelRecord, ...]
    skipped: tuple[tuple[Path, str], ...]  # files that are not models we know, and why


class ModelRegistry:
    def __init__(self, models_dir: Path, cache_dir: Path, hub_model: str | None = None):
        self.models_dir = Path(models_dir)
        self._probe_cache_file = Path(cache_dir) / "probe-cache.json"
        self._hub_model = hub_model
        self._lock = threading.Lock()
        self._records: tuple[ModelRecord, ...] = ()
        self._skipped: tuple[tuple[Path, str], ...] = ()
        self._probe_cache: dict[str, dict] = self._read_probe_cache()

    # -- scanning ---------------------------------------------------------------------------------

    def folder(self, kind: ModelKind) -> Path:
        """Where a user should put files of this kind (an existing A1111/ComfyUI name wins)."""
        for name in FOLDERS[kind]:
            if (self.models_dir / name).is_dir():
                return self.models_dir / name
        return self.models_dir / FOLDERS[kind][0]

    def ensure_folders(self) -> None:
        """Create the folders users are told to put files in (skipped where an A1111/ComfyUI name exists)."""
        for kind in FOLDERS:
            try:
                self.folder(kind).mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # a read-only models folder is fine: we only read from it

    def refresh(self) -> ScanReport:
        records: list[ModelRecord] = []
        skipped: list[tuple[Path, str]] = []
        seen: set[Path] = set()
        for kind in FOLDERS:
            for name in FOLDERS[kind]:
                root = self.models_dir / name
                if root.is_dir():
                    self._scan(root, kind, records, skipped, seen)
        records.sort(key=lambda r: (r.kind.value, r.name.lower()))
        with self._lock:
            self._records = tuple(records)
            self._skipped = tuple(skipped)
        self._write_probe_cache()
        return ScanReport(tuple(records), tuple(skipped))

    def _scan(self, root: Path, folder_kind: ModelKind, out: list, skipped: list, seen: set) -> None:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(dirpath)
            if folder_kind is ModelKind.PROMPT_EXPANSION:  # each model is a folder; loose files are not models
                expansion = probe_expansion_folder(here, filenames) if here != root else None
                if expansion is not None:
                    dirnames.clear()
                    out.append(self._record(root, here, expansion, ModelFormat.DIFFUSERS))
                continue
            if "model_index.json" in filenames:
                dirnames.clear()  # a diffusers folder is one model, not a tree to walk
                if here != root and here.resolve() not in seen:
                    seen.add(here.resolve())
                    probe = probe_diffusers_folder(here)
                    out.append(self._record(root, here, probe, ModelFormat.DIFFUSERS))
                continue
            vae_folder = probe_vae_folder(here, filenames) if folder_kind is ModelKind.VAE and here != root else None
            if vae_folder is not None:  # a diffusers VAE (config.json + weights) is one model too
                dirnames.clear()
                if here.resolve() not in seen:
                    seen.add(here.resolve())
                    out.append(self._record(root, here, vae_folder, ModelFormat.DIFFUSERS))
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = here / filename
                if path.suffix.lower() not in MODEL_SUFFIXES or filename.startswith("."):
                    continue
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                probe = self._probe_cached(path)
                if probe.kind is ModelKind.UNKNOWN:
                    skipped.append((path, probe.note))
                    continue
                if probe.kind is not folder_kind and folder_kind is ModelKind.EMBEDDING and probe.kind is ModelKind.LORA:
                    probe = ProbeResult(ModelKind.EMBEDDING, probe.architecture)
                out.append(self._record(root, path, probe, ModelFormat.SINGLE_FILE))

    def _record(self, root: Path, path: Path, probe: ProbeResult, fmt: ModelFormat) -> ModelRecord:
        rel = path.relative_to(root)
        name = rel.as_posix() if fmt is ModelFormat.DIFFUSERS else rel.with_suffix("").as_posix()
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        sidecar = path.with_name(path.name.rsplit(".", 1)[0] + ".config.json") if path.is_file() else None
        return ModelRecord(
            name=name,
            kind=probe.kind,
            architecture=probe.architecture,
            format=fmt,
            path=path,
            size_bytes=size,
            config_dir=sidecar if sidecar is not None and sidecar.exists() else None,
            note=probe.note,
            family=probe.family,
            inpainting=probe.inpainting,
        )

    def _probe_cached(self, path: Path) -> ProbeResult:
        stat = path.stat()
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns, PROBE_RULES]
        hit = self._probe_cache.get(key)
        if hit and hit.get("stamp") == stamp:
            return ProbeResult(
                ModelKind(hit["kind"]),
                Architecture(hit["arch"]),
                hit.get("note", ""),
                hit.get("family", ""),
                bool(hit.get("inpainting")),
            )
        result = probe_file(path)
        self._probe_cache[key] = {
            "stamp": stamp,
            "kind": result.kind.value,
            "arch": result.architecture.value,
            "note": result.note,
            "family": result.family,
            "inpainting": result.inpainting,
        }
        return result

    def _read_probe_cache(self) -> dict[str, dict]:
        try:
            return json.loads(self._probe_cache_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_probe_cache(self) -> None:
        try:
            self._probe_cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._probe_cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._probe_cache), encoding="utf-8")
            os.replace(tmp, self._probe_cache_file)
        except OSError:
            pass  # a read-only cache folder only costs a re-probe next time

    # -- queries ----------------------------------------------------------------------------------

    @property
    def skipped(self) -> tuple[tuple[Path, str], ...]:
        return self._skipped

    def list(self, kind: ModelKind) -> list[ModelRecord]:
        return [r for r in self._records if r.kind is kind]

    def checkpoints(self) -> list[ModelRecord]:
        return self.list(ModelKind.CHECKPOINT)

    def hub_record(self, hub_id: str) -> ModelRecord:
        return ModelRecord(
            name=hub_id,
            kind=ModelKind.CHECKPOINT,
            architecture=Architecture.UNKNOWN,
            format=ModelFormat.HUB,
            path=None,
            hub_id=hub_id,
        )

    def default_checkpoint(self, preferred: str | None = None) -> ModelRecord:
        """The model a request without one uses: the configured default, else the first usable file, else the hub model.

        SDXL refiners are passed over: they only continue an image another model started.
        """
        if preferred:
            return self.find(ModelKind.CHECKPOINT, preferred)
        usable = [r for r in self.checkpoints() if r.usable and r.architecture is not Architecture.SDXL_REFINER]
        if usable:
            return usable[0]
        if self._hub_model:
            return self.hub_record(self._hub_model)
        raise ModelNotFound(self.missing_checkpoint_message())

    def missing_checkpoint_message(self) -> str:
        msg = f"No checkpoint found. Put a .safetensors checkpoint (SD 1.x or SDXL) in {self.folder(ModelKind.CHECKPOINT)}"
        if self._hub_model:
            msg += f", or pick {self._hub_model} to download it from the Hugging Face hub"
        return msg + ", then press Refresh."

    def find(self, kind: ModelKind, name: str) -> ModelRecord:
        """Look a model up by name (relative path without suffix), file name or stem; else a helpful error."""
        candidates = self.list(kind)
        wanted = name.strip().replace("\\", "/")
        for match in (
            lambda r: r.name == wanted,
            lambda r: r.path is not None and r.path.name == wanted,
            lambda r: r.name.lower() == wanted.lower(),
            lambda r: r.name.rsplit("/", 1)[-1].lower() == _strip_suffix(wanted).rsplit("/", 1)[-1].lower(),
        ):
            found = [r for r in candidates if match(r)]
            if found:
                return found[0]
        if kind is ModelKind.CHECKPOINT and looks_like_hub_id(wanted):
            return self.hub_record(wanted)
        raise ModelNotFound(self.not_found_message(kind, name))

    def not_found_message(self, kind: ModelKind, name: str) -> str:
        names = [r.name for r in self.list(kind)]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        msg = f"No {kind.value} named {name!r} in {self.folder(kind)}."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        elif names:
            msg += f" Available: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}."
        return msg


def _strip_suffix(name: str) -> str:
    for suffix in MODEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
