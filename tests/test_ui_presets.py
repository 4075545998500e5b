"""Presets: the bundled ones load and make valid requests; mistakes fail naming the file and the field."""

from __future__ import annotations

import pytest

from pipelines.types import Architecture, ModelKind
from pipelines.validation import validate
from tests.test_ui_form import engine_tables
from ui.form.fields import FormTables, default_form, request_from_form
from ui.form.presets import BUNDLED_DIR, PresetLibrary, apply_preset, load_preset


@pytest.fixture(scope="module")
def tables() -> FormTables:
    return engine_tables()


def lookup(name, kind=ModelKind.CHECKPOINT):
    return {
        "realisticStockPhoto_v20": ("realisticStockPhoto_v20", Architecture.SDXL),
        "dreamshaper_8": ("dreamshaper_8", Architecture.SD1),
    }.get(name)


@pytest.mark.parametrize("path", sorted(BUNDLED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_preset_loads_with_real_styles_and_engine_modes(tables, path):
    preset = load_preset(path, tables)
    assert preset.description and preset.path == path
    library_names = set(tables.styles.names())
    assert all(style in library_names for style in preset.styles), preset.styles
    assert preset.values["performance"] in [*tables.performance.names(), "Custom"]
    for arch in (Architecture.SDXL, Architecture.SD1):
        values = apply_preset(preset, tables, lookup, arch).values
        request = validate(request_from_form({**default_form(tables, arch), **values}, tables), tables.samplers)
        mode = tables.performance.get(request.performance) if request.performance else None
        # the mode's own settings win; the preset's where the mode leaves them open
        assert request.sampler == (mode.sampler if mode and mode.sampler else preset.values["sampler"])
        assert request.cfg_scale == (mode.cfg_scale if mode and mode.cfg_scale else preset.values["cfg_scale"])
        assert list(request.styles) == list(preset.styles)


def test_bundled_library_and_the_lightning_preset(tables):
    library = PresetLibrary.load(tables)
    assert library.names[0] == "default"
    assert {"default", "realistic", "anime", "lightning"} <= set(library.names)
    lightning = apply_preset(library.get("lightning"), tables, lookup, Architecture.SDXL).values
    assert (lightning["performance"], lightning["steps"], lightning["cfg_scale"]) == ("Lightning", 4, 1.0)
    assert (lightning["sampler"], lightning["scheduler"]) == ("Euler", "SGM Uniform")
    assert tables.performance.availability("Lightning", Architecture.SD1).startswith("Lightning needs an SDXL model")
    assert library.get("realistic").styles == ("Photo - Natural Light Portrait",)
    assert library.get("anime").styles == ("Anime - Key Visual",)


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


@pytest.mark.parametrize(
    "text, message",
    [
        ("cfg: 4", "unknown field\\(s\\) cfg"),
        ("sampler: Euler b", "Unknown sampler 'Euler b'"),
        ("cfg_scale: 45", "cfg_scale must be between 0 and 30"),
        (
            "performance: Turbo",
            "performance 'Turbo' is not one of Quality, Speed, Extreme Speed, Lightning, Hyper-SD, CPU Turbo, Custom",
        ),
        ("styles: [Cinematic]", "styles: No style named 'Cinematic'. Did you mean: Cinematic - "),
        ("performance: Lightning\nsteps: 8", "steps 8 contradicts performance 'Lightning', which sets steps 4"),
        ("styles: Cinematic", "styles must be a list"),
        ("aspect_ratio: square", "aspect_ratio: 'square' is not a size"),
        ("image_count: 40", "image_count must be between 1 and 32"),
        ("model: [1, 2]", "model must be a name or a list"),
        ("sampler: [Euler]", "sampler must be text"),
        ("- just\n- a list", "a preset is a mapping"),
        ("cfg_scale: [", "cannot be read as YAML"),
    ],
)
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
