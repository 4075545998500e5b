"""Input images: any kind a user has is made plain RGB and stored by content; what cannot be used is refused,
naming the field, before it is decoded in full."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.images.inputs import InputStore, open_checked

LIMIT = 4_000_000


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def test_rgba_is_composited_on_white_as_a1111_does():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    image = open_checked(encoded(rgba), LIMIT)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 0, 255)  # opaque: as it is
    assert image.getpixel((5, 5)) == (255, 255, 255)  # transparent: white, not the hidden red
    assert image.getpixel((1, 0)) == (127, 127, 127)  # half transparent black over white


def test_greyscale_palette_cmyk_and_16_bit_become_rgb():
    grey = open_checked(encoded(Image.new("L", (4, 4), 77)), LIMIT)
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("P", (4, 4))
    palette.putpalette([10, 20, 30] * 256)
    assert open_checked(encoded(palette), LIMIT).getpixel((1, 1)) == (10, 20, 30)
    cmyk = open_checked(encoded(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100), LIMIT)
    red = np.asarray(cmyk)[0, 0]
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    deep = Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16))  # 16-bit greyscale PNG
    assert open_checked(encoded(deep), LIMIT).getpixel((0, 0)) == (127, 127, 127)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones write it
    turned = open_checked(encoded(image, "JPEG", quality=100, exif=exif.tobytes()), LIMIT)
    assert turned.size == (2, 6)
    assert np.asarray(turned)[0, 1].mean() > 200  # the white corner is now top right


@pytest.mark.parametrize(
    "data, words",
    [
        (b"hello, not an image", "not an image"),
        (b"", "no image data"),
    ],
)
def test_what_is_not_an_image_is_refused_naming_the_field(data, words):
    with pytest.raises(InvalidRequest, match=words) as info:
        open_checked(data, LIMIT, field="init_images")
    assert info.value.field == "init_images"


def test_truncated_data_too_large_and_bombs_are_refused():
    whole = encoded(Image.effect_noise((64, 64), 40).convert("RGB"))
    with pytest.raises(InvalidRequest, match="truncated") as info:
        open_checked(whole[: len(whole) // 2], LIMIT)
    assert info.value.field == "image"
    with pytest.raises(InvalidRequest, match="limit is 0.001") as info:
        open_checked(whole, 1000)
    # a bomb: a tiny file whose header promises 40000 x 40000 pixels; refused from the header, never decoded
    bomb = encoded(Image.new("1", (40000, 40000)))
    assert len(bomb) < 300_000
    with pytest.raises(InvalidRequest, match="bomb|megapixels"):
        open_checked(bomb, LIMIT)


def test_the_store_is_content_addressed_and_atomic(tmp_path):
    store = InputStore(tmp_path, LIMIT)
    image = Image.effect_noise((16, 8), 30).convert("RGB")
    first = store.put(encoded(image, "WEBP", lossless=True))
    again = store.put(encoded(image))  # the same pixels sent in another format: the same file
    assert first.sha256 == again.sha256 and first.path == again.path
    assert first.path == tmp_path / "inputs" / f"{first.sha256}.png"
    assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.sha256
    assert [p.name for p in (tmp_path / "inputs").iterdir()] == [first.path.name]  # no temp files left
    assert np.array_equal(np.asarray(store.get(first.sha256)), np.asarray(image))
    with Image.open(first.path) as stored:
        assert "parameters" not in stored.info  # an input carries no generation settings of its own
    with pytest.raises(InvalidRequest) as info:
        store.get("0" * 64)
    assert info.value.field == "input.image"
    with pytest.raises(InvalidRequest):
        store.path("../../etc/passwd")


def test_stored_inputs_are_not_results(tmp_path):
    from pipelines.outputs.store import iter_images

    InputStore(tmp_path, LIMIT).put_image(Image.new("RGB", (8, 8)))
    (tmp_path / "2026-01-01").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "2026-01-01" / "result.png")
    assert [p.name for p in iter_images(tmp_path)] == ["result.png"]  # the gallery and the history rebuild skip inputs/
