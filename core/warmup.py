"""The compiled kernel is made ready off the viewer's clock.

Numba compiles the fused kernel (:mod:`core.kernels`) at its first call: some seconds per
dtype on a fresh install, during which a viewer used to watch "0 of 3,000 steps". Here a
:class:`KernelWarmup` does it in the background instead:

1. a child process (``python -m core.warmup``, at low CPU priority) calls the kernel once
   per dtype, which compiles it into Numba's disk cache, or only loads it when the cache
   already holds it; the server's own threads never wait on a compile;
2. then a thread of the server calls it once per dtype in-process, which loads the code
   from that cache (a fraction of a second), and marks the kernel ready.

Until then :meth:`KernelWarmup.backend` answers "numpy" and runs train on the numpy
backend, which computes the same run up to rounding. Where Numba cannot keep a disk
cache (no writable folder) the child's work cannot be reused; the kernel is then compiled
in that background thread, and the server log says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np

from core import kernels
from core.env import log

#: The dtypes runs train in (TrainConfig.dtype); Numba compiles the kernel once for each.
DTYPES = ("float32", "float64")

#: The longest a compile in the child may take before it is given up (seconds).
CHILD_TIMEOUT = 600.0

#: Steps x images above which a run waits for the compiled kernel when it is being made
#: ready (about 15 s of numpy at 1,000 images on this machine's 2 cores; a compile takes
#: about 10 s), and the longest it waits.
LONG_WORK = 20_000_000
KERNEL_WAIT = 60.0

#: What the child runs, after the Python interpreter.
CHILD_ARGS = ("-m", "core.warmup")


def call_kernel(dtype: str) -> None:
    """Train tiny runs in ``dtype`` on the compiled backend: every model and optimizer, so
    every signature real runs use is compiled (or loaded) here, not at a viewer's run."""
    from core.config import TrainConfig
    from core.data import load_digits_dataset
    from core.trainer import train, train_many

    ds = load_digits_dataset()
    for model in kernels.MODEL_CODES:
        for optimizer in ("gd", "lbfgs") if dtype == "float64" else ("gd",):
            # More than 100 steps: the steps between two snapshots then run in compiled
            # calls of many steps (kernels._steps), as in every real run of that length.
            cfg = TrainConfig(model=model, optimizer=optimizer, dtype=dtype, n_train=50,
                              iterations=3 if optimizer == "lbfgs" else 150, n_val=50)
            train(ds, cfg, backend="numba")
            if optimizer == "gd":  # compared runs train together (the grouped kernel)
                train_many(ds, [cfg.replace(iterations=3), cfg.replace(iterations=3, l2=0.01),
                                cfg.replace(iterations=3, l1=0.001)], backend="numba")


def signatures() -> int:
    """How many compiled signatures the kernel's functions hold in this process."""
    if not kernels.AVAILABLE:
        return 0
    import numba.core.registry

    return sum(len(f.signatures) for f in vars(kernels).values()
               if isinstance(f, numba.core.registry.CPUDispatcher))


