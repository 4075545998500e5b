"""Fooocus's refiner swap methods through the engine, each against plain diffusers doing it by the method's definition.

`separate` is diffusers' ensemble recipe (tests/test_refiner.py). `joint` is one sampling run whose UNet and
conditioning become the refiner's at the switch; `vae` hands the refiner the base's clean prediction with
fresh noise (seed + 1, its channel mean swapped for the base's last predicted noise's) at the switch's level.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

from pipelines.jobs.events import JobProgress
from pipelines.types import GenerationRequest, JobState
from tests.support.compare import assert_images_equal, assert_images_match
from tests.support.engine import SIZE, run
from tests.test_refiner import ScriptedControl

PROMPT, NEGATIVE, SEED, STEPS, CFG, SWITCH = "a red fox in snow", "blurry", 321, 5, 5.0, 0.6
H, W = SIZE["height"], SIZE["width"]
SAMPLERS = {
    "Euler": lambda c: diffusers.EulerDiscreteScheduler.from_config(c),
    "DPM++ 2M": lambda c: diffusers.DPMSolverMultistepScheduler.from_config(
        c, algorithm_type="dpmsolver++", use_karras_sigmas=True
    ),
}
SCHEDULES = {"Euler": "Automatic", "DPM++ 2M": "Karras"}


def engine_image(engine, swap, sampler="Euler", **extra):
    info = run(
        engine,
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=SWITCH,
        refiner_swap=swap,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=SEED,
        steps=STEPS,
        cfg_scale=CFG,
        sampler=sampler,
        scheduler=SCHEDULES[sampler],
        **extra,
    )
    assert info.state is JobState.FINISHED, info.error
    return info.result.images[0]


def plain_pair(base_ref, refiner_ref, make):
    base = diffusers.StableDiffusionXLPipeline(**{**base_ref.components, "scheduler": make(base_ref.scheduler.config)})
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(
        **{**refiner_ref.components, "scheduler": make(refiner_ref.scheduler.config)},
        requires_aesthetics_score=refiner_ref.config.requires_aesthetics_score,
        force_zeros_for_empty_prompt=refiner_ref.config.force_zeros_for_empty_prompt,
    )
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    return base, refiner


def base_steps(scheduler) -> int:
    """Steps the base makes: those at or above the switch's training timestep (diffusers' denoising_end rule)."""
    scheduler.set_timesteps(STEPS)
    return int((scheduler.timesteps >= round(1000 - SWITCH * 1000)).sum())


def joint_reference(base_ref, refiner_ref, make) -> np.ndarray:
    base, refiner = plain_pair(base_ref, refiner_ref, make)
    with torch.no_grad():
        pe, npe, ppe, nppe = refiner.encode_prompt(PROMPT, negative_prompt=NEGATIVE, device="cpu")
        ids, neg_ids = refiner._get_add_time_ids(
            (H, W), (0, 0), (H, W), 6.0, 2.5, (H, W), (0, 0), (H, W), pe.dtype, refiner.text_encoder_2.config.projection_dim
        )
    switch_at = base_steps(make(base_ref.scheduler.config))

    def take_over(pipe, i, _t, tensors):
        if i + 1 != switch_at:
            return {}
        pipe.unet = refiner.unet
        return {
            "prompt_embeds": torch.cat([npe, pe]),
            "add_text_embeds": torch.cat([nppe, ppe]),
            "add_time_ids": torch.cat([neg_ids, ids]),
        }

    out = base(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        generator=torch.Generator().manual_seed(SEED),
        callback_on_step_end=take_over,
        callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds", "add_time_ids"],
        **SIZE,
    )
    return np.asarray(out.images[0])


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
def test_joint_swaps_the_unet_inside_one_sampling_run(engine, tiny_sdxl_reference, tiny_sdxl_refiner_reference, sampler):
    item = engine_image(engine, "joint", sampler)
    expected = joint_reference(tiny_sdxl_reference, tiny_sdxl_refiner_reference, SAMPLERS[sampler])
    assert_images_equal(np.asarray(item.image), expected)
    separate = engine_image(engine, "separate", sampler)
    assert not np.array_equal(np.asarray(separate.image), expected)
    assert item.params.refiner_swap == "joint" and "Refiner Swap Method: joint" in item.infotext


def vae_reference(base_ref, refiner_ref) -> np.ndarray:
    make = SAMPLERS["Euler"]
    base, refiner = plain_pair(base_ref, refiner_ref, make)
    last = {}

    def record(module, args, kwargs, output):
        last.update(sample=args[0].clone(), t=float(args[1]), raw=output[0].clone())

    handle = base.unet.register_forward_hook(record, with_kwargs=True)
    try:
        base(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
            denoising_end=SWITCH,
            output_type="latent",
            **SIZE,
        )
    finally:
        handle.remove()
    # the base's last step, fully denoised: x0 = x·√(σ²+1) − σ·ε with the guided ε
    uncond, cond = last["raw"].double().chunk(2)
    eps = uncond + CFG * (cond - uncond)
    alphas = base.scheduler.alphas_cumprod.double()
    low, w = int(last["t"]), last["t"] - int(last["t"])
    log_sigma = (1 - w) * torch.log(((1 - alphas[low]) / alphas[low]).sqrt()) + w * torch.log(
        ((1 - alphas[low + 1]) / alphas[low + 1]).sqrt()
    )
    sigma = float(torch.exp(log_sigma))
    x0 = last["sample"].double().chunk(2)[1] * (sigma**2 + 1) ** 0.5 - sigma * eps
    generator = torch.Generator().manual_seed(SEED + 1)
    noise = torch.randn(x0.shape, generator=generator).double()
    noise = noise - noise.mean(1, keepdim=True) + eps.mean(1, keepdim=True)
    scratch = make(refiner_ref.scheduler.config)
    scratch.set_timesteps(STEPS)
    first = scratch.timesteps[scratch.timesteps < round(1000 - SWITCH * 1000)][0]
    noisy = scratch.add_noise(x0.float(), noise.float(), first.reshape(1))
    out = refiner(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=noisy,
        denoising_start=SWITCH,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        generator=generator,
    )
    return np.asarray(out.images[0])


def test_vae_renoises_the_bases_clean_prediction_for_the_refiner(engine, tiny_sdxl_reference, tiny_sdxl_refiner_reference):
    item = engine_image(engine, "vae")
    expected = vae_reference(tiny_sdxl_reference, tiny_sdxl_refiner_reference)
    assert_images_match(
        np.asarray(item.image),
        expected,
        why="x0 and the noise are computed in float64 here and in float32 (in another order) by the engine",
    )
    assert item.params.refiner_swap == "vae"
    again = engine_image(engine, "vae")
    assert_images_equal(np.asarray(again.image), np.asarray(item.image))
    for other in ("joint", "separate"):
        assert not np.array_equal(np.asarray(engine_image(engine, other).image), np.asarray(item.image))


@pytest.mark.parametrize("swap,steps", [("joint", 5), ("vae", 5), ("separate", 5)])
def test_progress_counts_one_run_of_steps(engine, swap, steps):
    """5 Euler steps at switch 0.6: the base makes 3, the refiner 2, whichever way it takes over."""
    request = GenerationRequest(
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=SWITCH,
        refiner_swap=swap,
        prompt="p",
        steps=STEPS,
        seed=3,
        sampler="Euler",
        scheduler="Automatic",
        **SIZE,
    )
    control = ScriptedControl(request)
    engine.manager.run(control)
    progress = [e for e in control.events if isinstance(e, JobProgress)]
    assert [p.step for p in progress] == list(range(steps + 1)) and progress[-1].total_steps == steps


def test_the_base_model_gets_its_own_unet_back_and_controls_act_in_both_stages(engine):
    controls = dict(sharpness=10, adaptive_cfg=3.0, adm_positive=1.5, adm_negative=0.8, adm_end=0.3)
    plain = engine_image(engine, "joint")
    tuned = engine_image(engine, "joint", **controls)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(tuned.image))
    base = next(m for m in engine.cache.loaded() if m.name == "tiny-sdxl").pipe
    refiner = next(m for m in engine.cache.loaded() if m.name == "tiny-sdxl-refiner").pipe
    assert base.unet is not refiner.unet and not base.unet._forward_hooks and not refiner.unet._forward_hooks
    assert_images_equal(np.asarray(engine_image(engine, "joint").image), np.asarray(plain.image))


def test_unknown_swap_method_is_refused(engine):
    from pipelines.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        engine.queue.submit(GenerationRequest(prompt="p", refiner_swap="sideways", **SIZE))
    assert caught.value.field == "refiner_swap" and "joint, separate, vae" in str(caught.value)


def test_the_base_as_its_own_joint_refiner_is_the_base_alone(engine):
    """Same UNet, same conditioning: joint changes nothing, and the controls' hooks act once, not twice."""
    controls = dict(sharpness=10, adaptive_cfg=3.0, adm_positive=1.5, adm_negative=0.8, adm_end=0.3)
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED, steps=STEPS, cfg_scale=CFG, sampler="Euler")
    alone = run(engine, model="tiny-sdxl", scheduler="Automatic", **common, **controls)
    itself = run(engine, model="tiny-sdxl", refiner="tiny-sdxl", refiner_switch=SWITCH, refiner_swap="joint",
                 scheduler="Automatic", **common, **controls)  # fmt: skip
    assert itself.state is JobState.FINISHED, itself.error
    assert_images_equal(np.asarray(itself.result.images[0].image), np.asarray(alone.result.images[0].image))
