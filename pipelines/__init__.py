"""The engine: models, prompts, styles, the queue and generation. Never imports the UI.

What the page, the /generate endpoint and the HTTP API may use is exported here, and only here
(tests/test_project_shape.py holds the UI to it): building the services, the request and result
types, the queue's events and errors, and the few tables and readers the forms need. Names are
imported on first use, so `import pipelines` stays light (no torch until something needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.about import APP_NAME, __version__

_SURFACE: dict[str, tuple[str, ...]] = {
    # building and owning the engine
    "pipelines.config": ("AppConfig",),
    "pipelines.services": ("Services", "build_services"),
    # requests, results, records
    "pipelines.types": (
        "Architecture",
        "GenerationRequest",
        "GenerationResult",
        "HiresFix",
        "ImageInput",
        "ImageParams",
        "JobInfo",
        "JobState",
        "LoraRef",
        "ModelFormat",
        "ModelKind",
        "ModelRecord",
        "SeedBehavior",
    ),
    "pipelines.errors": ("EaselError", "InvalidRequest", "ModelNotFound"),
    "pipelines.validation": ("LIMITS", "LORA_WEIGHT", "MAX_LORAS", "validate"),
    # the queue: submit, cancel, skip, status, events
    "pipelines.jobs.queue": ("JobQueue", "QueueFull"),
    "pipelines.jobs.events": (
        "Event",
        "ImageReady",
        "JobCancelled",
        "JobFailed",
        "JobFinished",
        "JobPosition",
        "JobProgress",
        "JobQueued",
        "JobStarted",
        "JobStatus",
    ),
    # tables and readers the forms and the API's listings use
    "pipelines.samplers": ("SamplerTable",),
    "pipelines.performance": ("PerformanceTable",),
    "pipelines.prompts.styles": ("PLACEHOLDER", "Style", "StyleLibrary"),
    "pipelines.prompts.embeddings": ("embedding_shape", "embedding_word"),
    "pipelines.loras.info": ("header_metadata",),
    "pipelines.loading.registry": ("ModelRegistry",),
    "pipelines.loading.vae": ("find_vae", "own_vae_name"),
    "pipelines.generation.refiner": ("REFINER_ARCHITECTURES", "check_pair"),
    "pipelines.generation.image_input": ("InputModes",),
    "pipelines.images.resize": ("ResizeMode",),
    "pipelines.images.inputs": ("StoredInput",),
    "pipelines.generation.quality": ("CONTROL_FIELDS", "page_defaults", "swap_methods"),
    "pipelines.prompts.expansion": ("where_to_get_one",),
    "pipelines.outputs.fooocus_controls": ("FOOOCUS_V2", "control_request_fields", "record_request_fields"),
    "pipelines.outputs.metadata": ("EXTENSIONS", "encode_image", "infotext", "normalize_format"),
    "pipelines.outputs.reading": ("ImageMetadata", "parse_name_list", "read_metadata"),
}
_WHERE = {name: module for module, names in _SURFACE.items() for name in names}

__all__ = ["APP_NAME", "__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
