"""Fooocus's sampling controls (sharpness, adaptive CFG, ADM guidance, FreeU) through the real engine.

Each control is checked against its formula written here from its definition, not from the engine's code:
the UNet's raw output and inputs at every step are captured by a hook registered before the job's own
(so it sees them untouched), the prediction the sampler steps with is captured at `scheduler.step`, and
the second must be the formula applied to the first. With the controls off, or at values where they do
nothing, the image is plain diffusers' bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager

import diffusers
import numpy as np
import pytest
import torch

from pipelines.outputs.reading import read_metadata
from pipelines.types import ImageParams, JobState
from tests.support.compare import assert_images_equal
from tests.support.engine import SIZE, run

PROMPT, NEGATIVE, SEED, STEPS = "a red fox in snow", "blurry", 77, 4
COMMON = dict(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, sampler="Euler", scheduler="Automatic")
NEUTRAL = dict(sharpness=0, adaptive_cfg=0, adm_positive=1, adm_negative=1, adm_end=0, freeu=False)


# -- the formulas -------------------------------------------------------------------------------------------


def sigma_at(alphas_cumprod: torch.Tensor, t: float) -> float:
    """σ at timestep t: the training σ's, linear in log σ between whole timesteps."""
    log_sigmas = np.log(np.sqrt((1 - alphas_cumprod.double().numpy()) / alphas_cumprod.double().numpy()))
    low = int(np.floor(t))
    high = min(low + 1, len(log_sigmas) - 1)
    w = t - low
    return float(np.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high]))


