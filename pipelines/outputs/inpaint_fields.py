"""The infotext fields of an inpaint, in A1111's words (Mask blur, Mask mode, Masked content, Inpaint area, Masked
area padding, Noise multiplier) and ours for what A1111 has no word for (Inpaint method, Outpaint). The mask's
hash is in the JSON record, beside the input image's."""

from __future__ import annotations

from pipelines.types import ImageParams


def _num(value: float) -> str:
    return f"{value:g}"


def mask_fields(params: ImageParams) -> dict[str, str]:
    """{} for a picture made without a mask (and with A1111's default noise)."""
    if params.masked_content is None:
        return {"Noise multiplier": _num(params.noise_multiplier)} if params.noise_multiplier is not None else {}
    fields: dict[str, str] = {"Inpaint method": params.input_mode or ""}
    if params.mask_blur_x == params.mask_blur_y:
        fields["Mask blur"] = _num(params.mask_blur_x or 0)
    else:
        fields["Mask blur x"], fields["Mask blur y"] = _num(params.mask_blur_x or 0), _num(params.mask_blur_y or 0)
    if params.mask_inverted:
        fields["Mask mode"] = "Inpaint not masked"
    fields["Masked content"] = params.masked_content
    if params.inpaint_padding is not None:
        fields["Inpaint area"] = "Only masked"
        fields["Masked area padding"] = _num(params.inpaint_padding)
    if params.outpaint:
        fields["Outpaint"] = params.outpaint
        fields["Outpaint by"] = _num(params.outpaint_fraction or 0)
    if params.noise_multiplier is not None:
        fields["Noise multiplier"] = _num(params.noise_multiplier)
    return fields
