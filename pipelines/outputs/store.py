"""The output folder: where generated images are written, and how, so that none is ever lost or half-written.

Images go to `output_dir/YYYY-MM-DD/` (local date, as people browse them by day) under names that sort in
the order they were made: `YYYYmmdd-HHMMSS-NNNN-<seed>.<ext>`, NNNN counting up within the second. Several
threads or processes (a second Easel, the API) may save in the same second, so a name is reserved by creating
its temp file with O_EXCL: the file system, not a lock in this process, decides who gets which number.

Writes are atomic: bytes go to a hidden temp file (`.NAME.tmp`) in the same folder, are flushed and fsynced,
then `os.replace`d onto the final name. A crash leaves at most a hidden `.tmp` file, which is not an image
name, so neither the gallery nor the history rebuild ever sees a half-written image.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from PIL import Image

from pipelines.images.inputs import INPUT_FOLDER
from pipelines.outputs.metadata import EXTENSIONS, encode_image, normalize_format
from pipelines.types import GenerationRequest, ImageParams

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TEMP_SUFFIX = ".tmp"
_RE_STAMP = re.compile(r"^\.?(\d{8}-\d{6})-(\d+)")
_MAX_ATTEMPTS = 100000


def is_image_file(path: Path) -> bool:
    """An image we wrote or a user put there; hidden files (our temp files among them) never count."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def iter_images(output_dir: Path) -> Iterator[Path]:
    """Every result under `output_dir` (not the stored input images), oldest name first (our names sort by time)."""
    root = Path(output_dir)
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == root  # input images (outputs/inputs/) are not results
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top and d == INPUT_FOLDER))
        for name in sorted(files):
            path = Path(folder) / name
            if is_image_file(path):
                yield path


def time_from_name(path: Path) -> float | None:
    """The local time encoded in one of our file names, as a timestamp; None for other names."""
    match = _RE_STAMP.match(Path(path).name)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; directories cannot be opened for this on Windows."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ImageStore:
    """Saves images with their metadata into dated folders; safe to share between threads and processes."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}  # per folder+second: where this process starts looking (saves listdirs)

    def folder_for(self, when: datetime) -> Path:
        return self.output_dir / when.strftime("%Y-%m-%d")

    def save(self, image: Image.Image, params: ImageParams, request: GenerationRequest | None = None,
             fmt: str | None = None, *, when: datetime | None = None) -> Path:
        """Write one image atomically and return its final path.

        `fmt` defaults to the request's output_format. The image is encoded before any name is reserved,
        so a failing encoder leaves nothing behind.
        """
        fmt = normalize_format(fmt or (request.output_format if request is not None else "png"))
        data = encode_image(image, params, request, fmt)
        when = when or datetime.now()
        folder = self.folder_for(when)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = when.strftime("%Y%m%d-%H%M%S")
        fd, temp, final = self._reserve(folder, stamp, f"-{params.seed}{EXTENSIONS[fmt]}")
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        _fsync_dir(folder)
        return final

    def _reserve(self, folder: Path, stamp: str, tail: str) -> tuple[int, Path, Path]:
        """Claim the next free number for this second: O_EXCL-create its temp file, then check no final
        image already uses that number (one may have been finished and renamed since we looked)."""
        key = f"{folder}/{stamp}"
        with self._lock:
            counter = self._next.get(key) or self._first_free(folder, stamp)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        for _ in range(_MAX_ATTEMPTS):
            base = f"{stamp}-{counter:04d}"
            temp = folder / f".{base}{TEMP_SUFFIX}"
            try:
                fd = os.open(temp, flags, 0o644)
            except FileExistsError:
                counter += 1
                continue
            if any(name.startswith(base + "-") for name in os.listdir(folder)):
                os.close(fd)
                os.unlink(temp)
                counter += 1
                continue
            with self._lock:
                self._next[key] = max(self._next.get(key, 0), counter + 1)
                if len(self._next) > 64:  # only the current second matters
                    self._next = {key: self._next[key]}
            return fd, temp, folder / f"{base}{tail}"
        raise OSError(f"No free file name in {folder} for {stamp}")

    @staticmethod
    def _first_free(folder: Path, stamp: str) -> int:
        used = [int(m.group(2)) for name in os.listdir(folder)
                if (m := _RE_STAMP.match(name)) and m.group(1) == stamp]
        return max(used, default=0) + 1

    def images(self) -> Iterator[Path]:
        return iter_images(self.output_dir)

    def remove_stale_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files a crash left behind (they are never shown, this only frees the space)."""
        removed = 0
        cutoff = time.time() - older_than_s
        for folder, _dirs, files in os.walk(self.output_dir):
            for name in files:
                path = Path(folder) / name
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    try:
                        if path.stat().st_mtime < cutoff:
                            path.unlink()
                            removed += 1
                    except OSError:
                        pass
        return removed
