"""Text encoders of single-file checkpoints that store CLIP without its `text_model.` level.

Early SD 1.x files (and files re-saved by old tools) hold `cond_stage_model.transformer.encoder.layers.…`
where most hold `cond_stage_model.transformer.text_model.encoder.layers.…`. diffusers recognizes a CLIP text
encoder in a single file only by the `text_model.` spelling and refuses the others ("weights for this
component appear to be missing"). For such files the text encoder is built here from the same tensors under
the usual spelling, by the function `from_single_file` itself uses, and handed to `from_single_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from pipelines.loading.probe import SAFETENSORS_SUFFIXES, load_pickle_state_dict

ROOT = "text_model."

# where a single file keeps a CLIP-L text encoder -> the pipeline component it becomes
CLIP_PREFIXES = {
    "cond_stage_model.transformer.": "text_encoder",  # SD 1.x
    "conditioner.embedders.0.transformer.": "text_encoder",  # SDXL's first encoder
}


def rootless_prefixes(keys: Iterable[str]) -> list[str]:
    """The CLIP prefixes under which these keys hold a text encoder without the `text_model.` level."""
    keys = list(keys)
    return [p for p in CLIP_PREFIXES if any(k.startswith(p) for k in keys) and not any(k.startswith(p + ROOT) for k in keys)]


def rootless_text_encoders(
    path: Path, keys: Iterable[str], config_dir: Path, dtype: torch.dtype, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """{component: text encoder} for each CLIP the file stores without `text_model.`; {} for usual files.

    `state` is the file's tensors when they are loaded already (pickles); safetensors are read lazily.
    """
    prefixes = rootless_prefixes(keys)
    if not prefixes:
        return {}
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    out: dict[str, Any] = {}
    for prefix in prefixes:
        tensors = {prefix + ROOT + key[len(prefix) :]: value for key, value in _tensors(path, prefix, state).items()}
        component = CLIP_PREFIXES[prefix]
        out[component] = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, tensors, config=str(config_dir), subfolder=component, torch_dtype=dtype, local_files_only=True
        )
    return out


def _tensors(path: Path, prefix: str, state: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    if state is None and path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    state = state if state is not None else load_pickle_state_dict(path)
    return {k: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
