"""What the listing routes answer (sd-models, loras, samplers, schedulers, prompt-styles, memory), in A1111's shapes.

Only reads: the registry, the sampler table and the style library own the data; this module words it
the way A1111 clients expect (titles like "name.safetensors [hash]", lowercase scheduler ids...).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pipelines import (
    Architecture,
    ModelFormat,
    ModelKind,
    ModelNotFound,
    ModelRecord,
    ModelRegistry,
    SamplerTable,
    Services,
    embedding_shape,
    embedding_word,
    header_metadata,
)
from ui.api.schemas import (
    EmbeddingItem,
    EmbeddingsResponse,
    LoraItem,
    PromptStyleItem,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    SDVaeItem,
)

_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")


# -- checkpoints


def model_file_name(record: ModelRecord) -> str:
    """The name A1111 titles a checkpoint by: its path in the folder, with the suffix (a folder or hub id as is)."""
    if record.format is ModelFormat.SINGLE_FILE and record.path is not None:
        return record.name + record.path.suffix
    return record.name


def model_title(record: ModelRecord, sha256: str | None) -> str:
    """A1111's title: "sub/name.safetensors [0123456789]", the hash only once it is known."""
    name = model_file_name(record)
    return f"{name} [{sha256[:10]}]" if sha256 else name


def find_checkpoint(registry: ModelRegistry, text: str) -> ModelRecord:
    """A checkpoint from anything an A1111 client sends: a title with or without "[hash]", a file name, a stem."""
    name = _TITLE_HASH.sub("", str(text)).strip()
    if not name:
        raise ModelNotFound("No checkpoint name was given.")
    return registry.find(ModelKind.CHECKPOINT, name)


def sd_model_items(services: Services) -> list[SDModelItem]:
    items = []
    for record in services.registry.checkpoints():
        if not record.usable:
            continue
        sha256 = services.manager.known_hash(record)
        items.append(
            SDModelItem(
                title=model_title(record, sha256),
                model_name=record.name.replace("/", "_"),
                hash=sha256[:10] if sha256 else None,
                sha256=sha256,
                filename=str(record.path) if record.path is not None else (record.hub_id or record.name),
                config=str(record.config_dir) if record.config_dir is not None else None,
            )
        )
    return items


# -- LoRAs


def safetensors_metadata(record: ModelRecord) -> dict[str, Any]:
    """The training metadata a LoRA file carries (kohya's ss_* keys); JSON values decoded, as A1111 does."""
    text = header_metadata(record.path) if record.path is not None else {}
    metadata: dict[str, Any] = {}
    for key, value in dict(text).items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        metadata[str(key)] = value
    return metadata


def lora_items(services: Services) -> list[LoraItem]:
    items = []
    for record in services.registry.list(ModelKind.LORA):
        metadata = safetensors_metadata(record)
        name = record.name.rsplit("/", 1)[-1]
        alias = metadata.get("ss_output_name")
        items.append(
            LoraItem(
                name=name,
                alias=alias if isinstance(alias, str) and alias else name,
                path=str(record.path),
                metadata=metadata,
            )
        )
    return items


# -- VAEs and embeddings


def sd_vae_items(services: Services) -> list[SDVaeItem]:
    """Installed VAEs, named as sd_vae takes them (the path in the folder, with the suffix)."""
    return [
        SDVaeItem(model_name=model_file_name(record), filename=str(record.path))
        for record in services.registry.list(ModelKind.VAE)
        if record.path is not None
    ]


def embedding_items(services: Services) -> EmbeddingsResponse:
    """A1111's split: `loaded` fit the default checkpoint, `skipped` do not (or cannot be read)."""
    try:
        architecture = services.manager.default_record().architecture
    except Exception:  # no checkpoint: nothing to tell them apart by
        architecture = None
    loaded, skipped = {}, {}
    for record in services.registry.list(ModelKind.EMBEDDING):
        word = embedding_word(record)
        shape = embedding_shape(record)
        if shape is None:
            skipped[word] = EmbeddingItem()
            continue
        item = EmbeddingItem(shape=shape[1], vectors=shape[0])
        fits = architecture is None or record.architecture in (architecture, Architecture.UNKNOWN)
        (loaded if fits else skipped)[word] = item
    return EmbeddingsResponse(loaded=loaded, skipped=skipped)


# -- samplers and schedule types


def scheduler_id(label: str) -> str:
    """A1111's scheduler ids are lowercase with underscores: "SGM Uniform" -> "sgm_uniform"."""
    return label.lower().replace(" ", "_")


def sampler_items(table: SamplerTable) -> list[SamplerItem]:
    return [
        SamplerItem(
            name=name,
            aliases=table.sampler_aliases(name),
            options={"schedulers": [scheduler_id(s) for s in table.supported_schedules(name)]},
        )
        for name in table.samplers
    ]


def scheduler_items(table: SamplerTable) -> list[SchedulerItem]:
    items = []
    for label in table.schedules:
        name = scheduler_id(label)
        aliases = [a for a in table.schedule_aliases(label) if a != name]
        items.append(SchedulerItem(name=name, label=label, aliases=aliases, default_rho=None, need_inner_model=False))
    return items


# -- styles


def style_items(services: Services) -> list[PromptStyleItem]:
    """Every style of the library, with its templates, as A1111 lists its styles.csv."""
    return [
        PromptStyleItem(name=style.name, prompt=style.prompt, negative_prompt=style.negative_prompt)
        for style in services.styles.all()
    ]


# -- memory


def memory_stats() -> tuple[dict[str, Any], dict[str, Any]]:
    """(ram, cuda) as A1111 reports them: ram "used" is this process's resident memory."""
    try:
        import psutil

        total = psutil.virtual_memory().total
        rss = psutil.Process(os.getpid()).memory_info().rss
        ram: dict[str, Any] = {"free": total - rss, "used": rss, "total": total}
    except Exception as exc:  # psutil missing or refused: say so, as A1111 does
        ram = {"error": str(exc)}
    try:
        import torch

        if not torch.cuda.is_available():
            return ram, {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"),
            "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as exc:
        cuda = {"error": str(exc)}
    return ram, cuda
