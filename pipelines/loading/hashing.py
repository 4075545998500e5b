"""File hashes as A1111 and CivitAI write them, cached so a multi-GB file is read once.

- Model hash ("AutoV2"): the first 10 hex digits of the sha256 of the whole file.
- LoRA hash ("AutoV3", A1111's `Lora hashes`): sha256 of a safetensors file's tensor data, i.e. skipping
  the header, so that editing a LoRA's metadata does not change it; first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: Path, skip_safetensors_header: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if skip_safetensors_header:
            length = int.from_bytes(f.read(8), "little")
            f.seek(8 + length)
        while chunk := f.read(_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_folder(path: Path) -> str:
    """A stable hash for a diffusers folder: its weight files in name order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin")):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


class HashCache:
    """sha256 values keyed by path, size and mtime, kept in one JSON file across restarts."""

    def __init__(self, cache_file: Path):
        self._file = cache_file
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        try:
            self._data = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self._data = {}

    def model_hash(self, path: Path) -> str:
        """Full sha256 of a checkpoint file or diffusers folder; A1111 shows the first 10 digits."""
        return self._get(path, "sha256", lambda: sha256_folder(path) if path.is_dir() else sha256_file(path))

    def lora_hash(self, path: Path) -> str:
        """sha256 of the tensor data (AutoV3); A1111 shows the first 12 digits."""
        is_st = path.suffix.lower() == ".safetensors"
        return self._get(path, "addnet" if is_st else "sha256", lambda: sha256_file(path, skip_safetensors_header=is_st))

    def known_model_hash(self, path: Path) -> str | None:
        """The cached sha256 of a checkpoint when it was computed before for this size and mtime; never reads the file.

        Listings (the API's sd-models, options) show a hash only once it is known, as A1111 does, so that
        listing a large collection does not hash every file.
        """
        try:
            stat = path.stat()
        except OSError:
            return None
        with self._lock:
            entry = self._data.get(str(path.resolve()))
        if entry and entry.get("stamp") == [stat.st_size, stat.st_mtime_ns]:
            return entry.get("sha256")
        return None

    def _get(self, path: Path, kind: str, compute) -> str:
        stat = path.stat()
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            entry = self._data.get(key)
            if entry and entry.get("stamp") == stamp and kind in entry:
                return entry[kind]
        value = compute()
        with self._lock:
            entry = self._data.get(key)
            if not entry or entry.get("stamp") != stamp:
                entry = {"stamp": stamp}
            entry[kind] = value
            self._data[key] = entry
            self._save()
        return value

    def _save(self) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=0), encoding="utf-8")
        os.replace(tmp, self._file)
