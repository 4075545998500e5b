"""Downloading diffusers models from the Hugging Face hub, with progress, and a clear error offline.

Only what the pipeline needs is fetched: the configs, the tokenizers and one copy of each weight file
(the fp16 variant where the repo has one), never the duplicate single-file checkpoint many repos also
carry at their root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pipelines.errors import HubDownloadError

ProgressFn = Callable[[str, float | None], None]  # message, fraction done (None when unknown)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".ot", ".gguf")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def choose_files(repo_files: list[str]) -> tuple[list[str], str | None]:
    """Configs and tokenizer files, plus one safetensors file per component; returns (files, variant)."""
    chosen = [f for f in repo_files if f == "model_index.json" or ("/" in f and not f.endswith(_WEIGHT_SUFFIXES))]
    weights = [f for f in repo_files if "/" in f and f.endswith(".safetensors")]
    fp16 = [f for f in weights if ".fp16." in f]
    variant = "fp16" if fp16 else None
    if variant:
        components_with_fp16 = {f.split("/", 1)[0] for f in fp16}
        weights = fp16 + [f for f in weights if ".fp16." not in f and f.split("/", 1)[0] not in components_with_fp16]
    if not weights:
        weights = [f for f in repo_files if "/" in f and f.endswith(".bin") and ".fp16." not in f]
    return chosen + weights, variant


def cached_snapshot(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """The local copy of a hub model downloaded earlier, if complete enough to load."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except Exception:
        return None
    return path if (path / "model_index.json").exists() else None


def download(repo_id: str, progress: ProgressFn, cache_dir: Path | None = None) -> tuple[Path, str | None]:
    """Fetch a diffusers model; returns its local folder and the weight variant chosen."""
    local = cached_snapshot(repo_id, cache_dir)
    if local is not None:
        return local, "fp16" if any(local.rglob("*.fp16.safetensors")) else None
    if offline():
        raise HubDownloadError(
            f"{repo_id} is not downloaded yet and the hub is switched off (HF_HUB_OFFLINE=1). "
            f"Connect to the internet and unset HF_HUB_OFFLINE, or put a checkpoint file in models/checkpoints."
        )
    from huggingface_hub import HfApi, snapshot_download

    try:
        files, variant = choose_files(HfApi().list_repo_files(repo_id))
        if "model_index.json" not in files:
            raise HubDownloadError(f"{repo_id} is not a diffusers pipeline (it has no model_index.json).")
        progress(f"Downloading {repo_id}", 0.0)
        path = snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=files, tqdm_class=_progress_tqdm(repo_id, progress))
    except HubDownloadError:
        raise
    except Exception as exc:  # network errors come in many classes; all mean the same to the user
        raise HubDownloadError(_explain(repo_id, exc)) from exc
    return Path(path), variant


def _explain(repo_id: str, exc: Exception) -> str:
    name = type(exc).__name__
    if "RepositoryNotFound" in name or "404" in str(exc):
        return f"There is no model {repo_id!r} on the Hugging Face hub (or it is private)."
    if "Gated" in name or "401" in str(exc) or "403" in str(exc):
        return f"{repo_id} needs you to accept its licence on huggingface.co and log in (huggingface-cli login)."
    return (
        f"Could not download {repo_id} from the Hugging Face hub: no connection ({name}). "
        f"Check the internet connection, or put a checkpoint file in models/checkpoints instead."
    )


def _progress_tqdm(repo_id: str, progress: ProgressFn):
    """A tqdm class that reports byte progress of the whole snapshot to `progress`."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            if self.unit == "B" and self.total:
                done_mb, total_mb = self.n / 1e6, self.total / 1e6
                progress(f"Downloading {repo_id}: {done_mb:,.0f} / {total_mb:,.0f} MB", min(1.0, self.n / self.total))
            return out

    return Reporting
