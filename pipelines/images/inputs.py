"""Input images: checked and normalised once when a user hands one in, then stored by content.

Requests stay JSON-able: they carry the sha256 of the stored file, never pixels. A file is written once to
`output_dir/inputs/<sha256>.png` (atomically: temp file, fsync, rename), so the same upload twice is one file,
History can show what an image was made from, and a job re-run later finds its input again.

Whatever a user has is accepted and made plain RGB, as A1111 does: EXIF rotation applied (phone photos),
transparency composited on white, greyscale, palette, CMYK and 16-bit converted. What is not an image,
truncated data, a decompression bomb or a picture beyond the configured size is refused with a message
naming the field, before anything is decoded in full.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import InvalidRequest

INPUT_FOLDER = "inputs"
BACKGROUND = (255, 255, 255)  # A1111's img2img_background_color default: transparent areas become white
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredInput:
    sha256: str
    path: Path
    width: int
    height: int


def open_checked(data: bytes, max_pixels: int, field: str = "image") -> Image.Image:
    """Decode `data` into a plain RGB image, or raise InvalidRequest(field) saying what is wrong with it."""
    return to_rgb(decode_checked(data, max_pixels, field))


def decode_checked(data: bytes, max_pixels: int, field: str = "image") -> Image.Image:
    """Decode `data` as it is (its mode and transparency kept), or raise InvalidRequest(field)."""
    if not data:
        raise InvalidRequest(f"{field}: no image data was given.", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(f"{field}: refused as a decompression bomb ({exc}).", field=field) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"{field}: the data is not an image (PNG, JPEG or WebP expected).", field=field) from exc
    width, height = image.size
    if width * height > max_pixels:  # read from the header: nothing was decoded yet
        raise InvalidRequest(
            f"{field}: {width}x{height} is {width * height / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:g} (--max-input-megapixels).",
            field=field,
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(f"{field}: the image data is truncated or damaged ({exc}).", field=field) from exc
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, transparency flattened on white, any mode and bit depth as 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float greyscale
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB") if image.mode != "RGB" else image


def _encoded(image: Image.Image) -> tuple[bytes, str]:
    out = io.BytesIO()
    image.save(out, "PNG")  # no text chunks: an input carries no generation settings of its own
    data = out.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class InputStore:
    """Input images under `output_dir/inputs/`, addressed by the sha256 of the stored PNG file."""

    def __init__(self, output_dir: Path, max_pixels: int):
        self.folder = Path(output_dir) / INPUT_FOLDER
        self.max_pixels = int(max_pixels)

    def put(self, data: bytes, field: str = "image") -> StoredInput:
        """Check, normalise and store uploaded bytes (InvalidRequest naming `field` when they cannot be used)."""
        return self.put_image(open_checked(data, self.max_pixels, field))

    def put_file(self, path: Path | str, field: str = "image", mask: bool = False) -> StoredInput:
        """An uploaded file stored as an input image, or as a mask when `mask`."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"{field}: {path} cannot be read ({exc.strerror}).", field=field) from exc
        return self.put_mask(data, field) if mask else self.put(data, field)

    def put_image(self, image: Image.Image) -> StoredInput:
        """Store an image that is already RGB (a result sent back in); the same pixels give the same file."""
        return self._store(to_rgb(image))

    def put_mask(self, data: bytes, field: str = "mask") -> StoredInput:
        """Check and store an inpainting mask (white or opaque = change), made binary ("L", 0 and 255)."""
        from pipelines.images.masks import binary_mask

        return self._store(binary_mask(ImageOps.exif_transpose(decode_checked(data, self.max_pixels, field))))

    def put_mask_image(self, image: Image.Image) -> StoredInput:
        """Store a mask made in memory (a brush layer, a test's drawing), made binary."""
        from pipelines.images.masks import binary_mask

        return self._store(binary_mask(image))

    def digest_of(self, path: Path | str) -> str | None:
        """The sha256 the picture in `path` would be stored under (nothing is written); None if it is unreadable."""
        try:
            return _encoded(open_checked(Path(path).read_bytes(), self.max_pixels))[1]
        except (OSError, InvalidRequest):
            return None

    def _store(self, image: Image.Image) -> StoredInput:
        data, digest = _encoded(image)
        path = self.path(digest)
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{digest}.{os.getpid()}.tmp")
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        return StoredInput(digest, path, image.width, image.height)

    def path(self, sha256: str, field: str = "input.image") -> Path:
        if not _HASH.match(str(sha256)):
            raise InvalidRequest(f"{field} must be the sha256 of a stored input image, got {sha256!r}.", field=field)
        return self.folder / f"{sha256}.png"

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str, field: str = "input.image") -> tuple[int, int]:
        """(width, height) of a stored input, from its header; InvalidRequest (`field`) when it is not there."""
        try:
            with Image.open(self.path(sha256, field)) as image:
                return image.size
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"The input {sha256[:12]} is not in {self.folder}.", field=field) from exc

    def get_mask(self, sha256: str) -> Image.Image:
        """A stored mask as "L" (0 and 255); InvalidRequest (field input.mask) when it is not there."""
        try:
            with Image.open(self.path(sha256, "input.mask")) as image:
                return image.convert("L")
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"The mask {sha256[:12]} is not in {self.folder} (or unreadable).", field="input.mask") from exc

    def get(self, sha256: str) -> Image.Image:
        """The stored image as RGB; InvalidRequest (field input.image) when it is not there."""
        path = self.path(sha256)
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise InvalidRequest(
                f"The input image {sha256[:12]} is not in {self.folder} (or unreadable).", field="input.image"
            ) from exc
