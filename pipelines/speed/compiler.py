"""The compiled UNet on the CPU: compiled once per machine in the background, loaded from a cache after.

How it goes:

1. A loaded model's UNet gets a UNetRunner (runner.py); its calls run eagerly.
2. The first call of a new shape (batch with or without CFG, dtype, layout) asks for a compile. A child
   process (warmup.py) compiles that graph at a lower priority while the worker goes on making images
   eagerly, and fills torch's persistent caches in `<cache dir>/compiled/inductor` (inductor's FX graph
   cache and the AOTAutograd cache). The page shows "Optimizing for this CPU (one time)…" with progress.
3. When it is done, the manifest (`compiled/manifest.json`) records the shape, and the runner switches to
   the compiled graph. Compiling it in the app now only re-traces the model and loads the cached kernels
   (seconds, no C++ compiler run); the worker does that while idle, or at the first call of a job.
4. At a later start the manifest says which graphs are ready: the worker loads the default model and its
   compiled graphs while no job is waiting, so the first image is already compiled.

Why a child process and not a thread: compiling takes minutes of Python (the GIL) and of C++ compiler
runs; in the app it would stall the worker or the page, a crash in it would end the app, and its priority
could not be lowered below the images'. Where compiling fails (no C++ compiler, an unsupported model),
the reason is logged and shown, and images stay eager: nothing is lost but the speed-up.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.config import REPO_ROOT
from pipelines.speed.runner import CallSpec, UNetRunner

log = logging.getLogger(__name__)

SECONDS_PER_MILLION_PARAMETERS = 0.2  # a first guess at the compile time, until this machine has measured one
NICENESS = 10  # the compile runs below the images' priority: a job in progress keeps the cores


@dataclass(frozen=True)
class CompileStatus:
    """What the page shows about compiling: phase off/idle/compiling/loading/ready/failed, and a sentence."""

    phase: str
    message: str
    fraction: float | None = None

    @property
    def busy(self) -> bool:
        return self.phase in ("compiling", "loading")


def compiler_problem() -> str | None:
    """Why inductor cannot compile on this machine (no C++ compiler), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # inductor raises plain RuntimeErrors for a missing compiler
        return f"no C++ compiler found ({exc}); install one (e.g. g++) to compile the UNet"
    return None


