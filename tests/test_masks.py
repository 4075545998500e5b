"""Mask pixel work without a model: masks as users hand them in, A1111's blur, fill, crop region and overlay,
Fooocus's outpaint canvas, and the whole preparation (masking.masked_input) with its paste back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.errors import InvalidRequest
from pipelines.generation.masking import Fill, MaskPlan, masked_input, plan_mask
from pipelines.images import masks, regions
from pipelines.images.inputs import InputStore
from pipelines.images.regions import Box
from pipelines.images.resize import ResizeMode
from pipelines.types import ImageInput


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def values(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def plan(**changes) -> MaskPlan:
    fields = dict(
        mask="0" * 64,
        fill=Fill.ORIGINAL,
        blur_x=0,
        blur_y=0,
        invert=False,
        only_masked=False,
        padding=32,
        outpaint=(),
        fraction=0.3,
        framed=False,
    )
    return MaskPlan(**{**fields, **changes})


# -- masks as handed in


def test_a_brush_layer_is_masked_where_painted_and_a_picture_where_light():
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse((5, 5, 20, 20), fill=(255, 0, 0, 255))  # a red stroke: light or not, it is paint
    mask = masks.binary_mask(layer)
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}
    assert np.array_equal(np.asarray(mask) == 255, np.asarray(layer.getchannel("A")) > 128)
    grey = Image.fromarray(np.array([[0, 128, 129, 255]], dtype=np.uint8), "L").convert("RGB")
    assert np.asarray(masks.binary_mask(grey)).tolist() == [[0, 0, 255, 255]]  # A1111: above 128
    opaque = Image.new("RGBA", (4, 4), (255, 255, 255, 255))  # all opaque: its colour decides
    assert np.asarray(masks.binary_mask(opaque)).min() == 255


def test_masks_are_stored_binary_by_content_and_refused_when_not_images(tmp_path):
    store = InputStore(tmp_path, 1_000_000)
    layer = Image.new("LA", (16, 16), (0, 0))
    layer.paste((255, 255), (4, 4, 12, 12))
    stored = store.put_mask(png(layer), field="mask")
    assert store.get_mask(stored.sha256).getbbox() == (4, 4, 12, 12)
    assert store.put_mask_image(store.get_mask(stored.sha256)).sha256 == stored.sha256  # the same mask, one file
    with pytest.raises(InvalidRequest) as info:
        store.put_mask(b"not an image", field="mask")
    assert info.value.field == "mask"
    with pytest.raises(InvalidRequest) as info:
        store.get_mask("f" * 64)
    assert info.value.field == "input.mask"


# -- blur, fill, overlay


def test_blur_is_a1111s_gaussian_along_x_then_y():
    kernel = masks.gaussian_kernel(4)
    assert len(kernel) == 2 * int(2.5 * 4 + 0.5) + 1 and kernel.sum() == pytest.approx(1.0)
    line = Image.new("L", (64, 9), 0)
    line.paste(255, (32, 0, 33, 9))  # a one-pixel vertical line
    blurred = np.asarray(masks.blur(line, 4, 0)).astype(float)
    centre = len(kernel) // 2
    assert np.array_equal(blurred[4, 32 - centre : 33 + centre], np.rint(kernel * 255))  # the kernel itself
    assert np.array_equal(blurred, blurred[:1].repeat(9, 0))  # x only: nothing moved along y
    assert np.array_equal(np.asarray(masks.blur(line, 0, 0)), np.asarray(line))
    vertical = np.asarray(masks.blur(line.transpose(Image.Transpose.TRANSPOSE), 0, 4))
    assert np.array_equal(vertical, np.asarray(masks.blur(line, 4, 0)).T)


def test_fill_paints_the_masked_area_from_around_it_and_keeps_the_rest():
    image = Image.new("RGB", (64, 32), (200, 0, 0))
    image.paste((0, 0, 200), (32, 0, 64, 32))
    image.paste((0, 255, 0), (24, 8, 40, 24))  # what the mask hides must not show through
    mask = Image.new("L", (64, 32), 0)
    mask.paste(255, (24, 8, 40, 24))
    filled = masks.fill(image, mask)
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(filled)[keep], np.asarray(image)[keep])
    inside = np.asarray(filled)[~keep].astype(int)
    assert inside[:, 1].max() < 20  # no green left
    assert inside[:, 0].mean() > 60 and inside[:, 2].mean() > 60  # red and blue from both sides


def test_overlay_keeps_the_original_where_the_mask_is_zero_and_mixes_between():
    old, new = noise_picture(16, 16, 1), noise_picture(16, 16, 2)
    mask = Image.fromarray(np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1)), "L")
    out = values(masks.overlay(new, old, mask))
    assert np.array_equal(out[:, 0], values(old)[:, 0]) and np.array_equal(out[:, -1], values(new)[:, -1])
    alpha = np.asarray(mask, dtype=float)[..., None] / 255
    assert np.abs(out - (values(new) * alpha + values(old) * (1 - alpha))).max() <= 0.5


# -- regions and outpaint


def test_the_crop_region_is_a1111s():
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (100, 200, 228, 232))  # A1111's docstring: a 128x32 region for a 512x512 picture ...
    box = regions.mask_box(mask)
    assert box == Box(100, 200, 228, 232)
    assert regions.expand_box(box, 512, 512, 512, 512) == Box(100, 152, 228, 280)  # ... becomes 128x128
    assert regions.mask_box(mask, padding=150) == Box(0, 50, 378, 382)  # padding, within the picture
    edge = regions.expand_box(Box(0, 500, 128, 512), 512, 512, 512, 512)
    assert edge == Box(0, 384, 128, 512)  # shifted back inside at the bottom
    assert regions.mask_box(Image.new("L", (8, 8))) is None
    assert regions.native_size(Box(0, 0, 100, 50), 512) == (728, 360)  # the region's shape at 512x512's pixels


def test_outpaint_grows_the_chosen_sides_with_the_edge_and_masks_the_new_area():
    image = noise_picture(96, 80, 3)
    grown, mask = regions.outpaint(image, Image.new("L", (96, 80)), ("left", "top"), 0.3)
    assert grown.size == mask.size == (96 + 28, 80 + 24)
    assert np.array_equal(np.asarray(grown)[24:, 28:], np.asarray(image))  # the original, where it was
    assert np.array_equal(np.asarray(grown)[30, :28], np.repeat(np.asarray(image)[6, :1], 28, 0))  # the edge repeated
    m = np.asarray(mask)
    assert (m[:24] == 255).all() and (m[:, :28] == 255).all() and (m[24:, 28:] == 0).all()
    assert regions.outpaint_margins(100, 50, ("right", "bottom"), 0.5) == Box(0, 0, 50, 25)


# -- the whole preparation and the way back


def test_a_whole_picture_inpaint_comes_back_as_the_canvas_where_nothing_was_made():
    image = noise_picture(90, 75, 4)  # not a multiple of 8: worked at 88x72, put back at 90x75
    mask = Image.new("L", (90, 75), 0)
    mask.paste(255, (30, 20, 60, 50))
    ready = masked_input(plan(), image, mask, (90, 75), ResizeMode.JUST_RESIZE)
    assert ready.work_size(64) == (88, 72) and ready.region is None
    work, work_mask = ready.work_pair((88, 72), Fill.ORIGINAL)
    out = ready.paste_back(Image.new("RGB", work.size, (0, 255, 0)))
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(out)[keep], np.asarray(image)[keep])
    assert (np.asarray(out)[~keep] == (0, 255, 0)).all()


def test_only_masked_works_on_the_region_at_native_size_and_pastes_it_back():
    image = noise_picture(256, 256, 5)
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (100, 120, 116, 128))  # 16x8
    ready = masked_input(plan(only_masked=True, padding=8), image, mask, (256, 256), ResizeMode.JUST_RESIZE)
    assert ready.region == Box(92, 112, 124, 136) and ready.work_size(64) == (72, 64)  # 32x24 at about 64x64 pixels (64 at least)
    work, work_mask = ready.work_pair((72, 64), Fill.FILL)
    assert work.size == work_mask.size == (72, 64) and work_mask.mode == "L"
    out = ready.paste_back(Image.new("RGB", (72, 64), (0, 255, 0)))
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(out)[keep], np.asarray(image)[keep])
    assert (np.asarray(out)[~keep] == (0, 255, 0)).all()


def test_a1111s_img2img_frames_picture_and_mask_and_widens_the_region_to_the_request():
    image = noise_picture(128, 64, 6)
    mask = Image.new("L", (64, 32), 0)  # half the size: stretched to the picture
    mask.paste(255, (8, 8, 16, 16))
    ready = masked_input(plan(only_masked=True, padding=0, framed=True), image, mask, (96, 96), ResizeMode.JUST_RESIZE)
    assert ready.canvas.size == (96, 96) and ready.target == (96, 96)
    assert ready.region.width == ready.region.height  # widened to the request's shape
    with pytest.raises(InvalidRequest) as info:
        masked_input(plan(), image, Image.new("L", (128, 64)), (128, 64), ResizeMode.JUST_RESIZE)
    assert info.value.field == "input.mask"
    inverted = masked_input(plan(invert=True), image, Image.new("L", (128, 64)), (128, 64), ResizeMode.JUST_RESIZE)
    assert np.asarray(inverted.mask).min() == 255  # nothing painted, inverted: everything


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"inpaint_fill": "paint"}, "input.inpaint_fill"),
        ({"outpaint": ("up",)}, "input.outpaint"),
        ({"mask_blur_x": -1}, "input.mask_blur_x"),
        ({"mask_blur_y": 2.5}, "input.mask_blur_y"),
        ({"only_masked_padding": 1000}, "input.only_masked_padding"),
        ({"outpaint_fraction": 3}, "input.outpaint_fraction"),
    ],
)
def test_mask_settings_out_of_range_name_their_field(changes, field):
    part = ImageInput("0" * 64, mask="1" * 64, **changes)
    with pytest.raises(InvalidRequest) as info:
        plan_mask(part, "Inpaint", "fill", False, framed=False)
    assert info.value.field == field
    with pytest.raises(InvalidRequest) as info:
        plan_mask(ImageInput("0" * 64, outpaint=("left",)), "Image to image", "fill", False, framed=True)
    assert info.value.field == "input.outpaint"
