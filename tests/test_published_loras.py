"""LoRA files spelled as trainers publish them load, change the image, and add exactly their weights.

The files are written from tests/support/published_lora_keys.py: key spellings typed from each trainer's
rules (kohya SD1/SDXL, LyCORIS LoCon, diffusers train_dreambooth_lora old and new, PEFT save_pretrained),
never from the names of the modules the app loads, so a naming change in transformers or diffusers shows
up here instead of being mirrored by the test. The reference for each layer is found by structure
(`published_module`), and its expected weight is base + weight · scale · (up @ down), computed here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest, LoraError
from pipelines.loading.configs import sidecar_path
from pipelines.loading.probe import probe_file
from pipelines.loras.formats import read_lora
from pipelines.loras.targets import ModuleIndex, resolve
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, JobState, LoraRef, ModelKind
from tests.support.published_lora_keys import FORMATS, FORMATS_BY_NAME, LAYERS, published_module, write_lora
from tests.test_engine import SIZE, pixels

MODELS = {Architecture.SD1: ("tiny-sd15", "tiny_sd15_reference"), Architecture.SDXL: ("tiny-sdxl", "tiny_sdxl_reference")}
NAMES = [f.name for f in FORMATS]
WEIGHT = 0.8


@pytest.mark.parametrize("arch", [Architecture.SD1, Architecture.SDXL], ids=["sd1", "sdxl"])
def test_the_typed_table_has_the_tiny_models_shapes(request, arch):
    pipe = request.getfixturevalue(MODELS[arch][1])
    for layer in LAYERS[arch]:
        assert tuple(published_module(pipe, layer.component, layer.path).weight.shape) == layer.shape, layer.path


@pytest.mark.parametrize("name", NAMES)
def test_every_layer_maps_onto_the_module_its_published_name_means(request, tmp_path, name):
    fmt = FORMATS_BY_NAME[name]
    pipe = request.getfixturevalue(MODELS[fmt.arch][1])
    path, written = write_lora(fmt, tmp_path)
    assert probe_file(path).kind is ModelKind.LORA
    lora = read_lora(path)
    assert lora.architecture in (fmt.arch, Architecture.UNKNOWN)
    resolved = resolve(lora, ModuleIndex.build(pipe, fmt.arch), "tiny")
    patches = {id(p.weight): p for p in resolved if not p.path.endswith(".bias")}
    expected = {id(published_module(pipe, c, p).weight): layer for (c, p), layer in written.items()}
    assert len(patches) == len(written) and patches.keys() == expected.keys()
    biases = {id(p.weight): p for p in resolved if p.path.endswith(".bias")}  # LyCORIS full / norm: bias differences
    expected_biases = {
        id(published_module(pipe, c, p).bias): layer.bias_change
        for (c, p), layer in written.items()
        if layer.bias_change is not None
    }
    assert biases.keys() == expected_biases.keys()
    for key, patch in biases.items():
        torch.testing.assert_close(patch.pair.delta().reshape(-1), expected_biases[key])
    for key, patch in patches.items():
        layer = expected[key]
        shape = tuple(patch.weight.shape)
        torch.testing.assert_close(patch.pair.delta().reshape(shape), layer.product(shape), rtol=1e-5, atol=1e-6)
        assert patch.pair.scale == pytest.approx(layer.scale)
        if layer.magnitude is None:
            assert patch.pair.magnitude is None
        else:
            assert torch.equal(patch.pair.magnitude, layer.magnitude)


def test_a_partly_fitting_lora_says_which_part_does_not_fit(tmp_path, tiny_sd15_reference):
    """A kohya SD1 file whose text-encoder layers go deeper than the model's: the UNet fits, the text encoder not."""
    path, written = write_lora(FORMATS_BY_NAME["kohya-sd1"], tmp_path)
    tensors = read_lora(path)
    extra = {}
    for layer in range(3, 12):  # a 12-layer text encoder; the tiny one has 3
        stem = f"lora_te_text_model_encoder_layers_{layer}_mlp_fc1"
        extra[f"{stem}.lora_down.weight"], extra[f"{stem}.lora_up.weight"] = torch.ones(4, 32), torch.ones(64, 4)
    pairs = {f"{p.stem}{end}": t for p in tensors.pairs for end, t in ((".lora_down.weight", p.down), (".lora_up.weight", p.up))}
    save_file({**pairs, **extra}, str(tmp_path / "deep-te.safetensors"))
    unet_count = sum(1 for c, _ in written if c == "unet")
    te_count = len(written) - unet_count
    with pytest.raises(LoraError) as err:
        resolve(read_lora(tmp_path / "deep-te.safetensors"), ModuleIndex.build(tiny_sd15_reference, Architecture.SD1), "tiny")
    message = str(err.value)
    assert message.startswith(f"deep-te.safetensors does not fit the SD 1.x model tiny: 9 of its {len(written) + 9} layers")
    assert (
        f"(UNet: all {unet_count} found; text encoder: 9 of {te_count + 9} not found, e.g. 'lora_te_text_model_encoder_layers_"
        in message
    )
    assert isinstance(err.value, InvalidRequest) and err.value.field == "loras"  # the request's fault: a 4xx


