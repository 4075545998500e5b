"""The sampler table: every A1111 name builds the diffusers scheduler it promises."""

from __future__ import annotations

import diffusers
import pytest

from pipelines.errors import InvalidRequest
from pipelines.samplers import SamplerTable

SD15_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}


@pytest.fixture(scope="module")
def table() -> SamplerTable:
    return SamplerTable.load()


@pytest.fixture(scope="module")
def base_config():
    return diffusers.PNDMScheduler.from_config(SD15_SCHEDULER).config


def test_every_sampler_and_supported_schedule_builds_and_sets_timesteps(table, base_config):
    for sampler in table.samplers:
        supported = table.supported_schedules(sampler)
        assert "Automatic" in supported
        for schedule in supported:
            choice = table.resolve(sampler, schedule)
            assert (choice.sampler, choice.schedule, choice.note) == (sampler, schedule, "")
            scheduler = table.make(base_config, choice, seed=1)
            assert type(scheduler).__name__ == table._samplers[sampler]["class"]
            scheduler.set_timesteps(8)
            assert len(scheduler.timesteps) >= 8
            # the checkpoint's own noise schedule is kept
            assert scheduler.config.beta_schedule == "scaled_linear"


def test_schedule_overlays_reach_the_scheduler(table, base_config):
    dpm = table.make(base_config, table.resolve("DPM++ 2M", "Karras"))
    assert isinstance(dpm, diffusers.DPMSolverMultistepScheduler)
    assert dpm.config.use_karras_sigmas is True
    assert dpm.config.algorithm_type == "dpmsolver++"
    sde = table.make(base_config, table.resolve("DPM++ 2M SDE", "Exponential"))
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_exponential_sigmas is True
    plain = table.make(base_config, table.resolve("Euler", "Automatic"))
    assert plain.config.use_karras_sigmas is False
    trailing = table.make(base_config, table.resolve("Euler", "SGM Uniform"))
    assert trailing.config.timestep_spacing == "trailing"


def test_dpmpp_sde_noise_is_seeded(table, base_config):
    a = table.make(base_config, table.resolve("DPM++ SDE", "Karras"), seed=42)
    assert a.config.noise_sampler_seed == 42


def test_unsupported_schedule_falls_back_with_a_note(table):
    choice = table.resolve("Euler a", "Karras")
    assert choice.sampler == "Euler a" and choice.schedule == "Automatic"
    assert "Karras" in choice.note


@pytest.mark.parametrize(
    "given,expected",
    [
        (("DPM++ 2M Karras", None), ("DPM++ 2M", "Karras")),
        (("dpmpp_2m_sde_gpu", "karras"), ("DPM++ 2M SDE", "Karras")),
        (("k_euler_a", "normal"), ("Euler a", "Automatic")),
        (("euler", "sgm_uniform"), ("Euler", "SGM Uniform")),
        (("unipc", "Automatic"), ("UniPC", "Automatic")),
        (("dpm++ 2m", "KARRAS"), ("DPM++ 2M", "Karras")),
    ],
)
def test_aliases_from_other_tools(table, given, expected):
    choice = table.resolve(*given)
    assert (choice.sampler, choice.schedule) == expected


def test_unknown_names_are_clear_errors(table):
    with pytest.raises(InvalidRequest, match="Unknown sampler 'Eulr'") as err:
        table.resolve("Eulr", "Karras")
    assert err.value.field == "sampler"
    with pytest.raises(InvalidRequest, match="Unknown schedule type") as err:
        table.resolve("Euler", "Karas")
    assert err.value.field == "scheduler"


def test_names_users_know_are_all_there(table):
    for name in ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "UniPC", "LCM", "Heun", "LMS"]:
        assert name in table.samplers
    for name in ["Automatic", "Karras", "Exponential", "SGM Uniform"]:
        assert name in table.schedules


def test_step_counts_match_what_the_pipeline_does(table, base_config):
    assert table.count_steps(base_config, table.resolve("Euler", "Automatic"), 10) == 10
    assert table.count_steps(base_config, table.resolve("Heun", "Karras"), 10) == 19
    assert table.count_steps(base_config, table.resolve("DPM2 a", "Automatic"), 10) == 19
    assert table.count_steps(base_config, table.resolve("LCM", "Automatic"), 4) == 4
