"""History: a durable, searchable index that survives restarts and rebuilds itself from the images."""

from __future__ import annotations

import io
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.outputs.history import History, params_from_metadata
from pipelines.outputs.reading import read_metadata
from pipelines.outputs.store import ImageStore
from pipelines.types import AppliedLora, GenerationRequest, ImageParams


def make_params(prompt: str = "a cat", seed: int = 1, **changes) -> ImageParams:
    base = dict(
        prompt=prompt,
        negative_prompt="blurry",
        steps=20,
        sampler="Euler a",
        scheduler="Automatic",
        cfg_scale=6.5,
        seed=seed,
        width=64,
        height=64,
        model="dreamshaper_8",
        model_hash="0123456789",
    )
    base.update(changes)
    return ImageParams(**base)


def request_for(params: ImageParams) -> GenerationRequest:
    return GenerationRequest(
        prompt=params.prompt, negative_prompt=params.negative_prompt, seed=params.seed, model=params.model, styles=params.styles
    )


@pytest.fixture
def history(tmp_path):
    with History(tmp_path / "history.sqlite3") as h:
        yield h


def test_add_get_and_newest_first(history, tmp_path):
    ids = [
        history.add(
            tmp_path / f"{n}.png",
            make_params(f"image {n}", n),
            request_for(make_params(f"image {n}", n)),
            job_id=f"job{n}",
            created_at=1000.0 + n,
        )
        for n in range(5)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 5
    entry = history.get(ids[2])
    assert entry.params == make_params("image 2", 2) and entry.request == request_for(make_params("image 2", 2))
    assert entry.job_id == "job2" and entry.created_at == 1002.0 and entry.path == (tmp_path / "2.png").absolute()
    assert [e.params.seed for e in history.list()] == [4, 3, 2, 1, 0]
    assert history.get(9999) is None


def test_created_at_orders_even_when_added_out_of_order(history):
    history.add("b.png", make_params(seed=2), created_at=200.0)
    history.add("a.png", make_params(seed=1), created_at=100.0)
    history.add("c.png", make_params(seed=3), created_at=300.0)
    assert [e.params.seed for e in history.list()] == [3, 2, 1]


def test_pagination(history):
    for n in range(12):
        history.add(f"{n}.png", make_params(seed=n), created_at=float(n))
    pages = [history.list(limit=5, offset=o) for o in (0, 5, 10, 15)]
    assert [[e.params.seed for e in page] for page in pages] == [[11, 10, 9, 8, 7], [6, 5, 4, 3, 2], [1, 0], []]
    assert history.count() == 12


def test_filter_case_insensitive_in_prompt_negative_model_styles(history):
    history.add("1.png", make_params("A Red FOX in snow", 1), created_at=1.0)
    history.add("2.png", make_params("a cat", 2, negative_prompt="Foxes, ugly"), created_at=2.0)
    history.add("3.png", make_params("a dog", 3, model="FoxMix_v2"), created_at=3.0)
    history.add("4.png", make_params("a bird", 4, styles=("Fooocus Sharp", "Ünïcode Style")), created_at=4.0)
    history.add("5.png", make_params("Straße bei Nacht", 5), created_at=5.0)
    assert [e.params.seed for e in history.list("fox")] == [3, 2, 1]
    assert history.count("FOX") == 3
    assert [e.params.seed for e in history.list("sharp")] == [4]
    assert [e.params.seed for e in history.list("ÜNÏCODE")] == [4]
    assert [e.params.seed for e in history.list("STRASSE")] == [5]  # casefold, not only ASCII
    assert [e.params.seed for e in history.list("red snow")] == [1]  # every word must match
    assert history.list("zebra") == [] and history.count("zebra") == 0
    assert [e.params.seed for e in history.list("fox", limit=1, offset=1)] == [2]
    assert history.list("100%_'\"") == []  # no SQL wildcards or quoting surprises


def test_delete_removes_only_the_row(history, tmp_path):
    image = tmp_path / "keep.png"
    image.write_bytes(b"x")
    entry_id = history.add(image, make_params())
    assert history.delete(entry_id) is True
    assert history.get(entry_id) is None and history.count() == 0
    assert image.exists()
    assert history.delete(entry_id) is False


def test_reopen_keeps_entries(tmp_path):
    db = tmp_path / "history.sqlite3"
    params = make_params("persist me", 9, loras=(AppliedLora("detail", 0.5, "aaaabbbbcccc"),), styles=("Cinematic",))
    with History(db) as h:
        entry_id = h.add(tmp_path / "p.png", params, request_for(params), job_id="j1", created_at=5.0)
    with History(db) as h:
        entry = h.get(entry_id)
        assert entry.params == params and entry.request == request_for(params) and entry.job_id == "j1"
        assert h.count() == 1
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_adds(history):
    def work(worker: int) -> None:
        for i in range(25):
            history.add(f"{worker}-{i}.png", make_params(seed=worker * 100 + i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert history.count() == 200 and len({e.id for e in history.list(limit=500)}) == 200


def _save_outputs(outputs: Path) -> list[tuple[Path, ImageParams, GenerationRequest]]:
    store = ImageStore(outputs)
    saved = []
    for n in range(3):
        params = make_params(f"saved {n}", n)
        request = request_for(params)
        path = store.save(
            Image.new("RGB", (8, 8)), params, request, "png" if n != 1 else "webp", when=datetime(2026, 1, 2, 3, 4, 5 + n)
        )
        saved.append((path, params, request))
    return saved


def test_rebuild_from_outputs(tmp_path):
    outputs = tmp_path / "outputs"
    saved = _save_outputs(outputs)
    (outputs / "2026-01-02" / ".20260102-030409-0001.tmp").write_bytes(b"half an image")
    (outputs / "notes.txt").write_text("not an image")
    (outputs / "plain.png").write_bytes(_png_with_parameters(None))  # an image without metadata: skipped
    (outputs / "from_a1111.png").write_bytes(
        _png_with_parameters(
            "a lighthouse\nNegative prompt: fog\nSteps: 25, Sampler: Euler a, CFG scale: 5, Seed: 99, Size: 8x8, "
            'Model hash: 45dee52b, Model: v1-5, Lora hashes: "detail: aaaabbbbcccc", Version: v1.10.1'
        )
    )
    with History(tmp_path / "h.sqlite3") as h:
        assert h.rebuild_from_outputs(outputs) == 4
        assert h.rebuild_from_outputs(outputs) == 0  # already indexed
        entries = {e.path.name: e for e in h.list(limit=10)}
    for path, params, request in saved:
        entry = entries[path.name]
        assert entry.params == params and entry.request == request
        assert entry.created_at == datetime(2026, 1, 2, 3, 4, 5 + params.seed).timestamp()
    foreign = entries["from_a1111.png"]
    assert foreign.request is None and foreign.params.prompt == "a lighthouse" and foreign.params.seed == 99
    assert foreign.params.loras == (AppliedLora("detail", 1.0, "aaaabbbbcccc"),)


def _png_with_parameters(text: str | None) -> bytes:
    info = PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_garbage_db_is_moved_aside_and_rebuilt(tmp_path):
    outputs = tmp_path / "outputs"
    saved = _save_outputs(outputs)
    db = tmp_path / "history.sqlite3"
    db.write_bytes(b"this is definitely not a sqlite database" * 100)
    with History(db, output_dir=outputs) as h:
        assert h.recovered_from is not None and h.recovered_from.name.startswith("history.sqlite3.corrupt-")
        assert h.recovered_from.read_bytes().startswith(b"this is definitely")
        assert sorted(e.params.seed for e in h.list()) == [0, 1, 2]
        assert {e.path for e in h.list()} == {p.absolute() for p, _, _ in saved}
    with History(db, output_dir=outputs) as h:  # the rebuilt file is healthy: no second recovery
        assert h.recovered_from is None and h.count() == 3


def test_damaged_pages_are_detected_and_rebuilt(tmp_path):
    outputs = tmp_path / "outputs"
    _save_outputs(outputs)
    db = tmp_path / "history.sqlite3"
    with History(db) as h:
        for n in range(300):
            h.add(f"old{n}.png", make_params("x" * 200, n))
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(db.read_bytes())
    data[4096 + 100 : 4096 * 4] = b"\xa5" * (4096 * 3 - 100)  # scribble over a few b-tree pages
    db.write_bytes(bytes(data))
    with History(db, output_dir=outputs) as h:
        assert h.recovered_from is not None
        assert sorted(e.params.seed for e in h.list()) == [0, 1, 2]


def test_missing_db_with_outputs_is_rebuilt(tmp_path):
    outputs = tmp_path / "outputs"
    _save_outputs(outputs)
    with History(tmp_path / "new" / "history.sqlite3", output_dir=outputs) as h:
        assert h.recovered_from is None and h.count() == 3


def test_params_from_fooocus_metadata():
    info = PngInfo()
    info.add_text("fooocus_scheme", "fooocus")
    info.add_text(
        "parameters",
        '{"prompt": "a fox", "negative_prompt": "", "steps": 30, "seed": "77", '
        '"resolution": "(1024, 1024)", "guidance_scale": 4.0, "sampler": "dpmpp_2m_sde_gpu", '
        '"scheduler": "karras", "base_model": "juggernautXL.safetensors", "base_model_hash": "aeb7e9e689", '
        '"styles": "[\'Fooocus V2\']", "loras": [["offset.safetensors", 0.1, "4852686128"]]}',
    )
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG", pnginfo=info)
    params = params_from_metadata(read_metadata(out.getvalue()))
    assert (params.prompt, params.seed, params.steps, params.width, params.cfg_scale) == ("a fox", 77, 30, 1024, 4.0)
    assert params.model == "juggernautXL" and params.styles == ("Fooocus V2",) and params.scheduler == "karras"
    assert params.loras == (AppliedLora("offset", 0.1, "4852686128"),)
    assert params_from_metadata(read_metadata(_png_with_parameters("just a prompt"))) is None


def test_corruption_found_mid_session_is_recovered(tmp_path):
    outputs = tmp_path / "outputs"
    _save_outputs(outputs)
    db = tmp_path / "history.sqlite3"
    with History(db, output_dir=outputs) as h:
        h.add("not-on-disk.png", make_params(seed=50))
        assert h.count() == 4
        calls = []

        def query(conn: sqlite3.Connection) -> int:
            calls.append(1)
            if len(calls) == 1:  # what SQLite raises when it meets a damaged page
                raise sqlite3.DatabaseError("database disk image is malformed")
            return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

        assert h._run(query) == 3  # the old file moved aside, the index rebuilt from the images
        assert h.recovered_from is not None and h.recovered_from.exists()
        assert sorted(e.params.seed for e in h.list()) == [0, 1, 2]
        with pytest.raises(sqlite3.OperationalError):  # busy/locked errors are not "corruption"
            h._run(lambda conn: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")))
        assert h.count() == 3
