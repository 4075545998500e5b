"""Shared fixtures: offline environment, tiny models on disk the way users keep them, reference pipelines.

The whole session runs with the Hugging Face hub switched off (set before diffusers or transformers is
imported, since huggingface_hub reads these variables at import time), so a test that would download
anything fails instead of passing on a developer's warm cache.

Model files are written once per session; tests must not modify them (copy to `tmp_path` first).

How pictures are compared (tests/support/compare.py), so that the suite passes on every CPU (AVX2,
AVX-512, AMX), whose kernels take other paths by instruction set, layout, alignment and flags:

- Exact (`assert_images_equal`) where equality holds by construction: the engine and the reference run
  the same operations on the same inputs, with the same layouts and flags. The references are built for
  this: in-memory models laid out and frozen as the app loads them (`tests/support/layout.py`), noise
  from `torch.Generator().manual_seed(seed)`, plain diffusers calls. If such a test fails on one CPU only,
  something differs between the two sides (it was once `requires_grad` on loaded weights, which chose
  another matmul kernel); find it (`tests/support/op_trace.py` compares the aten ops of two calls), do
  not loosen the test. The engine's own reproducibility (the same request twice) is always exact.
- Within a tolerance (`assert_images_match`, with its `why`) only where two implementations legitimately
  compute the same math in another order: a LoRA fused by diffusers vs added by us, NCHW vs channels-last
  convolutions. The default, one 8-bit level on at most 1% of the values, is a rounding's trace; a real
  mistake moves most pixels by many levels.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY_SD15_NAME = "tiny-sd15"
TINY_SDXL_NAME = "tiny-sdxl"
TINY_SDXL_REFINER_NAME = "tiny-sdxl-refiner"
TINY_SDXL_REFINER_SEED = 1  # not the base's seed: its VAE and text encoder must differ from the base's
TINY_SD15_INPAINTING_NAME = "tiny-sd15-inpainting"
TINY_SD15_INPAINTING_SEED = 2  # not the base's seed either: a test must tell which model inpainted
USER_MODEL_FOLDERS = ("checkpoints", "loras", "vae", "embeddings")


@pytest.fixture(scope="session", autouse=True)
def compiling_off_unless_asked() -> Iterator[None]:
    """Engines built by tests do not compile their UNet in the background, even those that ask for `--compile`:
    a compile of minutes beside every test engine would slow the suite and add nothing to what those tests
    check. tests/test_compile.py turns it back on with `compiling_on`."""
    from pipelines import services
    from pipelines.speed.compiler import UNetCompiler

    class Off(UNetCompiler):
        def __init__(self, cache_dir: Path, **_: object) -> None:
            super().__init__(cache_dir, enabled=False, reason="off in tests")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "UNetCompiler", Off)
        yield


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty models folder with the sub-folders users have; the tiny_* fixtures fill checkpoints/."""
    root = tmp_path_factory.mktemp("models")
    for folder in USER_MODEL_FOLDERS:
        (root / folder).mkdir()
    return root


@pytest.fixture(scope="session")
def tiny_sd15_reference():
    """The in-memory tiny SD1.5 pipeline (seed 0) that the files on disk were written from."""
    from tests.support.layout import laid_out_as_loaded
    from tests.support.tiny_models import tiny_sd15_pipeline

    return laid_out_as_loaded(tiny_sd15_pipeline(seed=0))


@pytest.fixture(scope="session")
def tiny_sdxl_reference():
    """The in-memory tiny SDXL pipeline (seed 0) that the files on disk were written from."""
    from tests.support.layout import laid_out_as_loaded
    from tests.support.tiny_models import tiny_sdxl_pipeline

    return laid_out_as_loaded(tiny_sdxl_pipeline(seed=0))


@pytest.fixture(scope="session")
def tiny_sdxl_refiner_reference():
    """The in-memory tiny SDXL refiner (StableDiffusionXLImg2ImgPipeline, seed 1) written to disk."""
    from tests.support.layout import laid_out_as_loaded
    from tests.support.tiny_models import tiny_sdxl_refiner_pipeline

    return laid_out_as_loaded(tiny_sdxl_refiner_pipeline(seed=TINY_SDXL_REFINER_SEED))


@pytest.fixture(scope="session")
def tiny_sd15_file(tiny_models_root: Path, tiny_sd15_reference) -> Path:
    """`checkpoints/tiny-sd15.safetensors` in the LDM layout, with its `tiny-sd15.config.json` sidecar."""
    from tests.support.ckpt_export import save_single_file

    return save_single_file(tiny_sd15_reference, tiny_models_root / "checkpoints" / f"{TINY_SD15_NAME}.safetensors")


