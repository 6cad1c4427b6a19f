"""A process-wide store of finished runs: one training per (data, config).

Sessions ask :meth:`RunStore.request` for a run. A run held in memory or on
disk comes back at once; otherwise one background job trains it and every
session asking for the same key waits on that same job, so a config is trained
once however many sessions want it. Finished runs are kept in memory up to a
byte budget (least recently used evicted first) and on disk as ``.npz`` files
read with ``allow_pickle=False``, so a restart of the server finds them again.
This module knows nothing of Streamlit; the UI draws the progress.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.data import Dataset
from core.run import FORMAT_VERSION, Run, run_from_arrays, run_to_arrays
from core.trainer import TrainingCancelled, default_backend, train


def run_key(fingerprint: str, cfg: TrainConfig) -> str:
    """Stable 20-hex-digit key of a run: data, config, format version and trainer backend.

    The two backends agree only up to rounding, so their runs are kept apart.
    """
    payload = json.dumps(
        {"v": FORMAT_VERSION, "data": fingerprint, "cfg": dataclasses.asdict(cfg),
         "backend": default_backend()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


log = logging.getLogger("weightscope")
if not log.handlers:
    # Streamlit configures only its own loggers; these lines go to the server's stderr,
    # where operators (and the live-server tests) can see how often runs are trained.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s weightscope: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


#: Seconds a session that stopped (tab closed, connection lost) keeps its claim on a job: a
#: reconnect within it (Streamlit keeps the session for that) resumes waiting for the same
#: training instead of starting it again. The issue's target is a release within 5 s.
RELEASE_GRACE = 2.0


class Job:
    """One training run in a background thread, watched by any number of sessions."""

    def __init__(self, key: str, ds: Dataset, cfg: TrainConfig, persist: bool = True):
        self.key, self.cfg, self.persist = key, cfg, persist
        self.queued = True  # waiting for a free training slot
        self.watchers: set[str] = set()  # sessions waiting for this run
        self.done_steps, self.total_steps = 0, int(cfg.iterations)
        self.started = time.monotonic()
        self.run: Run | None = None
        self.error: BaseException | None = None
        self.departing: dict[str, object] = {}  # watcher -> token of its pending release
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self._ds = ds

    def _progress(self, done: int, total: int) -> None:
        self.done_steps, self.total_steps = done, total
        if self.cancelled.is_set():
            raise TrainingCancelled(f"Training {self.key} was cancelled.")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the rate so far (None before any step)."""
        if self.done_steps <= 0:
            return None
        rate = self.done_steps / max(self.elapsed, 1e-9)
        return max(self.total_steps - self.done_steps, 0) / rate

    def cancel(self) -> None:
        self.cancelled.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)