# Layer names copied from published full-size LoRAs (kohya SD 1.5 and SDXL, LyCORIS, diffusers), with the
# module each one means (diffusers UNet path / transformers-4 CLIP path).
FULL_SIZE_NAMES = [
    (
        Architecture.SD1,
        "lora_te_text_model_encoder_layers_11_self_attn_out_proj",
        "text_encoder",
        "text_model.encoder.layers.11.self_attn.out_proj",
    ),
    (Architecture.SD1, "lora_te_text_model_encoder_layers_0_mlp_fc1", "text_encoder", "text_model.encoder.layers.0.mlp.fc1"),
    (Architecture.SD1, "lora_unet_down_blocks_0_attentions_0_proj_in", "unet", "down_blocks.0.attentions.0.proj_in"),
    (
        Architecture.SD1,
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
        "unet",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
    ),
    (
        Architecture.SD1,
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
        "unet",
        "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0",
    ),
    (
        Architecture.SD1,
        "lora_unet_input_blocks_8_1_transformer_blocks_0_attn1_to_q",
        "unet",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q",
    ),
    (Architecture.SD1, "lora_unet_output_blocks_11_1_proj_out", "unet", "up_blocks.3.attentions.2.proj_out"),
    (Architecture.SD1, "lora_unet_down_blocks_0_resnets_0_conv1", "unet", "down_blocks.0.resnets.0.conv1"),
    (Architecture.SD1, "lora_unet_up_blocks_0_upsamplers_0_conv", "unet", "up_blocks.0.upsamplers.0.conv"),
    (
        Architecture.SD1,
        "text_encoder.text_model.encoder.layers.11.self_attn.k_proj",
        "text_encoder",
        "text_model.encoder.layers.11.self_attn.k_proj",
    ),
    (
        Architecture.SD1,
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out",
        "unet",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
    ),
    (Architecture.SDXL, "lora_te1_text_model_encoder_layers_11_mlp_fc1", "text_encoder", "text_model.encoder.layers.11.mlp.fc1"),
    (
        Architecture.SDXL,
        "lora_te2_text_model_encoder_layers_31_self_attn_q_proj",
        "text_encoder_2",
        "text_model.encoder.layers.31.self_attn.q_proj",
    ),
    (
        Architecture.SDXL,
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_k",
        "unet",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_k",
    ),
    (
        Architecture.SDXL,
        "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
        "unet",
        "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
    ),
    (
        Architecture.SDXL,
        "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_v",
        "unet",
        "mid_block.attentions.0.transformer_blocks.9.attn2.to_v",
    ),
    (
        Architecture.SDXL,
        "lora_unet_output_blocks_0_1_transformer_blocks_9_attn2_to_k",
        "unet",
        "up_blocks.0.attentions.0.transformer_blocks.9.attn2.to_k",
    ),
    (Architecture.SDXL, "lora_unet_output_blocks_5_1_proj_out", "unet", "up_blocks.1.attentions.2.proj_out"),
    (Architecture.SDXL, "lora_unet_input_blocks_1_0_in_layers_2", "unet", "down_blocks.0.resnets.0.conv1"),
    (Architecture.SDXL, "lora_unet_input_blocks_3_0_op", "unet", "down_blocks.0.downsamplers.0.conv"),
    (Architecture.SDXL, "lora_unet_output_blocks_2_2_conv", "unet", "up_blocks.0.upsamplers.0.conv"),
    (
        Architecture.SDXL,
        "lora_unet_down_blocks_2_attentions_1_transformer_blocks_3_attn1_to_out_0",
        "unet",
        "down_blocks.2.attentions.1.transformer_blocks.3.attn1.to_out.0",
    ),
    (  # SimpleTuner's LyCORIS files
        Architecture.SDXL,
        "lycoris_down_blocks_2_attentions_1_transformer_blocks_9_attn2_to_k",
        "unet",
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k",
    ),
    (Architecture.SD1, "lycoris_up_blocks_1_attentions_2_proj_out", "unet", "up_blocks.1.attentions.2.proj_out"),
    (
        Architecture.SDXL,
        "text_encoder_2.text_model.encoder.layers.31.mlp.fc2",
        "text_encoder_2",
        "text_model.encoder.layers.31.mlp.fc2",
    ),
]


