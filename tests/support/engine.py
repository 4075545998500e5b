"""The engine as tests use it: built on a models folder, jobs submitted and waited for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.config import AppConfig
from pipelines.services import Services, build_services
from pipelines.types import GenerationRequest, JobInfo

SIZE = {"width": 64, "height": 64}  # the tiny models' native size: 8x8 latents, fast and still real


@contextmanager
def running_engine(models_dir: Path, output_dir: Path, **settings: Any) -> Iterator[Services]:
    """Services with a worker, on the CPU in fp32 unless `settings` say otherwise; closed on exit."""
    settings = {"device": "cpu", "precision": "fp32", **settings}
    services = build_services(AppConfig(models_dir=models_dir, output_dir=output_dir, **settings))
    try:
        yield services
    finally:
        services.close()


def run(services: Services, timeout: float = 300, **fields: Any) -> JobInfo:
    """Submit one request (64x64 unless given) through the queue and wait for its end."""
    job_id = services.queue.submit(GenerationRequest(**{**SIZE, **fields}))
    return services.queue.wait(job_id, timeout=timeout)
