"""An image made: its metadata from what was really done, the file written and indexed, the result handed back.

What was really done (`generation`: the performance mode applied, the styled prompts) goes into the
metadata; the file also keeps the user's own request, so History can restore the form as it was filled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipelines.about import APP_NAME, __version__
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import LoadedModel
from pipelines.loras.patching import LoraActivation
from pipelines.outputs.history import History
from pipelines.outputs.metadata import infotext
from pipelines.outputs.store import ImageStore
from pipelines.prompts.embeddings import embedding_word
from pipelines.prompts.image_plans import ImagePlan
from pipelines.samplers import SamplerChoice
from pipelines.types import GenerationRequest, ImageParams, ImageResult, ModelRecord, UsedEmbedding


@dataclass
class ImageKeeper:
    store: ImageStore
    history: History
    hashes: HashCache

    def params(
        self,
        model: LoadedModel,
        request: GenerationRequest,
        generation: GenerationRequest,
        choice: SamplerChoice,
        plan: ImagePlan,
        loras: LoraActivation | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ImageParams:
        """The metadata of image `plan` (`extra`: what the job's passes add: refiner, VAE, input, controls)."""
        return ImageParams(
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            steps=generation.steps,
            sampler=choice.sampler,
            scheduler=choice.schedule,
            cfg_scale=generation.cfg_scale,
            seed=plan.seed,
            width=generation.width,
            height=generation.height,
            model=model.name,
            model_hash=model.short_hash,
            architecture=model.architecture.value,
            prompt_template=request.prompt if request.prompt != plan.prompt else "",
            negative_template=request.negative_prompt if request.negative_prompt != plan.negative_prompt else "",
            styles=request.styles,
            loras=tuple(loras.applied) if loras else (),
            clip_skip=request.clip_skip,
            performance=generation.performance,
            batch_index=plan.index,
            version=f"{APP_NAME} {__version__}",
            **(extra or {}),
        )

    def embedding_refs(self, records: tuple[ModelRecord, ...]) -> tuple[UsedEmbedding, ...]:
        """Names and file hashes of the textual inversions used, for A1111's `TI hashes`."""
        return tuple(UsedEmbedding(embedding_word(r), self.hashes.model_hash(r.path)) for r in records if r.path is not None)

    def keep(self, job_id: str, request: GenerationRequest, params: ImageParams, image: Any) -> ImageResult:
        """The image saved with its metadata and indexed (when the request asks for it), as a result."""
        path = None
        if request.save_images:
            path = self.store.save(image, params, request, request.output_format)
            self.history.add(path, params, request, job_id, time.time())
        return ImageResult(path=path, params=params, infotext=infotext(params), image=image)
