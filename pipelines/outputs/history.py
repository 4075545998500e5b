"""The history: an index of generated images, so the gallery can list and search them without opening files.

It is only an index. The images and their embedded metadata are the source of truth, which is why a lost or
corrupt database is never fatal: it is moved aside and re-created from the output folder. SQLite (stdlib)
gives durable, concurrent access; WAL mode lets the gallery read while a job writes. One connection is
shared behind a lock, which is simpler and fast enough for a single-user app.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import InvalidRequest
from pipelines.outputs.reading import ImageMetadata, parse_name_list, read_metadata, request_fields_from_params, split_hashed_name
from pipelines.outputs.store import iter_images, time_from_name
from pipelines.types import AppliedLora, GenerationRequest, ImageParams

SCHEMA_VERSION = 1
_COLUMNS = "id, path, created_at, job_id, params_json, request_json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    job_id TEXT,
    prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    styles TEXT NOT NULL DEFAULT '',
    search TEXT NOT NULL DEFAULT '',
    params_json TEXT NOT NULL,
    request_json TEXT
);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS entries_path ON entries (path);
"""


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    path: Path
    created_at: float  # seconds since the epoch
    params: ImageParams
    request: GenerationRequest | None
    job_id: str | None


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Corrupt or not a database at all, as opposed to busy/locked, which must not trigger a rebuild."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text or "not a database" in text


def params_from_metadata(meta: ImageMetadata) -> ImageParams | None:
    """ImageParams for an image on disk: ours exactly, else rebuilt from its infotext; None without any."""
    if meta.image_params:
        try:
            return ImageParams.from_dict(meta.image_params)
        except (TypeError, ValueError, KeyError):
            pass
    p, f = meta.params, request_fields_from_params(meta.params)
    if "seed" not in f and "steps" not in f:
        return None
    weights, hashes = dict(parse_name_list(p.get("Lora weights"))), dict(parse_name_list(p.get("Lora hashes")))
    loras = []
    for name in dict.fromkeys([*weights, *hashes]):
        try:
            weight = float(weights.get(name, 1.0))
        except ValueError:
            weight = 1.0
        loras.append(AppliedLora(name, weight, hashes.get(name, "")))
    text = {k: str(p[k]) for k in ("VAE", "VAE hash", "Refiner", "Performance") if p.get(k)}
    switch = p.get("Refiner switch at")
    refiner, refiner_hash = split_hashed_name(text["Refiner"]) if "Refiner" in text else (None, None)
    return ImageParams(
        prompt=str(p.get("Prompt", "")), negative_prompt=str(p.get("Negative prompt", "")),
        steps=f.get("steps", 0), sampler=f.get("sampler", ""), scheduler=f.get("scheduler", ""),
        cfg_scale=f.get("cfg_scale", 0.0), seed=f.get("seed", -1), width=f.get("width", 0), height=f.get("height", 0),
        model=f.get("model", ""), model_hash=str(p.get("Model hash", "")), loras=tuple(loras),
        styles=tuple(p["Styles"]) if isinstance(p.get("Styles"), list) else (), vae=text.get("VAE"),
        vae_hash=text.get("VAE hash"), refiner=refiner, refiner_hash=refiner_hash, performance=text.get("Performance"),
        refiner_switch=float(switch) if isinstance(switch, (int, float)) and not isinstance(switch, bool) else None,
        clip_skip=f.get("clip_skip", 1), version=str(p.get("Version", "")),
    )


def _search_text(params: ImageParams) -> str:
    """What the search box looks in, casefolded here because SQLite's LIKE only folds ASCII."""
    parts = [params.prompt, params.prompt_template, params.negative_prompt, params.negative_template,
             params.model, " ".join(params.styles)]
    return "\n".join(p for p in parts if p).casefold()