@pytest.fixture(scope="session")
def tiny_sdxl_file(tiny_models_root: Path, tiny_sdxl_reference) -> Path:
    """`checkpoints/tiny-sdxl.safetensors` in the SDXL (sgm) layout, with its sidecar."""
    from tests.support.ckpt_export import save_single_file

    return save_single_file(tiny_sdxl_reference, tiny_models_root / "checkpoints" / f"{TINY_SDXL_NAME}.safetensors")


@pytest.fixture(scope="session")
def tiny_sdxl_refiner_file(tiny_models_root: Path, tiny_sdxl_refiner_reference) -> Path:
    """`checkpoints/tiny-sdxl-refiner.safetensors` in the refiner's original layout (`model.diffusion_model.*`,
    `first_stage_model.*`, `conditioner.embedders.0.model.*` OpenCLIP), with its sidecar."""
    from tests.support.ckpt_export import save_single_file

    path = tiny_models_root / "checkpoints" / f"{TINY_SDXL_REFINER_NAME}.safetensors"
    return save_single_file(tiny_sdxl_refiner_reference, path)


@pytest.fixture(scope="session")
def tiny_sd15_diffusers(tiny_models_root: Path, tiny_sd15_reference) -> Path:
    """`checkpoints/tiny-sd15-diffusers/`: the same model as a diffusers folder (model_index.json, safetensors)."""
    from tests.support.ckpt_export import write_diffusers_folder

    return write_diffusers_folder(tiny_sd15_reference, tiny_models_root / "checkpoints" / f"{TINY_SD15_NAME}-diffusers")


@pytest.fixture(scope="session")
def tiny_sdxl_diffusers(tiny_models_root: Path, tiny_sdxl_reference) -> Path:
    """`checkpoints/tiny-sdxl-diffusers/`: the tiny SDXL model as a diffusers folder."""
    from tests.support.ckpt_export import write_diffusers_folder

    return write_diffusers_folder(tiny_sdxl_reference, tiny_models_root / "checkpoints" / f"{TINY_SDXL_NAME}-diffusers")


@pytest.fixture(scope="session")
def tiny_models_dir(
    tiny_models_root: Path, tiny_sd15_file, tiny_sdxl_file, tiny_sd15_diffusers, tiny_sdxl_diffusers, tiny_sdxl_refiner_file
) -> Path:
    """A models folder as users lay it out, with all five tiny models in `checkpoints/`:

    checkpoints/tiny-sd15.safetensors (+ .config.json), checkpoints/tiny-sdxl.safetensors (+ .config.json),
    checkpoints/tiny-sd15-diffusers/, checkpoints/tiny-sdxl-diffusers/,
    checkpoints/tiny-sdxl-refiner.safetensors (+ .config.json); loras/, vae/, embeddings/ empty.
    """
    return tiny_models_root


@pytest.fixture(scope="session")
def tiny_sd15_inpainting_reference():
    """The in-memory tiny SD1.5 inpainting pipeline (a 9-channel UNet, seed 2) written to disk."""
    from tests.support.layout import laid_out_as_loaded
    from tests.support.tiny_models import tiny_sd15_inpainting_pipeline

    return laid_out_as_loaded(tiny_sd15_inpainting_pipeline(seed=TINY_SD15_INPAINTING_SEED))


@pytest.fixture(scope="session")
def inpaint_models_dir(tiny_models_dir: Path, tiny_sd15_inpainting_reference, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny-sd15, tiny-sdxl, its refiner (linked) and `checkpoints/tiny-sd15-inpainting.ckpt`: the inpainting
    model as sd-v1-5-inpainting.ckpt is published, a pickled {"state_dict": ...} in the original LDM layout whose
    first UNet convolution takes 9 channels. Its sidecar describes the tiny SD1.5 architecture with 4 input
    channels, as the bundled configs describe the full-size one: the loader must read the 9 from the tensors."""
    import json

    from pipelines.loading.configs import sidecar_path
    from tests.support.ckpt_export import save_single_file
    from tests.support.live_app import link_checkpoints

    root = tmp_path_factory.mktemp("inpaint-models")
    link_checkpoints(tiny_models_dir, root, (TINY_SD15_NAME, TINY_SDXL_NAME, TINY_SDXL_REFINER_NAME))
    path = save_single_file(tiny_sd15_inpainting_reference, root / "checkpoints" / f"{TINY_SD15_INPAINTING_NAME}.ckpt")
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    sidecar["unet"]["in_channels"] = 4
    sidecar_path(path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def engine(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The engine on the five tiny models (CPU, fp32), one per test module; tests/support/engine.py has `run`.
    Modules that need other files (LoRAs, VAEs, styles) define their own `engine` with `running_engine`."""
    from tests.support.engine import running_engine

    with running_engine(tiny_models_dir, tmp_path_factory.mktemp("outputs")) as services:
        yield services


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make any outgoing connection fail loudly, to prove a code path never touches the network."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