def family_of(unet: torch.nn.Module) -> str:
    """UNets that compile to the same graphs: config, dtype, torch version and CPU instruction set."""
    config = json.dumps({k: v for k, v in dict(unet.config).items() if not k.startswith("_")}, sort_keys=True, default=str)
    parts = [config, str(unet.dtype), torch.__version__, str(torch.backends.cpu.get_cpu_capability())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class _Task:
    runner: weakref.ref
    family: str
    label: str
    spec: CallSpec
    parameters: int

    @property
    def entry(self) -> str:
        return f"{self.family}-{self.spec.key}"


class UNetCompiler:
    """Owns the compile cache folder, the child process and what each attached UNet may run compiled."""

    def __init__(
        self,
        cache_dir: Path,
        enabled: bool = True,
        reason: str = "",
        command: list[str] | None = None,
        niceness: int = NICENESS,
    ):
        self.root = Path(cache_dir) / "compiled"
        self.enabled = enabled
        self.niceness = niceness  # benchmarks and tests on a shared machine use 0: others' load would starve it
        self.reason = reason  # why it is off, for the start line
        self.command = command or [sys.executable, "-m", "pipelines.speed.warmup"]
        self._runners: list[tuple[weakref.ref, str]] = []
        self._pending: collections.deque[_Task] = collections.deque()
        self._failed: dict[str, str] = {}
        self._warm: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._status = CompileStatus("idle", "")
        self._closing = False
        if enabled:
            problem = compiler_problem()
            if problem:
                self.enabled, self.reason = False, problem
                log.warning("the UNet is not compiled: %s", problem)
        if self.enabled:
            # process-wide by torch's design: the cache folder of every compile in this app
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.root / "inductor")

    # -- the manifest: graphs compiled on this machine ----------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _record(self, task: _Task, seconds: float) -> None:
        with self._lock:
            data = self.manifest()
            data[task.entry] = {"spec": task.spec.arguments, "label": task.label, "seconds": round(seconds, 1)}
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
                json.dump(data, tmp, indent=1)
            os.replace(tmp.name, self.manifest_path)

    def ready_specs(self, family: str) -> list[CallSpec]:
        return [CallSpec(v["spec"]) for k, v in self.manifest().items() if k.startswith(f"{family}-")]

    # -- attaching a loaded UNet --------------------------------------------------------------------

    def attach(self, pipe: Any, label: str) -> UNetRunner | None:
        """Install the runner on the pipeline's UNet, with the graphs this machine has compiled ready."""
        if not self.enabled:
            return None
        runner = UNetRunner.attach(pipe.unet)
        if runner.compiled is not None:
            return runner
        family = family_of(runner.unet)
        parameters = sum(p.numel() for p in runner.unet.parameters())
        specs = self.ready_specs(family)
        runner.seen.update({s.key: s for s in specs})
        runner.use_compiled(torch.compile(runner.eager), {s.key for s in specs})
        ref = weakref.ref(runner)
        runner.on_new_spec = lambda spec: self._request(_Task(ref, family, label, spec, parameters))
        with self._lock:
            self._runners.append((ref, family))
        return runner

    def _request(self, task: _Task) -> None:
        with self._lock:
            if task.entry in self._failed or any(t.entry == task.entry for t in self._pending) or self._closing:
                return
            self._pending.append(task)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._compile_all, name="unet-compiler", daemon=True)
                self._thread.start()

    # -- the background compile -----------------------------------------------------------------------

    def _compile_all(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self._closing:
                    self._thread = None
                    return
                task = self._pending.popleft()
            if task.entry in self.manifest():
                self._ready(task)
                continue
            try:
                self._compile(task)
            except Exception as exc:  # noqa: BLE001 - the compiler thread must end any failure with a reason
                self._fail(task, f"{type(exc).__name__}: {exc}")

    def _compile(self, task: _Task) -> None:
        expected = self._expected_seconds(task)
        started = time.monotonic()
        self._set_status("compiling", task, started, expected, "starting")
        self.root.mkdir(parents=True, exist_ok=True)
        task_file = self.root / f"task-{task.entry}.json"
        task_file.write_text(
            json.dumps(
                {
                    "cache_dir": str(self.root / "inductor"),
                    "unet_config": _config_of(task),
                    "dtype": str(_runner_dtype(task)).removeprefix("torch."),
                    "spec": task.spec.arguments,
                    "threads": torch.get_num_threads(),
                }
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        try:
            process = subprocess.Popen(
                [*self.command, str(task_file)],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda: os.nice(self.niceness)) if hasattr(os, "nice") and self.niceness else None,
            )
        except OSError as exc:
            self._fail(task, f"could not start the compiler process: {exc}")
            return
        self._process = process
        errors: collections.deque[str] = collections.deque(maxlen=20)
        reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
        reader.start()
        for line in process.stdout:
            self._set_status("compiling", task, started, expected, line.strip().removeprefix("phase "))
        code = process.wait()
        reader.join(5)
        self._process = None
        task_file.unlink(missing_ok=True)
        if self._closing:
            return
        if code != 0:
            reason = next((e.strip() for e in reversed(errors) if e.strip()), f"exit code {code}")
            self._fail(task, reason)
            return
        seconds = time.monotonic() - started
        self._record(task, seconds)
        log.info("compiled the %s UNet for %s in %.0f s (cached for later starts)", task.label, _shape_words(task.spec), seconds)
        self._ready(task)

    def _ready(self, task: _Task) -> None:
        runner = task.runner()
        if runner is not None:
            runner.use_compiled(runner.compiled or torch.compile(runner.eager), {task.spec.key})
        with self._lock:
            self._status = CompileStatus("ready", f"Optimized for this CPU: the {task.label} UNet is compiled.", 1.0)

    def _fail(self, task: _Task, reason: str) -> None:
        log.warning("compiling the %s UNet failed, images stay uncompiled: %s", task.label, reason)
        with self._lock:
            self._failed[task.entry] = reason
            self._status = CompileStatus("failed", f"Not compiled ({reason}); images are made uncompiled.", None)

    def _expected_seconds(self, task: _Task) -> float:
        measured = [v["seconds"] for v in self.manifest().values() if v.get("label") == task.label and v.get("seconds")]
        if measured:
            return float(max(measured))
        return max(30.0, task.parameters / 1e6 * SECONDS_PER_MILLION_PARAMETERS)

    def _set_status(self, phase: str, task: _Task, started: float, expected: float, step: str) -> None:
        elapsed = time.monotonic() - started
        fraction = min(0.95, elapsed / expected)
        message = (
            f"Optimizing for this CPU (one time): compiling the {task.label} UNet for {_shape_words(task.spec)}, "
            f"{_clock(elapsed)} of about {_clock(expected)} ({step}). Images are made meanwhile, uncompiled."
        )
        with self._lock:
            self._status = CompileStatus(phase, message, fraction)

    # -- in the app: loading compiled graphs while idle ------------------------------------------------

    def unwarmed(self, runner: UNetRunner) -> list[CallSpec]:
        """Ready graphs this runner has not run yet (its first run traces and loads them: seconds); CFG first."""
        specs = [runner.seen[k] for k in runner.ready if (id(runner), k) not in self._warm and k in runner.seen]
        return sorted(specs, key=lambda spec: -spec.batch)

    def warm(self, runner: UNetRunner, label: str, count: int | None = None) -> None:
        """Run ready graphs (`count` of them, else all) once on example inputs, so that no job's first step pays
        for loading them; one at a time from the worker's idle loop, so a job that comes waits for one only."""
        for spec in self.unwarmed(runner)[:count]:
            with self._lock:
                self._status = CompileStatus("loading", f"Loading the compiled {label} UNet for this CPU…", None)
            started = time.perf_counter()
            before = runner.calls["compiled"]
            with torch.inference_mode():
                runner.unet(**spec.example())
            self._warm.add((id(runner), spec.key))
            if runner.calls["compiled"] > before:
                log.info("loaded the compiled %s UNet for %s in %.1f s", label, _shape_words(spec), time.perf_counter() - started)
        with self._lock:
            if self._status.phase == "loading" and not self.unwarmed(runner):
                self._status = CompileStatus("ready", f"Optimized for this CPU: the {label} UNet is compiled.", 1.0)

    def load_ready(self, models: list[Any]) -> bool:
        """Load (warm) the first loaded model's ready graphs not run yet; True when there was one."""
        for model in models:
            runner = self.attach(model.pipe, model.architecture.label)
            if runner is not None and self.unwarmed(runner):
                self.warm(runner, model.architecture.label, count=1)
                return True
        return False

    def has_graphs(self, label: str) -> bool:
        """Whether this machine compiled graphs for models of this architecture (label) before."""
        return any(entry.get("label") == label for entry in self.manifest().values())

    @property
    def working(self) -> bool:
        """Whether compiles are queued or running (the background thread lives until the queue is empty)."""
        with self._lock:
            return self._thread is not None

    def status(self) -> CompileStatus:
        if not self.enabled:
            return CompileStatus("off", f"UNet not compiled: {self.reason}." if self.reason else "")
        with self._lock:
            return self._status

    def summary(self) -> str:
        """For the start line: whether compiling is on, and whether this machine has compiled graphs already."""
        if not self.enabled:
            return f"UNet uncompiled ({self.reason})"
        count = len(self.manifest())
        if count:
            return f"compiled UNet ({count} graph{'s' if count != 1 else ''} cached in {self.root})"
        return "compiled UNet (the first images on this machine compile it in the background, a few minutes, once)"

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._pending.clear()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _runner_dtype(task: _Task) -> torch.dtype:
    runner = task.runner()
    return runner.unet.dtype if runner is not None else torch.float32


def _config_of(task: _Task) -> dict[str, Any]:
    runner = task.runner()
    if runner is None:
        raise RuntimeError("the model was unloaded before it was compiled")
    return {k: v for k, v in dict(runner.unet.config).items()}


def _shape_words(spec: CallSpec) -> str:
    return "images with CFG" if spec.batch == 2 else "images without CFG" if spec.batch == 1 else f"batch {spec.batch}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
