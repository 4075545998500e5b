"""The current default model on the manager (what requests without a model use; the API's options set it)."""

from __future__ import annotations

import hashlib

import pytest

from pipelines.errors import ModelNotFound
from pipelines.loading.hashing import HashCache
from pipelines.types import JobState, ModelKind
from tests.support.engine import run


def made_with(services, **fields):
    """The parameters of the one image a small job made."""
    info = run(services, prompt="x", steps=1, seed=1, **fields)
    assert info.state is JobState.FINISHED, info.error
    return info.result.images[0].params


def test_switching_the_default_model(engine):
    manager = engine.manager
    first = [r for r in engine.registry.checkpoints() if r.usable][0]
    assert manager.default_model is None and manager.default_record() == first
    record = manager.set_default_model("tiny-sdxl.safetensors")  # any name find() takes; stored as the record's
    assert record.name == manager.default_model == "tiny-sdxl"
    assert made_with(engine).model == "tiny-sdxl"
    assert made_with(engine, model="tiny-sd15").model == "tiny-sd15"  # a request naming one still wins
    with pytest.raises(ModelNotFound):
        manager.set_default_model("no-such-model")
    assert manager.default_model == "tiny-sdxl"  # unchanged by the failed switch
    manager.set_default_model(None)
    assert manager.default_model is None and manager.default_record() == first


def test_known_hash_never_hashes_and_is_remembered(engine):
    record = engine.registry.find(ModelKind.CHECKPOINT, "tiny-sdxl")
    engine.cache.clear()
    sha256 = hashlib.sha256(record.path.read_bytes()).hexdigest()
    made_with(engine, model="tiny-sdxl")  # loading hashes the file
    assert engine.manager.known_hash(record) == sha256
    engine.cache.clear()
    assert engine.manager.known_hash(record) == sha256  # from the hash cache, not from a loaded model
    assert HashCache(engine.config.resolved_cache_dir / "hashes.json").known_model_hash(record.path) == sha256
    fresh = HashCache(engine.config.resolved_cache_dir / "other-hashes.json")
    assert fresh.known_model_hash(record.path) is None  # unknown: None, and nothing is computed
    assert not (engine.config.resolved_cache_dir / "other-hashes.json").exists()
