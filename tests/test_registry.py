"""Finding models where users keep them: our folders, A1111's and ComfyUI's."""

from __future__ import annotations

import pytest

from pipelines.errors import ModelNotFound
from pipelines.loading.registry import ModelRegistry, looks_like_hub_id
from pipelines.types import Architecture, ModelFormat, ModelKind
from tests.support.paths import link_or_copy


def test_our_layout_lists_all_formats(tiny_models_dir, tmp_path):
    reg = ModelRegistry(tiny_models_dir, tmp_path / "cache")
    reg.refresh()
    found = {(r.name, r.architecture, r.format) for r in reg.checkpoints()}
    assert found == {
        ("tiny-sd15", Architecture.SD1, ModelFormat.SINGLE_FILE),
        ("tiny-sdxl", Architecture.SDXL, ModelFormat.SINGLE_FILE),
        ("tiny-sd15-diffusers", Architecture.SD1, ModelFormat.DIFFUSERS),
        ("tiny-sdxl-diffusers", Architecture.SDXL, ModelFormat.DIFFUSERS),
        ("tiny-sdxl-refiner", Architecture.SDXL_REFINER, ModelFormat.SINGLE_FILE),
    }
    sd15 = reg.find(ModelKind.CHECKPOINT, "tiny-sd15")
    assert sd15.config_dir is not None and sd15.config_dir.name == "tiny-sd15.config.json"


def test_a_refiner_is_never_the_default_model(tmp_path, tiny_sdxl_refiner_file, tiny_sdxl_file):
    models = tmp_path / "models"
    link_or_copy(tiny_sdxl_refiner_file, models / "checkpoints" / "a-refiner.safetensors")
    reg = ModelRegistry(models, tmp_path / "cache", hub_model="stabilityai/sdxl-turbo")
    reg.refresh()
    assert [r.architecture for r in reg.checkpoints()] == [Architecture.SDXL_REFINER]
    assert reg.default_checkpoint().format is ModelFormat.HUB  # the refiner alone cannot make an image
    link_or_copy(tiny_sdxl_file, models / "checkpoints" / "z-base.safetensors")
    reg.refresh()
    assert reg.default_checkpoint().name == "z-base"


@pytest.mark.parametrize("layout", [("Stable-diffusion", "Lora", "VAE"), ("checkpoints", "loras", "vae")])
def test_a1111_and_comfyui_folders(tmp_path, tiny_sd15_file, layout):
    ckpt_dir, lora_dir, vae_dir = layout
    models = tmp_path / "models"
    link_or_copy(tiny_sd15_file, models / ckpt_dir / "sub" / "dream.safetensors")
    link_or_copy(tiny_sd15_file.with_name("tiny-sd15.config.json"), models / ckpt_dir / "sub" / "dream.config.json")
    (models / lora_dir).mkdir()
    (models / vae_dir).mkdir()
    reg = ModelRegistry(models, tmp_path / "cache")
    reg.refresh()
    assert [r.name for r in reg.checkpoints()] == ["sub/dream"]
    assert reg.folder(ModelKind.CHECKPOINT) == models / ckpt_dir
    assert reg.folder(ModelKind.LORA) == models / lora_dir
    # by full name, by file name, by stem
    for name in ("sub/dream", "dream.safetensors", "dream", "SUB/DREAM"):
        assert reg.find(ModelKind.CHECKPOINT, name).name == "sub/dream"


def test_misplaced_and_junk_files(tmp_path, tiny_sd15_file):
    models = tmp_path / "models"
    link_or_copy(tiny_sd15_file, models / "loras" / "actually-a-checkpoint.safetensors")
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "notes.safetensors").write_bytes(b"not a model")
    reg = ModelRegistry(models, tmp_path / "cache")
    report = reg.refresh()
    # the tensors decide the kind, not the folder
    assert [r.name for r in reg.checkpoints()] == ["actually-a-checkpoint"]
    assert [p.name for p, _ in report.skipped] == ["notes.safetensors"]


def test_refresh_picks_up_new_files_and_uses_the_probe_cache(tmp_path, tiny_sd15_file, tiny_sdxl_file, monkeypatch):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    reg = ModelRegistry(models, tmp_path / "cache")
    reg.refresh()
    assert reg.checkpoints() == []
    link_or_copy(tiny_sdxl_file, models / "checkpoints" / "xl.safetensors")
    reg.refresh()
    assert [r.architecture for r in reg.checkpoints()] == [Architecture.SDXL]
    # a second registry reads the cached probe instead of the file
    import pipelines.loading.registry as registry_module

    monkeypatch.setattr(registry_module, "probe_file", lambda path: pytest.fail("probed again"))
    again = ModelRegistry(models, tmp_path / "cache")
    again.refresh()
    assert [r.name for r in again.checkpoints()] == ["xl"]


def test_probe_results_of_older_rules_are_redone(tmp_path):
    """A file cached as unknown by older probe rules is probed again (diffusers' attention-processor LoRAs were)."""
    import json

    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "models" / "loras" / "attn-procs.safetensors"
    lora.parent.mkdir(parents=True)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora"
    save_file({f"{key}.down.weight": torch.ones(4, 320), f"{key}.up.weight": torch.ones(320, 4)}, str(lora))
    stat = lora.stat()
    stale = {str(lora.resolve()): {"stamp": [stat.st_size, stat.st_mtime_ns], "kind": "unknown", "arch": "unknown", "note": "x"}}
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "probe-cache.json").write_text(json.dumps(stale))
    reg = ModelRegistry(tmp_path / "models", tmp_path / "cache")
    reg.refresh()
    assert [r.name for r in reg.list(ModelKind.LORA)] == ["attn-procs"]


def test_unknown_names_suggest_close_matches(tiny_models_dir, tmp_path):
    reg = ModelRegistry(tiny_models_dir, tmp_path / "cache")
    reg.refresh()
    with pytest.raises(ModelNotFound, match="Did you mean: tiny-sd15"):
        reg.find(ModelKind.CHECKPOINT, "tiny-sd51")


def test_hub_ids_and_the_empty_case(tmp_path):
    reg = ModelRegistry(tmp_path / "models", tmp_path / "cache", hub_model="stabilityai/sdxl-turbo")
    reg.ensure_folders()
    reg.refresh()
    assert (tmp_path / "models" / "checkpoints").is_dir()
    default = reg.default_checkpoint()
    assert default.format is ModelFormat.HUB and default.hub_id == "stabilityai/sdxl-turbo"
    message = reg.missing_checkpoint_message()
    assert str(tmp_path / "models" / "checkpoints") in message and "stabilityai/sdxl-turbo" in message
    assert reg.find(ModelKind.CHECKPOINT, "runwayml/stable-diffusion-v1-5").format is ModelFormat.HUB
    assert looks_like_hub_id("stabilityai/sdxl-turbo")
    assert not looks_like_hub_id("sub/dream.safetensors") and not looks_like_hub_id("dream")
    without_hub = ModelRegistry(tmp_path / "models", tmp_path / "cache", hub_model=None)
    without_hub.refresh()
    with pytest.raises(ModelNotFound, match="No checkpoint found"):
        without_hub.default_checkpoint()