class History:
    """Index of saved images in one SQLite file.

    With `output_dir`, a database that had to be moved aside as corrupt (or was missing) is rebuilt from
    the images there; `recovered_from` then names the file that was moved aside.
    """

    def __init__(self, db_path: Path, output_dir: Path | None = None):
        self.db_path = Path(db_path)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.recovered_from: Path | None = None
        self._lock = threading.RLock()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.db_path.exists() and self.db_path.stat().st_size > 0
        self._conn = self._open()
        if (not existed or self.recovered_from) and self.output_dir is not None:
            self.rebuild_from_outputs(self.output_dir)

    # -- connection and recovery

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            self._prepare(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            foreign = "no such column" in str(exc)  # another program's (or version's) table
            if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc) and not foreign:
                raise  # locked, read-only, disk full: not ours to "fix" by discarding the file
        self._move_aside()
        conn = self._connect()
        self._prepare(conn)
        return conn

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.execute(f"SELECT {_COLUMNS}, prompt, search FROM entries LIMIT 1").fetchall()  # foreign schema: fails
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.db_path, target)
        except FileNotFoundError:  # already gone: nothing to keep
            pass
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.db_path.with_name(self.db_path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        self.recovered_from = target

    def _run(self, fn: Any) -> Any:
        """Run fn(conn) under the lock; if the file turns out corrupt mid-session, recover once and retry."""
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._conn.close()
                self._move_aside()
                self._conn = self._connect()
                self._prepare(self._conn)
                if self.output_dir is not None:
                    self.rebuild_from_outputs(self.output_dir)
                return fn(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entries

    @staticmethod
    def _row_values(path: Path | str, params: ImageParams, request: GenerationRequest | None, job_id: str | None,
                    created_at: float) -> tuple[Any, ...]:
        return (os.path.abspath(path), float(created_at), job_id, params.prompt, params.negative_prompt,
                params.model, "\n".join(params.styles), _search_text(params),
                json.dumps(params.to_dict(), ensure_ascii=False),
                json.dumps(request.to_dict(), ensure_ascii=False) if request is not None else None)

    _INSERT = ("INSERT INTO entries (path, created_at, job_id, prompt, negative_prompt, model, styles, search, "
               "params_json, request_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def add(self, path: Path | str, params: ImageParams, request: GenerationRequest | None = None,
            job_id: str | None = None, created_at: float | None = None) -> int:
        """Index one saved image; returns its entry id. created_at defaults to now."""
        values = self._row_values(path, params, request, job_id, time.time() if created_at is None else created_at)
        return int(self._run(lambda conn: conn.execute(self._INSERT, values).lastrowid))

    @staticmethod
    def _where(query: str) -> tuple[str, list[str]]:
        """Every whitespace-separated word must appear (case-insensitively) in prompt/negative/model/styles."""
        terms = [t.casefold() for t in str(query or "").split()]
        if not terms:
            return "", []
        return " WHERE " + " AND ".join("instr(search, ?) > 0" for _ in terms), terms

    def list(self, query: str = "", limit: int = 50, offset: int = 0) -> list[HistoryEntry]:
        """Entries matching `query`, newest first."""
        where, args = self._where(query)
        sql = f"SELECT {_COLUMNS} FROM entries{where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        bounds = [max(0, int(limit)), max(0, int(offset))]
        rows = self._run(lambda conn: conn.execute(sql, [*args, *bounds]).fetchall())
        return [self._entry(row) for row in rows]

    def count(self, query: str = "") -> int:
        where, args = self._where(query)
        return int(self._run(lambda conn: conn.execute(f"SELECT COUNT(*) FROM entries{where}", args).fetchone()[0]))

    def get(self, entry_id: int) -> HistoryEntry | None:
        sql = f"SELECT {_COLUMNS} FROM entries WHERE id = ?"
        row = self._run(lambda conn: conn.execute(sql, (int(entry_id),)).fetchone())
        return self._entry(row) if row is not None else None

    def find_path(self, path: Path | str) -> HistoryEntry | None:
        """The newest entry of the image file at `path` (History's click-through to an input's source)."""
        sql = f"SELECT {_COLUMNS} FROM entries WHERE path = ? ORDER BY id DESC LIMIT 1"
        row = self._run(lambda conn: conn.execute(sql, (os.path.abspath(path),)).fetchone())
        return self._entry(row) if row is not None else None

    def delete(self, entry_id: int) -> bool:
        """Forget an entry. The image file stays: deleting files is the caller's decision, not the index's."""
        return self._run(lambda conn: conn.execute("DELETE FROM entries WHERE id = ?", (int(entry_id),)).rowcount) > 0

    @staticmethod
    def _entry(row: sqlite3.Row) -> HistoryEntry:
        try:
            params = ImageParams.from_dict(json.loads(row["params_json"]))
        except (ValueError, TypeError, KeyError):  # written by an incompatible version: keep the row visible
            params = ImageParams(prompt="", negative_prompt="", steps=0, sampler="", scheduler="", cfg_scale=0.0,
                                 seed=-1, width=0, height=0, model="", model_hash="")
        request = None
        if row["request_json"]:
            try:
                request = GenerationRequest.from_dict(json.loads(row["request_json"]))
            except (ValueError, TypeError, KeyError):
                request = None
        return HistoryEntry(id=int(row["id"]), path=Path(row["path"]), created_at=float(row["created_at"]),
                            params=params, request=request, job_id=row["job_id"])

    # -- rebuild

    def rebuild_from_outputs(self, output_dir: Path) -> int:
        """Index every image under `output_dir` not indexed yet, from its embedded metadata.

        Files without usable parameters are skipped. Returns how many entries were added.
        """
        rows = []
        known = set(self._run(lambda conn: [r[0] for r in conn.execute("SELECT path FROM entries")]))
        for path in iter_images(Path(output_dir)):
            if os.path.abspath(path) in known:
                continue
            try:
                meta = read_metadata(path)
            except InvalidRequest:
                continue
            params = params_from_metadata(meta)
            if params is None:
                continue
            request = None
            if meta.request:
                try:
                    request = GenerationRequest.from_dict(meta.request)
                except (TypeError, ValueError, KeyError):
                    request = None
            created = time_from_name(path)
            if created is None:
                try:
                    created = path.stat().st_mtime
                except OSError:
                    continue
            rows.append(self._row_values(path, params, request, None, created))
        rows.sort(key=lambda r: r[1])  # ids then follow creation order

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            try:
                conn.executemany(self._INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if rows:
            self._run(insert)
        return len(rows)
