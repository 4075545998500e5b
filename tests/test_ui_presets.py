"""Presets: the bundled ones load and make valid requests; mistakes fail naming the file and the field."""

from __future__ import annotations

import pytest

from pipelines.samplers import SamplerTable
from pipelines.types import Architecture
from pipelines.validation import validate
from ui.form import FormTables, default_form, request_from_form
from ui.presets import BUNDLED_DIR, PresetLibrary, apply_preset, load_preset


@pytest.fixture(scope="module")
def tables() -> FormTables:
    return FormTables.load(SamplerTable.load())


def lookup(name):
    return {"realisticStockPhoto_v20": ("realisticStockPhoto_v20", Architecture.SDXL),
            "dreamshaper_8": ("dreamshaper_8", Architecture.SD1)}.get(name)


def test_bundled_presets_load_and_make_valid_requests(tables):
    library = PresetLibrary.load(tables)
    assert library.names[0] == "default"
    assert {"default", "realistic", "anime", "lightning"} <= set(library.names)
    for name in library.names:
        preset = library.get(name)
        assert preset.description and preset.path.parent == BUNDLED_DIR
        for arch in (Architecture.SDXL, Architecture.SD1):
            values = apply_preset(preset, tables, lookup, arch).values
            request = validate(request_from_form({**default_form(tables, arch), **values}, tables), tables.samplers)
            assert request.sampler == preset.values["sampler"] and request.cfg_scale == preset.values["cfg_scale"]
    lightning = apply_preset(library.get("lightning"), tables, lookup, Architecture.SDXL).values
    assert (lightning["performance"], lightning["steps"], lightning["scheduler"]) == ("Custom", 4, "SGM Uniform")
    assert library.get("realistic").styles == ("Fooocus Photograph", "Fooocus Negative")


def test_preset_picks_its_installed_model_and_a_size_that_fits_it(tables):
    library = PresetLibrary.load(tables)
    result = apply_preset(library.get("realistic"), tables, lookup, Architecture.SD1)
    assert result.values["model"] == "realisticStockPhoto_v20" and result.notes == []
    assert result.values["aspect_ratio"] == "896x1152"  # an SDXL size, since the model is SDXL
    result = apply_preset(library.get("anime"), tables, lookup, Architecture.SD1)
    assert "model" not in result.values and "not installed" in result.notes[0]
    assert result.values["aspect_ratio"] == "512x512"  # the current SD 1.5 model keeps an SD 1.5 size
    assert result.values["steps"] == 30  # Speed's steps come with the mode


def test_unknown_preset_lists_the_available_ones(tables):
    with pytest.raises(KeyError, match="No preset named 'turbo'. Available: default, anime"):
        PresetLibrary.load(tables).get("turbo")


@pytest.mark.parametrize("text, message", [
    ("cfg: 4", "unknown field\\(s\\) cfg"),
    ("sampler: Euler b", "Unknown sampler 'Euler b'"),
    ("cfg_scale: 45", "cfg_scale must be between 0 and 30"),
    ("performance: Turbo", "performance 'Turbo' is not one of Quality, Speed, Custom"),
    ("styles: Cinematic", "styles must be a list"),
    ("aspect_ratio: square", "aspect_ratio: 'square' is not a size"),
    ("image_count: 40", "image_count must be between 1 and 32"),
    ("model: [1, 2]", "model must be a name or a list"),
    ("sampler: [Euler]", "sampler must be text"),
    ("- just\n- a list", "a preset is a mapping"),
    ("cfg_scale: [", "cannot be read as YAML"),
])
def test_preset_mistakes_name_the_file_and_field(tables, tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        load_preset(path, tables)
    assert str(path) in str(error.value)


def test_user_folder_overrides_bundled_preset(tables, tmp_path):
    (tmp_path / "anime.yaml").write_text("description: mine\ncfg_scale: 9\nsampler: Euler a\n", encoding="utf-8")
    library = PresetLibrary.load(tables, [BUNDLED_DIR, tmp_path])
    assert library.get("anime").description == "mine" and library.get("anime").values["cfg_scale"] == 9
    assert "realistic" in library.names