@pytest.fixture(scope="module")
def full_size_modules():
    """The full-size UNet and text encoders of SD 1.5 and SDXL, without weights (meta tensors), and their index."""
    from types import SimpleNamespace

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.support.full_size import bundled_configs

    classes = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
    out = {}
    for arch in (Architecture.SD1, Architecture.SDXL):
        configs = bundled_configs(arch)
        with init_empty_weights():
            parts = {"unet": UNet2DConditionModel.from_config(configs["unet"])}
            parts |= {c: cls(CLIPTextConfig.from_dict(configs[c])) for c, cls in classes.items() if c in configs}
        pipe = SimpleNamespace(**parts)
        out[arch] = (pipe, ModuleIndex.build(pipe, arch))
    return out


@pytest.mark.parametrize("arch,stem,component,path", FULL_SIZE_NAMES, ids=[row[1] for row in FULL_SIZE_NAMES])
def test_names_of_published_full_size_loras_find_their_layer(full_size_modules, arch, stem, component, path):
    pipe, index = full_size_modules[arch]
    [(found_component, found_path)] = index.targets_of(stem)
    assert found_component == component
    assert index.modules[(found_component, found_path)] is published_module(pipe, component, path)


# -- through the engine -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_models(tmp_path_factory, tiny_sd15_file, tiny_sdxl_file):
    """Tiny checkpoints (linked) and one LoRA file per published format; returns (root, {format: (name, layers)})."""
    root = tmp_path_factory.mktemp("published-loras")
    (root / "checkpoints").mkdir()
    for checkpoint in (tiny_sd15_file, tiny_sdxl_file):
        for file in (checkpoint, sidecar_path(checkpoint)):
            (root / "checkpoints" / file.name).symlink_to(file)
    written = {}
    for seed, fmt in enumerate(FORMATS):
        path, layers = write_lora(fmt, root / "loras", seed=seed)
        written[fmt.name] = (path.relative_to(root / "loras").with_suffix("").as_posix(), layers)
    return root, written


@pytest.fixture(scope="module")
def engine(lora_models, tmp_path_factory):
    services = build_services(
        AppConfig(models_dir=lora_models[0], output_dir=tmp_path_factory.mktemp("out"), device="cpu", precision="fp32")
    )
    yield services
    services.close()


