"""Step caching (DeepCache, Ma et al. 2023): reuse the UNet's deep features on alternate steps.

Between two denoising steps the deep, low-resolution part of the UNet changes little, while the shallow
full-resolution blocks carry the detail. A full step runs the whole UNet and keeps the input of its last
up block (everything the deep blocks computed); a cached step runs only the time embedding, `conv_in`, the
first down block and the last up block on that kept feature. On SD 1.5 a cached step costs about a fifth
of a full one, so with interval 2 four steps cost about 2.4 full steps. It is an approximation (the image
changes a little), so it is a named switch, recorded in the image's metadata.

Written here rather than taken from the `DeepCache` package, which was last released in 2023 and patches
an older diffusers; the shallow pass below calls the UNet's own blocks and helpers, so it follows diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# UNet features the shallow pass does not reproduce; a call using any of them always runs the full UNet.
UNSUPPORTED = (
    "class_labels",
    "attention_mask",
    "encoder_attention_mask",
    "down_block_additional_residuals",
    "mid_block_additional_residual",
    "down_intrablock_additional_residuals",
)


@dataclass
class StepCache:
    """One image's cache: which UNet calls run in full, and the deep feature of the last full one.

    `interval` N: calls 0, N, 2N, ... run the full UNet, the others reuse its deep feature (N <= 1: off).
    Calls, not sampler steps, are counted: samplers that evaluate the UNet twice per step (Heun) reuse
    within the step.
    """

    interval: int
    calls: int = 0
    full_calls: int = 0

    def reuse_now(self, deep: torch.Tensor | None, sample: torch.Tensor | None) -> bool:
        """Whether this call reuses `deep` (the runner's kept feature); counts the call either way."""
        index = self.calls
        self.calls += 1
        reuse = self.interval > 1 and index % self.interval != 0 and deep is not None and sample is not None
        reuse = reuse and deep.shape[0] == sample.shape[0] and deep.shape[-2:] == _deep_size(sample)
        self.full_calls += not reuse
        return reuse


def _deep_size(sample: torch.Tensor) -> torch.Size:
    return sample.shape[-2:]  # the last up block works at the latent's own size


def supported(unet: Any, kwargs: dict[str, Any]) -> bool:
    """Whether the shallow pass can stand in for this call (an SD/SDXL UNet called as the pipelines call it)."""
    if any(kwargs.get(name) is not None for name in UNSUPPORTED):
        return False
    cross = kwargs.get("cross_attention_kwargs")
    if cross and "gligen" in cross:
        return False
    return unet.config.addition_embed_type in (None, "text_time") and len(unet.up_blocks) == len(unet.down_blocks)


def shallow_forward(
    unet: Any,
    deep: torch.Tensor,
    sample: torch.Tensor,
    timestep: Any,
    encoder_hidden_states: torch.Tensor,
    timestep_cond: torch.Tensor | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    added_cond_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    **_: Any,
) -> Any:
    """The UNet's output from its shallowest blocks and the deep feature `deep` of an earlier full step.

    The same operations as UNet2DConditionModel.forward on that path (embedding, conv_in, first down
    block, last up block, output convolution), through its own modules and helpers.
    """
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs or {})
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    encoder_hidden_states = unet.process_encoder_hidden_states(
        encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs or {}
    )
    sample = unet.conv_in(sample)
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    cross = dict(encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=cross_attention_kwargs)
    if getattr(first, "has_cross_attention", False):
        _, res = first(hidden_states=sample, temb=emb, **cross)
    else:
        _, res = first(hidden_states=sample, temb=emb)
    skips = ((sample, *res))[: len(last.resnets)]  # what the full pass hands the last up block
    if getattr(last, "has_cross_attention", False):
        sample = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips, **cross)
    else:
        sample = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips)
    if unet.conv_norm_out:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    sample = unet.conv_out(sample)
    if not return_dict:
        return (sample,)
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample)
