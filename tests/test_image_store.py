"""ImageStore: dated folders, unique sortable names under concurrency, atomic writes."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.outputs import store as image_store
from pipelines.outputs.reading import read_metadata
from pipelines.outputs.store import ImageStore, iter_images, time_from_name
from pipelines.types import GenerationRequest, ImageParams

WHEN = datetime(2026, 11, 23, 15, 5, 12)
NAME = re.compile(r"^20261123-150512-(\d{4})-(\d+)\.(png|jpg|webp)$")


def make_params(seed: int = 42) -> ImageParams:
    return ImageParams(
        prompt="a cat",
        negative_prompt="",
        steps=4,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=7.0,
        seed=seed,
        width=8,
        height=8,
        model="m",
        model_hash="0123456789",
    )


def image() -> Image.Image:
    return Image.new("RGB", (8, 8), "red")


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_save_writes_dated_folder_and_metadata(tmp_path):
    store = ImageStore(tmp_path / "outputs")
    request = GenerationRequest(prompt="a cat", seed=42, output_format="jpg")
    path = store.save(image(), make_params(), request, when=WHEN)  # format taken from the request
    assert path.parent == tmp_path / "outputs" / "2026-11-23"
    assert NAME.match(path.name).groups() == ("0001", "42", "jpg")
    with Image.open(path) as img:
        assert img.format == "JPEG"
    meta = read_metadata(path)
    assert meta.source_app == "easel" and meta.request == request.to_dict()
    assert time_from_name(path) == WHEN.timestamp()
    second = store.save(image(), make_params(7), request, "png", when=WHEN)
    assert NAME.match(second.name).groups() == ("0002", "7", "png")
    assert sorted([path.name, second.name]) == [path.name, second.name]


def test_save_uses_local_date_by_default(tmp_path):
    before = datetime.now().strftime("%Y-%m-%d")
    path = ImageStore(tmp_path).save(image(), make_params(), None, "png")
    assert path.parent.name in {before, datetime.now().strftime("%Y-%m-%d")}  # midnight may pass meanwhile


def test_bad_format_is_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidRequest) as err:
        ImageStore(tmp_path).save(image(), make_params(), None, "tiff", when=WHEN)
    assert err.value.field == "output_format"
    assert all_files(tmp_path) == []


def test_names_unique_with_eight_threads(tmp_path):
    store = ImageStore(tmp_path)
    paths: list[Path] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(6):
            p = store.save(image(), make_params(worker * 100 + i), None, "png", when=WHEN)
            with lock:
                paths.append(p)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 48 and len(set(paths)) == 48
    counters = sorted(int(NAME.match(p.name).group(1)) for p in paths)
    assert counters == list(range(1, 49))  # one number per image, none skipped, none shared
    assert all_files(tmp_path) == sorted(paths)  # no temp files left behind


def _save_in_process(args: tuple[str, int]) -> list[str]:
    root, worker = args
    store = ImageStore(Path(root))
    return [str(store.save(image(), make_params(worker), None, "png", when=WHEN)) for _ in range(5)]


def test_names_unique_across_processes(tmp_path):
    with ProcessPoolExecutor(max_workers=4) as pool:
        results = [p for batch in pool.map(_save_in_process, [(str(tmp_path), n) for n in range(4)]) for p in batch]
    counters = sorted(int(NAME.match(Path(p).name).group(1)) for p in results)
    assert counters == list(range(1, 21))


def test_failing_encoder_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(image_store, "encode_image", broken)
    with pytest.raises(RuntimeError):
        ImageStore(tmp_path).save(image(), make_params(), None, "png", when=WHEN)
    assert all_files(tmp_path) == []


def test_failing_replace_leaves_no_final_and_no_temp(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ImageStore(tmp_path).save(image(), make_params(), None, "png", when=WHEN)
    monkeypatch.undo()
    assert all_files(tmp_path) == []
    assert list(iter_images(tmp_path)) == []


def test_crash_mid_write_leaves_only_a_hidden_temp_file(tmp_path, monkeypatch):
    """A crash (nothing cleans up) after half the bytes: no final name, and the temp file is no image."""
    real_write = os.write

    def half_write(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise KeyboardInterrupt  # stands in for the process dying

    monkeypatch.setattr(os, "write", half_write)
    monkeypatch.setattr(os, "unlink", lambda path: None)  # a dead process cleans nothing up
    store = ImageStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.save(image(), make_params(), None, "png", when=WHEN)
    monkeypatch.undo()
    leftovers = all_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and leftovers[0].name.endswith(".tmp")
    assert list(iter_images(tmp_path)) == [] and list(store.images()) == []
    path = ImageStore(tmp_path).save(image(), make_params(), None, "png", when=WHEN)  # the number is skipped
    assert NAME.match(path.name).group(1) == "0002"
    assert list(store.images()) == [path]
    os.utime(leftovers[0], (0, 0))
    assert store.remove_stale_temp_files() == 1
    assert all_files(tmp_path) == [path]