def picture(services, model: str, loras=()) -> np.ndarray:
    request = GenerationRequest(
        model=model, prompt="a lighthouse at dusk", steps=3, seed=11, sampler="Euler", loras=loras, **SIZE
    )
    info = services.queue.wait(services.queue.submit(request), timeout=120)
    assert info.state is JobState.FINISHED, info.error
    return pixels(info.result.images[0].path)


@pytest.mark.parametrize("name", NAMES)
def test_published_lora_changes_the_image_by_exactly_its_weights(engine, lora_models, request, name):
    fmt = FORMATS_BY_NAME[name]
    model_name, reference_fixture = MODELS[fmt.arch]
    reference = request.getfixturevalue(reference_fixture)
    lora_name, written = lora_models[1][name]
    without = picture(engine, model_name)
    [model] = [m for m in engine.cache.loaded() if m.name == model_name]
    with engine.loras.activate(model, [LoraRef(lora_name, WEIGHT)]) as activation:
        assert [a.name for a in activation.applied] == [lora_name]
        touched = set()
        for (component, path), layer in written.items():
            weight = published_module(model.pipe, component, path).weight
            base = published_module(reference, component, path).weight.detach().float()
            torch.testing.assert_close(weight, layer.expected(base, WEIGHT), rtol=1e-5, atol=1e-6)
            touched.add(id(weight))
            if layer.bias_change is not None:
                bias = published_module(model.pipe, component, path).bias
                base_bias = published_module(reference, component, path).bias.detach().float()
                torch.testing.assert_close(bias, base_bias + WEIGHT * layer.bias_change, rtol=1e-5, atol=1e-6)
                touched.add(id(bias))
        for component in ("unet", "text_encoder", "text_encoder_2"):  # nothing else moved
            if getattr(reference, component, None) is None:
                continue
            theirs = getattr(reference, component).state_dict()
            for key, value in getattr(model.pipe, component).state_dict(keep_vars=True).items():
                if id(value) not in touched:
                    assert torch.equal(value, theirs[key]), f"{component}.{key}"
    with_lora = picture(engine, model_name, (LoraRef(lora_name, WEIGHT),))
    assert np.abs(with_lora.astype(int) - without.astype(int)).mean() > 1, "the LoRA did not change the picture"
    assert np.array_equal(picture(engine, model_name), without)  # the next job without it runs on the loaded weights
    for component in ("unet", "text_encoder", "text_encoder_2"):  # restored bit for bit
        if getattr(reference, component, None) is not None:
            theirs = getattr(reference, component).state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in getattr(model.pipe, component).state_dict().items())


def test_lycoris_dora_and_kohya_files_on_the_same_layers_add_up(engine, lora_models, tiny_sd15_reference):
    """A LoKr, a DoRA LoCon and a kohya LoRA at once: each layer gets the sum of what each adds to the loaded weight
    (DoRA's renormalised difference included), rounded once; afterwards the loaded weights come back bit for bit."""
    names = {"lycoris-lokr-sd1": 0.7, "lycoris-locon-dora-sd1": -0.5, "kohya-sd1": 1.2}
    picture(engine, "tiny-sd15")
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sd15"]
    refs = [LoraRef(lora_models[1][name][0], weight) for name, weight in names.items()]
    with engine.loras.activate(model, refs):
        for (component, path), _ in lora_models[1]["kohya-sd1"][1].items():
            base = published_module(tiny_sd15_reference, component, path).weight.detach().float()
            expected = base.clone()
            for name, weight in names.items():
                layer = lora_models[1][name][1].get((component, path))
                if layer is not None:
                    expected += layer.expected(base, weight) - base
            weight = published_module(model.pipe, component, path).weight
            torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)
    theirs = tiny_sd15_reference.unet.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.pipe.unet.state_dict().items())