class KernelWarmup:
    """Makes the compiled kernel ready in the background, once per process.

    ``state`` is "waiting" (not started), "compiling" (the child runs), "loading" (this
    process loads it), "ready", "failed" (the numpy backend stays; the log says why) or
    "unavailable" (no Numba, or switched off).
    """

    def __init__(self, child: bool = True):
        self._child = child
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "waiting" if kernels.AVAILABLE else "unavailable"
        self.seconds: float | None = None
        self.ready_event = threading.Event()
        if not kernels.AVAILABLE:
            self.ready_event.set()

    def start(self) -> "KernelWarmup":
        """Start the warm-up thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None and self.state == "waiting":
                self.state = "compiling"
                self._thread = threading.Thread(target=self._work, name="kernel-warmup",
                                                daemon=True)
                self._thread.start()
        return self

    def backend(self, job=None) -> str:
        """The backend a run should train on: "numba" once the kernel is ready here. A
        long run (``job``'s steps x images over :data:`LONG_WORK`) asked for while the
        kernel is being made ready waits for it, at most :data:`KERNEL_WAIT` seconds: a
        run keeps its backend to the end, and numpy takes two to three times as long."""
        if (job is not None and self.state in ("compiling", "loading")
                and int(job.cfg.iterations) * int(job.cfg.n_train) > LONG_WORK):
            job.awaiting_kernel = True
            log.info("training %s waits for the compiled kernel", job.key)
            try:
                self.ready_event.wait(KERNEL_WAIT)
            finally:
                job.awaiting_kernel = False
        return "numba" if self.state == "ready" else "numpy"

    def _train_all(self, ds, cfgs) -> list:
        cfgs = [c for c in cfgs if not c.problems(ds)]
        out = []
        for got in self.store.request_many(ds, cfgs, background=True):
            if hasattr(got, "wait"):
                got.wait()
                if got.error is not None:
                    raise got.error
                got = got.run
            out.append(got)
        return out

    def _work(self) -> None:
        started = time.monotonic()
        try:
            if self._child and kernels.CACHED:
                self._compile_in_child()
            elif not kernels.CACHED:
                log.info("kernel warm-up: Numba has no disk cache here, so the kernel is "
                         "compiled in this process, in the background")
            self.state = "loading"
            for dtype in DTYPES:
                call_kernel(dtype)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the numpy backend
            self.state = "failed"
            log.warning("kernel warm-up failed (%s: %s); runs train on the numpy backend",
                        type(exc).__name__, exc)
        else:
            self.state = "ready"
            self.seconds = time.monotonic() - started
            log.info("kernel warm-up: the compiled kernel is ready after %.1f s", self.seconds)
        finally:
            self.ready_event.set()

    def _compile_in_child(self) -> None:
        """Compile into Numba's disk cache in a child process at low CPU priority."""
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        done = subprocess.run(
            [sys.executable, *CHILD_ARGS], cwd=root, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=CHILD_TIMEOUT, preexec_fn=_lower_priority if os.name == "posix" else None,
            check=False)
        if done.returncode != 0:
            tail = done.stdout.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"the compiling child exited with {done.returncode}: "
                               + " / ".join(tail))


def _lower_priority() -> None:  # pragma: no cover - runs in the child before exec
    try:
        os.nice(10)
    except OSError:
        pass


