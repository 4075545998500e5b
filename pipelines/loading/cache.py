"""Loaded pipelines, kept in least-recently-used order within a memory budget.

Switching back to a model used a moment ago must not read it from disk again. On a GPU, a model
pushed out of video memory is first parked in system RAM (a copy over PCIe is far cheaper than a
reload from disk) and only dropped when RAM is over its budget too.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
from typing import Callable, Iterable

import torch

from pipelines.loading.loader import LoadedModel, module_bytes
from pipelines.speed.allocator import release_freed_memory
from pipelines.types import ModelRecord

log = logging.getLogger(__name__)


def record_key(record: ModelRecord) -> str:
    return f"{record.format.value}:{record.path or record.hub_id}"


class ModelCache:
    def __init__(self, device: torch.device, device_budget: int, host_budget: int | None = None):
        self.device = device
        self.device_budget = device_budget
        # On the CPU the device is the host: one tier only.
        self.host_budget = 0 if device.type == "cpu" else (host_budget or 0)
        self._on_device: collections.OrderedDict[str, LoadedModel] = collections.OrderedDict()
        self._parked: collections.OrderedDict[str, LoadedModel] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times the loader ran (tests read it)

    def get(self, record: ModelRecord, load: Callable[[], LoadedModel], keep: Iterable[ModelRecord] = ()) -> LoadedModel:
        """The loaded model, from memory when it can be; `keep`: models in use by the same job, never pushed out.

        A job that needs two models (base and refiner) keeps both on the device even when the budget holds
        only one: the alternative, moving one out between the two stages of every image, is slower.
        """
        key = record_key(record)
        keep_keys = {record_key(r) for r in keep}
        with self._lock:
            if key in self._on_device:
                self._on_device.move_to_end(key)
                return self._on_device[key]
            parked = self._parked.pop(key, None)
        if parked is not None:
            self._make_room(parked.size_bytes, key, keep_keys)
            parked.pipe.to(self.device)
            with self._lock:
                self._on_device[key] = parked
            return parked
        model = load()
        self.loads += 1
        self._make_room(model.size_bytes, key, keep_keys)
        with self._lock:
            self._on_device[key] = model
        return model

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._on_device.values()) + list(self._parked.values())

    def is_loaded(self, record: ModelRecord) -> bool:
        key = record_key(record)
        with self._lock:
            return key in self._on_device or key in self._parked

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.size_bytes for m in self._on_device.values())

    def clear(self) -> None:
        with self._lock:
            self._on_device.clear()
            self._parked.clear()
        self._collect()

    def _make_room(self, incoming: int, incoming_key: str, keep: set[str]) -> None:
        """Evict least recently used models until `incoming` bytes fit (the newest and `keep` always stay)."""
        while True:
            with self._lock:
                used = sum(m.size_bytes for k, m in self._on_device.items() if k != incoming_key)
                victims = [k for k in self._on_device if k != incoming_key and k not in keep]
                if used + incoming <= self.device_budget or not victims:
                    return
                key = victims[0]
                model = self._on_device.pop(key)
            self._park(key, model)

    def _park(self, key: str, model: LoadedModel) -> None:
        if self.host_budget and model.size_bytes <= self.host_budget:
            model.pipe.to("cpu")
            with self._lock:
                self._parked[key] = model
                while sum(m.size_bytes for m in self._parked.values()) > self.host_budget and len(self._parked) > 1:
                    dropped_key, _ = self._parked.popitem(last=False)
                    log.info("dropped %s from the RAM cache", dropped_key)
            log.info("parked %s in RAM", model.name)
        else:
            log.info("unloaded %s", model.name)
        del model
        self._collect()

    def _collect(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        release_freed_memory()  # the host's counterpart: a model's RAM goes back to the system


__all__ = ["ModelCache", "record_key", "module_bytes"]
