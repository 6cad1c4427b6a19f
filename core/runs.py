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
import os
import re
import secrets
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: temporary files are then judged by age alone
    fcntl = None

from core.config import TrainConfig
# The server log, where operators (and the live-server tests) see how often runs are trained.
from core.env import log
from core.data import Dataset
from core.run import FORMAT_VERSION, Run, read_run, run_to_arrays
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
    max_disk_bytes : int
        Disk budget for the folder's run files and temporary files, the least recently
        used of the store's own runs deleted first.
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
        # Start-up: temporary files of writes that died (a killed server) go, and the
        # budget holds even if it was lowered since.
        self._prune_disk()

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
    # Files in the folder are the store's by name (run-<key>.npz, .tmp-*.npz) and owner
    # (the server's user); anything else is counted nowhere and never deleted. Another
    # user's run files sharing the folder are read, counted in the budget and left alone.
    @property
    def disk_bytes(self) -> int:
        """Bytes of run files and temporary files in the disk cache folder (anyone's)."""
        return sum(st.st_size for _, st in _cache_files(self.disk_dir))

    def _path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"run-{key}.npz"

    def _save(self, key: str, run: Run) -> None:
        """Write ``run`` to its file through a temporary file that is locked while it is
        written, so that a sweep can tell a live write from a dead one."""
        path = self._path(key)
        if path is None:
            return
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if not _ours(path.lstat()):
                    log.warning("run file %s belongs to another user: left as it is, "
                                "the run is kept in memory only", path)
                    return
            except FileNotFoundError:
                pass
            tmp = path.with_name(f".tmp-{key}-{secrets.token_hex(6)}.npz")
            # os.open applies the umask (mkstemp made 0600 files that other users of a
            # shared folder could not read).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            _WRITING.add(tmp.name)
            with os.fdopen(fd, "wb") as fh:
                _try_lock(fh.fileno())
                np.savez(fh, **run_to_arrays(run))
                # Renamed while still locked: a sweep never sees it finished but unlocked.
                os.replace(tmp, path)
            _WRITING.discard(tmp.name)
            tmp = None
            self._prune_disk(keep=path)
        except Exception as exc:  # noqa: BLE001 - the disk only caches: never cost the run
            log.warning("could not keep run %s on disk: %s", key, exc)
        finally:
            if tmp is not None:
                _unlink(tmp)
                _WRITING.discard(tmp.name)

    def _prune_disk(self, keep: Path | None = None) -> None:
        """Sweep abandoned temporary files, then delete the store's least recently used
        run files (never ``keep``) until the folder's run and temporary files fit the
        disk budget."""
        files = _cache_files(self.disk_dir)
        swept = [(f, st) for f, st in files if f.name.startswith(".tmp-") and _abandoned(f, st)]
        for f, st in swept:
            _unlink(f)
        if swept:
            log.info("removed %d abandoned temporary file(s), %.1f MB, from %s", len(swept),
                     sum(st.st_size for _, st in swept) / 2**20, self.disk_dir)
        gone = {f for f, _ in swept}
        files = [(f, st) for f, st in files if f not in gone]
        total = sum(st.st_size for _, st in files)
        runs = sorted((st.st_atime, f, st.st_size) for f, st in files
                      if f.name.startswith("run-") and f != keep and _ours(st))
        for _, f, size in runs:
            if total <= self.max_disk_bytes:
                break
            if _unlink(f):
                total -= size

    def _load(self, key: str, ds: Dataset, cfg: TrainConfig) -> Run | None:
        """The run stored for ``key``, or None (a miss: trained again) if there is none
        or the file does not hold exactly a run of ``cfg`` on ``ds``."""
        path = self._path(key)
        if path is None:
            return None
        try:
            run = read_run(path, ds, cfg)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - zip, npy, json and layout errors alike
            log.warning("run file %s refused (%s: %s); the run is trained again", path,
                        type(exc).__name__, exc)
            try:
                # Ours and damaged: the next save would replace it anyway. Another user's
                # (or one we may not read) stays as it is.
                if not isinstance(exc, PermissionError) and _ours(path.lstat()):
                    _unlink(path)
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass  # another user's file: used read-only, its times are theirs
        return run


#: A temporary file unchanged for this long has no live writer, on a file system without
#: locks too: a writer writes without pause (each write moves the modification time) and
#: renames the file as soon as it is complete.
STALE_TEMP_SECONDS = 3600
_RUN_FILE = re.compile(r"run-[0-9a-f]{20}\.npz")
# mkstemp's names (before locks) and this module's .tmp-<key>-<random>.npz alike.
_TEMP_FILE = re.compile(r"\.tmp-[A-Za-z0-9_-]{1,64}\.npz")
#: Names of the temporary files this process is writing. A network file system may lock
#: per process rather than per open file, so this process's own writes look unlocked
#: to it there: they are known by name instead.
_WRITING: set[str] = set()


def _cache_files(folder: Path | None) -> list[tuple[Path, os.stat_result]]:
    """Regular files in ``folder`` that are run or temporary files by name, with their
    ``lstat``; whoever wrote them."""
    out = []
    try:
        entries = list(os.scandir(folder)) if folder is not None else []
    except OSError:
        return out
    for entry in entries:
        if not (_RUN_FILE.fullmatch(entry.name) or _TEMP_FILE.fullmatch(entry.name)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((Path(entry.path), st))
    return out


def _ours(st: os.stat_result) -> bool:
    """Whether the server's user owns the file (only then may the store delete it)."""
    return not hasattr(os, "geteuid") or st.st_uid == os.geteuid()


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive lock on ``fd`` without waiting: True if taken, False if someone
    holds it, None if this file system (or platform) has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def _abandoned(path: Path, st: os.stat_result) -> bool:
    """Whether temporary file ``path`` (with ``lstat`` ``st``) is provably not being
    written: ours, and unlocked (its writer died: the kernel drops the lock), or, where
    nothing can be locked, unchanged for :data:`STALE_TEMP_SECONDS`.

    Two servers sharing the folder (on one machine or through a network file system with
    locks) see each other's writes locked. A file still empty may be so new that its
    writer has not taken the lock yet; it waits for the age rule.
    """
    if not _ours(st) or path.name in _WRITING:
        return False
    old = time.time() - st.st_mtime > STALE_TEMP_SECONDS
    try:
        # Read-write: network file systems lock through byte ranges, which need it.
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        locked = _try_lock(fd)
    finally:
        os.close(fd)  # releases the lock just taken
    if locked is None:
        return old
    return locked and (st.st_size > 0 or old)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