_SHARED: KernelWarmup | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> KernelWarmup:
    """This process's warm-up, started at the first call."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = KernelWarmup().start()
        return _SHARED


if __name__ == "__main__":  # the compiling child
    for _dtype in DTYPES:
        call_kernel(_dtype)
    print(f"compiled kernel ready: {signatures()} signatures, cached={kernels.CACHED}")


# --------------------------------------------------------------------------- presets

def warm_mode(environ=None) -> str:
    """What the server trains in the background after start-up, from ``WEIGHTSCOPE_WARM``:
    "all" (unset, "on": Home's default run, then every preset's runs), "default" (Home's
    default run only) or "off"."""
    value = (os.environ if environ is None else environ).get("WEIGHTSCOPE_WARM", "")
    value = value.strip().lower()
    if value in ("off", "0", "no", "false"):
        return "off"
    if value == "default":
        return "default"
    if value not in ("", "on", "1", "yes", "true", "all"):
        from core.env import warn_once
        warn_once(f"WEIGHTSCOPE_WARM={value[:40]!r} is not on, off or default; using on.")
    return "all"


def preset_runs(preset, ds) -> list:
    """The configs a preset's pages show on data ``ds``, its own run first: the
    Overfitting page's penalty variants (gradient descent keeps the L1 one) and First
    step's float64 step (known once the preset's run is, see :func:`first_step_run`)."""
    from core.settings import OVERFITTING_VARIANTS

    cfg = preset.settings.config()
    out = [cfg]
    for _, penalty in OVERFITTING_VARIANTS:
        if cfg.optimizer == "lbfgs" and penalty["l1"] > 0:
            continue
        variant = cfg.replace(**penalty)
        if variant not in out:
            out.append(variant)
    return out


def first_step_run(run, ds):
    """The float64 single step First step trains beside ``run`` (None for L-BFGS)."""
    from core import analysis

    if run.config.optimizer == "lbfgs":
        return None
    a = analysis.first_step_scale(run, analysis.first_step(run, ds))
    return run.config.replace(iterations=1, dtype="float64", learning_rate=a)


class PresetWarmer:
    """Trains the presets' runs in the background, one at a time, so that a preset's link
    opens at once (they stay in the disk cache for the next server too).

    Parameters
    ----------
    store : core.runs.RunStore
    items : callable
        Returns ``[(preset, ds), ...]``: the presets this server offers and their data.
    kernel : KernelWarmup, optional
        Waited for first, so that warm-up trains on the compiled kernel.
    """

    def __init__(self, store, items, kernel: KernelWarmup | None = None, first=None):
        self.store, self._items, self.kernel = store, items, kernel
        self._first = first  # returns [(ds, cfg), ...] to train before the presets
        self.state = "waiting"  # "warming", "done", "failed"
        self.current: str | None = None  # the preset being warmed
        self.seconds: float | None = None
        self.done_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PresetWarmer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="preset-warmup", daemon=True)
            self._thread.start()
        return self

    def ready(self, preset, ds) -> bool:
        """Whether every run of ``preset`` on ``ds`` is finished (memory or disk)."""
        return all(self.store.has(ds, c) for c in preset_runs(preset, ds))

    def _train(self, ds, cfg) -> object:
        if cfg.problems(ds):  # over this server's work cap: viewers get the message
            return None
        got = self.store.request(ds, cfg, background=True)
        if hasattr(got, "wait"):
            got.wait()
            if got.error is not None:
                raise got.error
            return got.run
        return got

    def _train_all(self, ds, cfgs) -> list:
        cfgs = [c for c in cfgs if not c.problems(ds)]
        out = []
        for got in self.store.request_many(ds, cfgs, background=True):
            if hasattr(got, "wait"):
                got.wait()
                if got.error is not None:
                    raise got.error
                got = got.run
            out.append(got)
        return out

    def _work(self) -> None:
        started = time.monotonic()
        _lowest_priority()
        try:
            if self.kernel is not None:
                self.kernel.ready_event.wait()
            self.state = "warming"
            trained = 0
            for ds, cfg in (self._first() if self._first else ()):
                self._train(ds, cfg)
            for preset, ds in self._items():
                self.current = preset.title
                t0 = time.monotonic()
                # The preset's own run first (a viewer may open its link any moment), then
                # the runs its pages compare, trained together.
                runs = [self._train(ds, preset_runs(preset, ds)[0])]
                runs += self._train_all(ds, preset_runs(preset, ds)[1:])
                extra = (first_step_run(runs[0], ds)
                         if preset.page == "First_step" and runs[0] is not None else None)
                if extra is not None:
                    self._train(ds, extra)
                trained += 1
                log.info("warm-up: preset %r ready after %.1f s", preset.title,
                         time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 - warm-up is a courtesy; viewers train anyway
            self.state = "failed"
            log.warning("warm-up stopped (%s: %s); presets train when first opened",
                        type(exc).__name__, exc)
        else:
            self.state = "done"
            self.seconds = time.monotonic() - started
            log.info("warm-up: %d presets ready after %.1f s; the run cache holds %.0f MB "
                     "on disk", trained, self.seconds, self.store.disk_bytes / 2**20)
        finally:
            self.current = None
            self.done_event.set()


def _lowest_priority() -> None:
    """Lower this thread's CPU priority to the lowest (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