def joint_bilateral(x: np.ndarray, guide: np.ndarray, size: int = 13, s_space: float = 3.0, s_range: float = 3.0):
    """x filtered over size×size windows (mirrored borders), weights exp(-d²/2σs²)·exp(-c²/2σr²), where c is the
    L1 distance over channels of the guide standardized per image (unbiased std + 1e-5)."""
    g = (guide - guide.mean(axis=(1, 2, 3), keepdims=True)) / (guide.std(axis=(1, 2, 3), ddof=1, keepdims=True) + 1e-5)
    r = size // 2
    pad = ((0, 0), (0, 0), (r, r), (r, r))
    xp, gp = np.pad(x, pad, mode="reflect"), np.pad(g, pad, mode="reflect")
    h, w = x.shape[2:]
    num, den = np.zeros_like(x), np.zeros_like(x[:, :1])
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted_g = gp[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            c = np.abs(shifted_g - g).sum(axis=1, keepdims=True)
            weight = np.exp(-(dy * dy + dx * dx) / (2 * s_space**2)) * np.exp(-(c * c) / (2 * s_range**2))
            num += weight * xp[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            den += weight
    return num / den


def fooocus_guided(raw, x_t, t, cfg, sharpness, mimic, alphas_cumprod) -> torch.Tensor:
    """Fooocus's guided noise prediction from the UNet's [uncond, cond] output (ε-prediction), in float64."""
    uncond, cond = (p.double().numpy() for p in raw.chunk(2))
    x = x_t.chunk(2)[1].double().numpy()
    progress = min(1.0, max(0.0, 1 - t / 999))
    sigma = sigma_at(alphas_cumprod, t)
    x0 = x * np.sqrt(sigma**2 + 1) - sigma * cond  # the clean image the positive prediction implies
    a = 0.001 * sharpness * progress
    cond = cond * (1 - a) + joint_bilateral(cond, x0) * a
    real = uncond + cfg * (cond - uncond)
    if 0 < mimic < cfg:
        real = real * progress + (uncond + mimic * (cond - uncond)) * (1 - progress)
    return torch.from_numpy(real)


# -- capturing what the sampler gets ---------------------------------------------------------------------------


def loaded_unet(engine, name):
    run(engine, model=name, prompt="warm up", steps=1, seed=0)
    return next(m for m in engine.cache.loaded() if m.name == name).pipe


@contextmanager
def captured(pipe, monkeypatch):
    """Per UNet call: its input, timestep, original time ids, the time ids it ran with, its raw output; per step:
    the prediction the sampler stepped with."""
    calls, steps = [], []

    def before(module, args, kwargs):
        ids = (kwargs.get("added_cond_kwargs") or {}).get("time_ids")
        calls.append({"sample": args[0].clone(), "t": float(args[1]), "kwargs": dict(kwargs), "ids": ids})

    def after(module, args, kwargs, output):
        calls[-1]["ran_with"] = (kwargs.get("added_cond_kwargs") or {}).get("time_ids")
        calls[-1]["raw"] = output[0].clone()

    real_step = diffusers.EulerDiscreteScheduler.step

    def step(self, model_output, *args, **kwargs):
        steps.append(model_output.clone())
        return real_step(self, model_output, *args, **kwargs)

    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "step", step)
    handles = [pipe.unet.register_forward_pre_hook(before, with_kwargs=True)]
    handles.append(pipe.unet.register_forward_hook(after, with_kwargs=True))
    hooks = (len(pipe.unet._forward_pre_hooks), len(pipe.unet._forward_hooks))
    try:
        yield calls, steps
    finally:
        assert (len(pipe.unet._forward_pre_hooks), len(pipe.unet._forward_hooks)) == hooks  # the job's own are gone
        for handle in handles:
            handle.remove()


def reference(pipe, cfg, **extra):
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(SEED)
    out = plain(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=cfg, generator=generator, **SIZE, **extra
    )
    return np.asarray(out.images[0])


# -- sharpness and adaptive CFG ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_sharpness_and_adaptive_cfg_follow_their_formulas_at_every_step(engine, monkeypatch, model):
    pipe = loaded_unet(engine, model)
    alphas = pipe.scheduler.alphas_cumprod.clone()
    with captured(pipe, monkeypatch) as (calls, steps):
        info = run(engine, model=model, cfg_scale=9.0, sharpness=30, adaptive_cfg=3.0, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    assert len(calls) == len(steps) == STEPS
    for call, stepped in zip(calls, steps):
        expected = fooocus_guided(call["raw"], call["sample"], call["t"], 9.0, 30, 3.0, alphas)
        torch.testing.assert_close(stepped.double(), expected, rtol=1e-4, atol=1e-4)
    # the controls changed the prediction: plain guidance is far from it after the first step
    plain = [c["raw"].chunk(2)[0] + 9.0 * (c["raw"].chunk(2)[1] - c["raw"].chunk(2)[0]) for c in calls]
    assert (steps[-1] - plain[-1]).abs().max() > 1e-2
    params = info.result.images[0].params
    assert (params.sharpness, params.adaptive_cfg) == (30, 3.0)


def test_each_of_the_two_alone(engine, monkeypatch):
    pipe = loaded_unet(engine, "tiny-sd15")
    alphas = pipe.scheduler.alphas_cumprod.clone()
    for sharpness, mimic in ((12.0, 0.0), (0.0, 4.0)):
        with captured(pipe, monkeypatch) as (calls, steps):
            run(engine, model="tiny-sd15", cfg_scale=8.0, sharpness=sharpness, adaptive_cfg=mimic, **COMMON)
        for call, stepped in zip(calls, steps):
            expected = fooocus_guided(call["raw"], call["sample"], call["t"], 8.0, sharpness, mimic, alphas)
            torch.testing.assert_close(stepped.double(), expected, rtol=1e-4, atol=1e-4)


# -- ADM guidance --------------------------------------------------------------------------------------------


def test_adm_scales_sdxl_size_conditioning_until_the_end_fraction(engine, monkeypatch):
    pipe = loaded_unet(engine, "tiny-sdxl")
    with captured(pipe, monkeypatch) as (calls, steps):
        info = run(engine, model="tiny-sdxl", cfg_scale=5.0, adm_positive=1.5, adm_negative=0.8, adm_end=0.3, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    h, w = SIZE["height"], SIZE["width"]
    emphasized = 0
    for call, stepped in zip(calls, steps):
        assert call["ids"].tolist() == [[h, w, 0, 0, h, w]] * 2  # what the pipeline made
        if call["t"] > 999 * (1 - 0.3):  # the first 30% of the denoising: negative ×0.8, positive ×1.5
            expected = [[int(h * 0.8), int(w * 0.8), 0, 0, h, w], [int(h * 1.5), int(w * 1.5), 0, 0, h, w]]
            emphasized += 1
        else:
            expected = [[h, w, 0, 0, h, w]] * 2
        assert call["ran_with"].tolist() == expected
        # one step's prediction is the plain UNet given those numbers, guided as diffusers guides
        kwargs = dict(call["kwargs"])
        kwargs["added_cond_kwargs"] = {**kwargs["added_cond_kwargs"], "time_ids": torch.tensor(expected, dtype=call["ids"].dtype)}
        with torch.inference_mode():
            raw = pipe.unet.forward(call["sample"], torch.tensor(call["t"]), **kwargs)[0]
        uncond, cond = raw.chunk(2)
        torch.testing.assert_close(stepped, uncond + 5.0 * (cond - uncond), rtol=0, atol=1e-6)
    assert 0 < emphasized < STEPS
    params = info.result.images[0].params
    assert (params.adm_positive, params.adm_negative, params.adm_end) == (1.5, 0.8, 0.3)


def test_adm_does_nothing_on_sd15_and_is_recorded_as_off(engine, tiny_sd15_reference):
    info = run(engine, model="tiny-sd15", cfg_scale=6.5, adm_positive=1.5, adm_negative=0.8, adm_end=0.3, **COMMON)
    assert_images_equal(np.asarray(info.result.images[0].image), reference(tiny_sd15_reference, 6.5))
    params = info.result.images[0].params
    assert (params.adm_positive, params.adm_negative, params.adm_end) == (1.0, 1.0, 0.0)


# -- off is plain diffusers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,ref_fixture", [("tiny-sd15", "tiny_sd15_reference"), ("tiny-sdxl", "tiny_sdxl_reference")], ids=["sd15", "sdxl"]
)
@pytest.mark.parametrize(
    "cfg,controls",
    [
        (6.5, NEUTRAL),
        (6.5, {**NEUTRAL, "adaptive_cfg": 7.0}),  # guidance at or below the mimicked scale: nothing to mimic
        (1.0, {**NEUTRAL, "sharpness": 2.0, "adaptive_cfg": 0.5}),  # no guidance: sharpness and mimicking do nothing
        (6.5, {**NEUTRAL, "adm_positive": 1.5, "adm_negative": 0.8, "adm_end": 0.0}),  # ADM ending at once
    ],
    ids=["off", "cfg-below-mimic", "no-guidance", "adm-end-0"],
)
def test_neutral_controls_give_plain_diffusers_bit_for_bit(engine, request, model, ref_fixture, cfg, controls):
    unet = loaded_unet(engine, model).unet
    info = run(engine, model=model, cfg_scale=cfg, **COMMON, **controls)
    assert info.state is JobState.FINISHED, info.error
    assert_images_equal(np.asarray(info.result.images[0].image), reference(request.getfixturevalue(ref_fixture), cfg))
    assert not unet._forward_hooks and not unet._forward_pre_hooks
    item = info.result.images[0]
    assert "Sharpness" not in item.infotext and "ADM Guidance" not in item.infotext and "FreeU" not in item.infotext


def test_controls_change_the_image_and_reproduce_it(engine):
    on = dict(
        COMMON, model="tiny-sdxl", cfg_scale=9.0, sharpness=2, adaptive_cfg=7, adm_positive=1.5, adm_negative=0.8, adm_end=0.3
    )
    first, again = run(engine, **on), run(engine, **on)
    off = run(engine, **{**on, **NEUTRAL})
    a, b, c = (np.asarray(i.result.images[0].image) for i in (first, again, off))
    assert_images_equal(a, b)
    assert not np.array_equal(a, c)
    # the saved file: the exact record, and Fooocus's keys in the infotext
    item = first.result.images[0]
    meta = read_metadata(item.path)
    assert ImageParams.from_dict(meta.image_params) == item.params
    assert (meta.params["Sharpness"], meta.params["ADM Guidance"], meta.params["Adaptive CFG"]) == (2, "(1.5, 0.8, 0.3)", 7)
    assert meta.request["sharpness"] == 2 and meta.request["adm_end"] == 0.3


# -- FreeU ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,ref_fixture", [("tiny-sd15", "tiny_sd15_reference"), ("tiny-sdxl", "tiny_sdxl_reference")], ids=["sd15", "sdxl"]
)
def test_freeu_equals_diffusers_freeu_and_is_switched_off_after(engine, request, model, ref_fixture):
    ref = request.getfixturevalue(ref_fixture)
    factors = dict(freeu_b1=1.3, freeu_b2=1.4, freeu_s1=0.9, freeu_s2=0.2)
    info = run(engine, model=model, cfg_scale=6.5, freeu=True, **factors, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    ref.enable_freeu(s1=0.9, s2=0.2, b1=1.3, b2=1.4)
    try:
        expected = reference(ref, 6.5)
    finally:
        ref.disable_freeu()
    assert_images_equal(np.asarray(info.result.images[0].image), expected)
    assert not np.array_equal(expected, reference(ref, 6.5))  # FreeU did change the image
    unet = next(m for m in engine.cache.loaded() if m.name == model).pipe.unet
    assert all(getattr(block, "b1", None) is None for block in unet.up_blocks)
    params = info.result.images[0].params
    assert params.freeu and (params.freeu_b1, params.freeu_b2, params.freeu_s1, params.freeu_s2) == (1.3, 1.4, 0.9, 0.2)


# -- performance modes ----------------------------------------------------------------------------------------


def test_fast_modes_switch_the_controls_off(engine):
    table = engine.performance
    from pipelines.types import GenerationRequest

    on = GenerationRequest(sharpness=2, adaptive_cfg=7, adm_positive=1.5, adm_negative=0.8, adm_end=0.3, freeu=True)
    for mode in ("Extreme Speed", "Lightning", "Hyper-SD"):
        got = table.settings(on.replace(performance=mode))
        assert (got.sharpness, got.adaptive_cfg, got.adm_positive, got.adm_negative, got.adm_end) == (0, 0, 1, 1, 0)
        assert got.freeu  # Fooocus leaves FreeU as chosen
    for mode in ("Quality", "Speed"):
        assert table.settings(on.replace(performance=mode)).sharpness == 2


def test_a_modes_controls_are_checked_when_the_table_loads():
    from pipelines.performance import _mode

    with pytest.raises(ValueError, match="'width' is not one of sharpness"):
        _mode("Odd", {"controls": {"width": 3}}, None)
    with pytest.raises(ValueError, match="sharpness 40.0 is outside 0..30"):
        _mode("Odd", {"controls": {"sharpness": 40.0}}, None)