class RunStore:
    """Finished runs in memory (LRU under a byte budget) and on disk, plus running jobs.

    Parameters
    ----------
    max_bytes : int
        Memory budget for finished runs held in memory.
    disk_dir : path or None
        Folder for ``.npz`` copies of finished runs; None keeps runs in memory only.
    max_jobs : int
        Training jobs allowed at once; further jobs wait for a free slot.
    """

    def __init__(self, max_bytes: int = 1 << 30, disk_dir: Path | None = None, max_jobs: int = 1,
                 max_disk_bytes: int = 2 << 30):
        self.max_bytes = int(max_bytes)
        self.max_disk_bytes = int(max_disk_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._memory: OrderedDict[str, Run] = OrderedDict()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_jobs)
        self.trainings = 0  # how many trainings were started (for tests and the benchmark)

    # -- finished runs -------------------------------------------------------
    def cached(self, ds: Dataset, cfg: TrainConfig) -> Run | None:
        """The finished run for ``cfg`` from memory or disk, or None."""
        key = run_key(ds.fingerprint, cfg)
        with self._lock:
            run = self._memory.get(key)
            if run is not None:
                self._memory.move_to_end(key)
                return run
        run = self._load(key, ds, cfg)
        if run is not None:
            self._remember(key, run)
        return run

    @property
    def running(self) -> int:
        """Training jobs started and not yet finished (running or waiting for a slot)."""
        with self._lock:
            return len(self._jobs)

    @property
    def memory_bytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._memory.values())

    def __len__(self) -> int:
        return len(self._memory)

    def _remember(self, key: str, run: Run) -> None:
        with self._lock:
            self._memory[key] = run
            self._memory.move_to_end(key)
            total = sum(r.nbytes for r in self._memory.values())
            while total > self.max_bytes and len(self._memory) > 1:
                _, old = self._memory.popitem(last=False)
                total -= old.nbytes

    # -- jobs --------------------------------------------------------------------
    def request(self, ds: Dataset, cfg: TrainConfig, persist: bool = True,
                watcher: str | None = None) -> Run | Job:
        """The finished run if there is one, else the (possibly shared) job training it.

        ``persist=False`` keeps the run off the disk cache (runs on uploaded data).
        ``watcher`` names the session waiting for it (see :meth:`leave`).
        """
        got = self._request(ds, cfg, persist)
        if watcher is not None and isinstance(got, Job):
            with self._lock:
                got.watchers.add(watcher)
                got.departing.pop(watcher, None)  # back within its grace: still waiting
        return got

    def leave(self, key: str, watcher: str, why: str = "cancelled by its viewer") -> int:
        """``watcher`` stops waiting for job ``key``; the job is cancelled when nobody
        waits any more (``why`` goes to the log). Returns how many others still wait."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return 0
            job.watchers.discard(watcher)
            job.departing.pop(watcher, None)
            others = len(job.watchers)
        if others == 0 and not job.cancelled.is_set():
            job.cancel()
            log.info("training %s cancelled (%s)", key, why)
        return others

    def leave_later(self, key: str, watcher: str,
                    grace: float = RELEASE_GRACE) -> threading.Timer | None:
        """``watcher`` stopped (its tab closed or its connection dropped): it leaves job
        ``key`` after ``grace`` seconds unless it asks for the run again meanwhile, as a
        session that reconnects does. Returns the timer that decides (None when there is
        nothing to leave)."""
        token = object()
        with self._lock:
            job = self._jobs.get(key)
            if job is None or watcher not in job.watchers:
                return None
            job.departing[watcher] = token

        def expire() -> None:
            with self._lock:
                still = self._jobs.get(key) is job and job.departing.get(watcher) is token
            if still:
                self.leave(key, watcher, why="no viewers")

        timer = threading.Timer(grace, expire)
        timer.daemon = True
        timer.start()
        return timer

    def _request(self, ds: Dataset, cfg: TrainConfig, persist: bool) -> Run | Job:
        run = self.cached(ds, cfg)
        if run is not None:
            return run
        key = run_key(ds.fingerprint, cfg)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.cancelled.is_set():
                return job
            run = self._memory.get(key)
            if run is not None:
                return run
            job = Job(key, ds, cfg, persist)
            self._jobs[key] = job
            self.trainings += 1
        threading.Thread(target=self._work, args=(job,), name=f"train-{key}", daemon=True).start()
        return job

    def get(self, ds: Dataset, cfg: TrainConfig) -> Run:
        """Blocking variant of :meth:`request` (for scripts and tests)."""
        got = self.request(ds, cfg)
        if isinstance(got, Run):
            return got
        got.wait()
        if got.error is not None:
            raise got.error
        return got.run

    def _work(self, job: Job) -> None:
        try:
            # Wait for a slot, but give up at once if everybody stops waiting meanwhile.
            log.info("training %s queued: %s", job.key, job.cfg)
            while not self._slots.acquire(timeout=0.1):
                if job.cancelled.is_set():
                    log.info("training %s dropped from the queue", job.key)
                    raise TrainingCancelled(f"Training {job.key} was cancelled before it started.")
            try:
                job.queued = False
                if job.cancelled.is_set():
                    log.info("training %s dropped from the queue", job.key)
                    raise TrainingCancelled(f"Training {job.key} was cancelled before it started.")
                job.started = time.monotonic()
                log.info("training %s started: %s", job.key, job.cfg)
                run = train(job._ds, job.cfg, progress=job._progress)
            finally:
                self._slots.release()
            self._remember(job.key, run)
            if job.persist:
                self._save(job.key, run)
            log.info("training %s finished in %.1f s", job.key, run.seconds)
            job.run = run
        except BaseException as exc:  # handed to every waiting session
            if isinstance(exc, TrainingCancelled) and not job.queued:
                log.info("training %s stopped at step %d of %d", job.key, job.done_steps,
                         job.total_steps)
            job.error = exc
        finally:
            job._ds = None
            with self._lock:
                if self._jobs.get(job.key) is job:
                    del self._jobs[job.key]
            job.finished.set()

    # -- disk ---------------------------------------------------------------------
    def _path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"run-{key}.npz"

    def _save(self, key: str, run: Run) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = run_to_arrays(run)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
            self._prune_disk()
        except OSError:
            # A full or read-only disk costs only the restart cache, never the run.
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass

    def _prune_disk(self) -> None:
        """Delete the least recently used run files beyond the disk budget."""
        files = []
        for f in self.disk_dir.glob("run-*.npz"):
            try:
                st_ = f.stat()
            except OSError:
                continue
            files.append((st_.st_atime, st_.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files):
            if total <= self.max_disk_bytes or len(files) <= 1:
                break
            try:
                f.unlink()
                total -= size
            except OSError:
                pass

    def _load(self, key: str, ds: Dataset, cfg: TrainConfig) -> Run | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                run = run_from_arrays({k: z[k] for k in z.files}, ds, cfg)
            os.utime(path)  # recently used: pruned last
        except Exception:  # noqa: BLE001 - zip, npy, json and key errors alike
            # A damaged cache file is dropped and the run trained again.
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return run
