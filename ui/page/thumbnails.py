"""Small JPEG copies of output images for the History grid, so a page of SDXL images loads in a blink.

Thumbnails are derived data: kept under the cache folder, named after the image's path, size and mtime
(a changed image gets a new thumbnail), and re-made whenever missing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image, ImageOps

THUMB_SIDE = 320


def thumbnail(path: Path, cache_dir: Path, side: int = THUMB_SIDE) -> Path | None:
    """The thumbnail of `path` (made now if needed); None when the image is gone or unreadable."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{side}".encode()).hexdigest()
    target = Path(cache_dir) / "thumbnails" / key[:2] / f"{key}.jpg"
    if target.exists():
        return target
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((side, side))
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            image.convert("RGB").save(temp, "JPEG", quality=85)
            os.replace(temp, target)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return target
