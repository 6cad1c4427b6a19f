"""The Run record and the run store: one training per config, memory budget, disk cache,
cancel."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import core.runs
from core.config import TrainConfig
from core.data import load_digits_dataset
from core.run import FORMAT_VERSION, Run, run_from_arrays, run_to_arrays
from core.runs import RunStore, run_key
from core.trainer import TrainingCancelled


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


CFG = TrainConfig(n_train=300, iterations=80, n_val=100)


def assert_same_run(a: Run, b: Run) -> None:
    for name in ("train_indices", "val_indices", "snapshot_iterations", "learned_at",
                 "forgetting_events", "snapshot_weights", "snapshot_biases",
                 "snapshot_grad_norms"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for k in a.history:
        assert np.array_equal(a.history[k], b.history[k])
    for k in a.snapshot_history:
        assert np.array_equal(a.snapshot_history[k], b.snapshot_history[k], equal_nan=True)
    for split in ("train", "val"):
        for name in ("loss", "p_true", "pred"):
            got, want = getattr(b.records[split], name), getattr(a.records[split], name)
            assert got.dtype == want.dtype and np.array_equal(got, want), (split, name)
    assert np.array_equal(a.learning_rate, b.learning_rate, equal_nan=True)  # NaN: L-BFGS
    assert (a.smoothness, a.stop_reason, a.iterations_done, a.diverged,
            a.backend, a.config, a.fingerprint) == \
        (b.smoothness, b.stop_reason, b.iterations_done, b.diverged,
         b.backend, b.config, b.fingerprint)


def test_key_depends_on_data_and_every_setting():
    keys = {run_key("aaaa", CFG), run_key("bbbb", CFG)}
    for change in ({"l2": 0.01}, {"seed": 1}, {"model": "ovr"}, {"learning_rate": 0.1},
                   {"iterations": 81}, {"dtype": "float64"}):
        keys.add(run_key("aaaa", CFG.replace(**change)))
    assert len(keys) == 8
    assert run_key("aaaa", CFG) == run_key("aaaa", TrainConfig(n_train=300, iterations=80, n_val=100))


def test_arrays_round_trip_without_pickle(digits):
    run = RunStore().get(digits, CFG)
    arrays = run_to_arrays(run)
    assert all(a.dtype != object for a in arrays.values())
    assert_same_run(run, run_from_arrays(arrays, digits, CFG))
    with pytest.raises(ValueError):
        run_from_arrays(arrays, digits, CFG.replace(seed=9))


def test_a_file_of_an_older_format_is_refused(digits):
    arrays = run_to_arrays(RunStore().get(digits, CFG))
    meta = json.loads(str(arrays["meta"]))
    assert meta["format"] == FORMAT_VERSION >= 2
    older = dict(arrays, meta=np.array(json.dumps(dict(meta, format=FORMAT_VERSION - 1))))
    with pytest.raises(ValueError, match="format"):
        run_from_arrays(older, digits, CFG)


def test_slot_finds_stored_snapshots_and_refuses_others(digits):
    run = RunStore().get(digits, CFG.replace(iterations=300))
    its = run.snapshot_iterations
    assert 150 not in its  # 300 iterations keep a log grid, not every step
    for slot in (0, 1, len(its) // 2, len(its) - 1):
        assert run.slot(int(its[slot])) == slot
        assert np.array_equal(run.weights(int(its[slot])).reshape(10, -1),
                              run.snapshot_weights[slot])
    for t in (150, 301, -1):
        with pytest.raises(KeyError, match=f"Iteration {t} is not a stored snapshot"):
            run.slot(t)


def test_nearest_snapshot_is_the_closest_stored_iteration_on_a_log_scale(digits):
    run = RunStore().get(digits, CFG.replace(iterations=300))
    its = run.snapshot_iterations.tolist()
    for t in its:
        assert run.nearest_snapshot(t) == t
    assert run.nearest_snapshot(-5) == 0 and run.nearest_snapshot(10**6) == 300
    # Between two neighbours a and c the boundary is where log(1 + t) is halfway.
    a, c = next((a, c) for a, c in zip(its, its[1:]) if c - a >= 6)
    middle = np.sqrt((1 + a) * (1 + c)) - 1
    assert run.nearest_snapshot(int(np.floor(middle))) == a
    assert run.nearest_snapshot(int(np.ceil(middle)) + 1) == c
    assert middle < (a + c) / 2  # log scale: the boundary is below the arithmetic midpoint


def test_neg_log_p_true_is_minus_log_of_the_recorded_probability(digits):
    run = RunStore().get(digits, CFG)
    t = int(run.snapshot_iterations[5])
    for split in ("train", "val"):
        p = run.p_true(t, split).astype(np.float64)
        assert np.array_equal(run.neg_log_p_true(t, split), -np.log(p))
        curve = run.neg_log_p_true_curve(3, split)
        assert curve.shape == run.snapshot_iterations.shape
        assert curve[5] == -np.log(p[3])
    # Softmax: -log p(true) is the example's own loss (float32 rounding apart).
    assert np.allclose(run.neg_log_p_true(t), run.example_losses(t), atol=1e-5)


def test_disk_cache_survives_a_restart_and_drops_damaged_files(digits, tmp_path):
    first = RunStore(disk_dir=tmp_path)
    run = first.get(digits, CFG)
    files = list(tmp_path.glob("run-*.npz"))
    assert len(files) == 1 and first.trainings == 1
    restarted = RunStore(disk_dir=tmp_path)
    again = restarted.get(digits, CFG)
    assert restarted.trainings == 0
    assert_same_run(run, again)
    files[0].write_bytes(files[0].read_bytes()[:200])  # a crash mid-copy, a full disk...
    third = RunStore(disk_dir=tmp_path)
    assert_same_run(run, third.get(digits, CFG))
    assert third.trainings == 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_sixteen_sessions_asking_at_once_train_once(digits):
    store = RunStore()
    results, barrier = [], threading.Barrier(16)

    def ask():
        barrier.wait()
        results.append(store.get(digits, CFG.replace(iterations=400)))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 16
    assert store.trainings == 1
    assert all(r is results[0] for r in results)


def test_memory_budget_evicts_least_recently_used(digits):
    one = RunStore().get(digits, CFG).nbytes
    budget = int(2.5 * one)  # room for two runs, not three
    store = RunStore(max_bytes=budget)
    for seed in range(5):
        store.get(digits, CFG.replace(seed=seed))
    assert store.memory_bytes <= budget
    assert len(store) == 2
    assert store.cached(digits, CFG.replace(seed=0)) is None  # the oldest went
    assert store.cached(digits, CFG.replace(seed=4)) is not None  # the newest stayed
    # Recently *used*, not recently trained: touching seed 3 makes seed 4 the next to go.
    assert store.cached(digits, CFG.replace(seed=3)) is not None
    store.get(digits, CFG.replace(seed=5))
    assert store.memory_bytes <= budget
    assert store.cached(digits, CFG.replace(seed=4)) is None
    assert store.cached(digits, CFG.replace(seed=3)) is not None
    assert store.trainings == 6
    store.get(digits, CFG.replace(seed=0))
    assert store.trainings == 7  # the dropped one is trained again


def test_cancel_leaves_nothing_cached_and_a_retry_trains(digits, tmp_path):
    store = RunStore(disk_dir=tmp_path)
    cfg = CFG.replace(iterations=100_000)
    job = store.request(digits, cfg)
    assert not isinstance(job, Run)
    job.cancel()
    assert job.wait(30)
    assert isinstance(job.error, TrainingCancelled)
    assert job.done_steps < 100_000
    assert store.cached(digits, cfg) is None and not list(tmp_path.glob("*.npz"))
    retry = store.request(digits, cfg)
    assert retry is not job
    retry.cancel()
    retry.wait(30)


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_no_more_than_max_jobs_train_at_once(digits, monkeypatch, max_jobs):
    """Trainings are held in a fake ``train`` until released: however long they take,
    at most ``max_jobs`` run at the same time and the others wait for a slot."""
    done = RunStore().get(digits, CFG)
    lock, release = threading.Lock(), threading.Event()
    active, peak, started = [0], [0], []

    def held_train(ds, cfg, progress=None):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            started.append(cfg.seed)
        release.wait(30)
        with lock:
            active[0] -= 1
        return done

    monkeypatch.setattr(core.runs, "train", held_train)
    store = RunStore(max_jobs=max_jobs)
    jobs = [store.request(digits, CFG.replace(seed=s)) for s in range(max_jobs + 3)]
    deadline = threading.Event()
    for _ in range(100):  # until the slots are taken
        if len(started) >= max_jobs:
            break
        deadline.wait(0.05)
    # Give the jobs beyond the limit the chance to start if nothing held them back.
    deadline.wait(0.5)
    assert len(started) == max_jobs
    assert sum(job.queued for job in jobs) == 3
    release.set()
    assert all(job.wait(30) for job in jobs)
    assert all(job.error is None for job in jobs)
    assert peak[0] == max_jobs
    assert sorted(started) == list(range(max_jobs + 3))


def test_jobs_beyond_the_limit_wait_their_turn(digits):
    store = RunStore(max_jobs=1)
    first = store.request(digits, CFG.replace(iterations=3000))
    second = store.request(digits, CFG.replace(iterations=3000, seed=1))
    assert first.wait(60) and second.wait(60)
    assert first.error is None and second.error is None
    assert store.trainings == 2


def test_one_viewer_leaving_does_not_cancel_the_run_for_another(digits):
    store = RunStore()
    cfg = CFG.replace(iterations=20_000)
    a = store.request(digits, cfg, watcher="alice")
    b = store.request(digits, cfg, watcher="bob")
    assert a is b
    assert store.leave(a.key, "alice") == 1  # bob still waits: the run goes on
    assert not a.cancelled.is_set()
    assert store.leave(a.key, "bob") == 0  # nobody waits: cancelled
    assert a.wait(30) and isinstance(a.error, TrainingCancelled)


def test_a_queued_job_nobody_waits_for_is_dropped_without_waiting_for_the_slot(digits):
    store = RunStore(max_jobs=1)
    busy = store.request(digits, CFG.replace(iterations=50_000), watcher="alice")
    queued = store.request(digits, CFG.replace(iterations=50_000, seed=3), watcher="bob")
    assert queued.queued
    store.leave(queued.key, "bob")
    assert queued.wait(5), "a cancelled queued job must not wait for the busy slot"
    assert isinstance(queued.error, TrainingCancelled)
    assert not busy.finished.is_set()
    store.leave(busy.key, "alice")
    assert busy.wait(30)


def test_disk_cache_stays_within_its_budget_dropping_the_least_recently_used(digits, tmp_path):
    one = RunStore(disk_dir=tmp_path / "probe")
    one.get(digits, CFG)
    size = next((tmp_path / "probe").glob("*.npz")).stat().st_size
    store = RunStore(disk_dir=tmp_path / "runs", max_disk_bytes=int(2.5 * size))
    for seed in range(5):
        store.get(digits, CFG.replace(seed=seed))
    files = list((tmp_path / "runs").glob("run-*.npz"))
    assert len(files) == 2
    assert sum(f.stat().st_size for f in files) <= 2.5 * size


def test_a_stopped_session_releases_its_run_after_the_grace(digits):
    """A closed tab (the script stopped) leaves the job after the grace: running or
    queued, a job nobody waits for any more is cancelled."""
    store = RunStore(max_jobs=1)
    running = store.request(digits, CFG.replace(iterations=50_000), watcher="alice")
    queued = store.request(digits, CFG.replace(iterations=50_000, seed=4), watcher="bob")
    assert queued.queued
    store.leave_later(queued.key, "bob", grace=0.05).join()
    assert queued.wait(5) and isinstance(queued.error, TrainingCancelled)
    assert not running.cancelled.is_set(), "bob's release cancelled alice's run"
    store.leave_later(running.key, "alice", grace=0.05).join()
    assert running.wait(30) and isinstance(running.error, TrainingCancelled)
    assert running.done_steps < 50_000


def test_a_session_back_within_the_grace_keeps_its_run(digits):
    """A reconnect asks for the same run again before the grace ends: the training goes
    on, and a later release still works."""
    store = RunStore()
    cfg = CFG.replace(iterations=50_000)
    job = store.request(digits, cfg, watcher="alice")
    timer = store.leave_later(job.key, "alice", grace=0.2)
    assert store.request(digits, cfg, watcher="alice") is job
    timer.join()
    assert not job.cancelled.is_set(), "the reconnected session lost its run"
    store.leave_later(job.key, "alice", grace=0.05).join()
    assert job.wait(30) and isinstance(job.error, TrainingCancelled)


def test_a_stopped_session_does_not_cancel_a_run_others_wait_for(digits):
    store = RunStore()
    cfg = CFG.replace(iterations=50_000)
    job = store.request(digits, cfg, watcher="alice")
    store.request(digits, cfg, watcher="bob")
    store.leave_later(job.key, "alice", grace=0.05).join()
    assert not job.cancelled.is_set()
    assert store.leave_later(job.key, "alice") is None, "alice already left"
    store.leave(job.key, "bob")
    assert job.wait(30) and isinstance(job.error, TrainingCancelled)


# -- the disk cache: owners, permissions, temporary files, what a run file may hold ----------

def cached_file(folder, ds, cfg=CFG):
    """Train ``cfg`` with a disk cache in ``folder``: the run and its file."""
    run = RunStore(disk_dir=folder).get(ds, cfg)
    return run, folder / f"run-{run_key(ds.fingerprint, cfg)}.npz"


def another_user(monkeypatch):
    """From now on every file in the folder belongs to someone else (as far as the store
    can tell: its owner is not the server's effective user)."""
    them = os.geteuid() + 1
    monkeypatch.setattr(os, "geteuid", lambda: them)


def age(path, seconds):
    """Set ``path``'s access and modification times ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_run_file_we_may_not_touch_is_still_used_read_only(digits, tmp_path, monkeypatch):
    """A readable file whose times we may not set (another user's) is served as it is:
    before, the failing os.utime threw the run away and deleted the file."""
    run, path = cached_file(tmp_path, digits)
    before = path.read_bytes()

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "utime", refuse)
    store = RunStore(disk_dir=tmp_path)
    assert_same_run(run, store.get(digits, CFG))
    assert store.trainings == 0
    assert path.read_bytes() == before


def test_a_damaged_run_file_of_another_user_is_neither_deleted_nor_replaced(
        digits, tmp_path, monkeypatch):
    run, path = cached_file(tmp_path, digits)
    path.write_bytes(path.read_bytes()[:300])
    damaged = path.read_bytes()
    another_user(monkeypatch)
    store = RunStore(disk_dir=tmp_path)
    assert_same_run(run, store.get(digits, CFG))  # a cache miss: trained again
    assert store.trainings == 1
    assert path.read_bytes() == damaged, "another user's file was deleted or replaced"


def test_pruning_never_deletes_files_that_are_not_run_files_by_name(digits, tmp_path):
    """Over budget, the store deletes its own least recently used runs and nothing else
    in the folder, however old or large."""
    _, probe = cached_file(tmp_path / "probe", digits)
    size = probe.stat().st_size
    folder = tmp_path / "runs"
    folder.mkdir()
    not_runs = [folder / "run-notes.npz", folder / "run-0123.npz", folder / "tmp-a.npz",
                folder / ".tmp-a.npz.part", folder / "notes.txt"]
    for f in not_runs:
        f.write_bytes(bytes(size))
        age(f, 10 * 86400)
    store = RunStore(disk_dir=folder, max_disk_bytes=int(2.5 * size))
    for seed in range(4):
        store.get(digits, CFG.replace(seed=seed))
    assert all(f.exists() for f in not_runs)
    ours = sorted(f.name for f in folder.glob("run-*.npz") if f not in not_runs)
    assert ours == sorted(f"run-{run_key(digits.fingerprint, CFG.replace(seed=s))}.npz"
                          for s in (2, 3))


def test_pruning_never_deletes_another_users_run_files(digits, tmp_path, monkeypatch):
    _, probe = cached_file(tmp_path / "probe", digits)
    size = probe.stat().st_size
    folder = tmp_path / "runs"
    theirs = [cached_file(folder, digits, CFG.replace(seed=s))[1] for s in (1, 2)]
    for f in theirs:
        age(f, 86400)
    another_user(monkeypatch)
    store = RunStore(disk_dir=folder, max_disk_bytes=int(1.5 * size))
    for seed in (3, 4):
        store.get(digits, CFG.replace(seed=seed))
    assert all(f.exists() for f in theirs)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_get_the_permissions_the_umask_allows(digits, tmp_path, umask):
    """Another user of a shared folder can read what the server wrote (mkstemp made
    0600 files before)."""
    old = os.umask(umask)
    try:
        _, path = cached_file(tmp_path, digits)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def held_temp(folder, size, name=".tmp-livewriter.npz"):
    """A temporary file as a live writer holds it: open, locked and ``size`` bytes long."""
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / name, "wb")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write(bytes(size))
    fh.flush()
    return fh


@pytest.mark.parametrize("case, kept", [
    ("abandoned", False),          # a writer died mid-write: no lock held, bytes written
    ("being written", True),       # a live writer (this process, another server) holds it
    ("just created", True),        # empty and fresh: its writer may not have locked it yet
    ("empty and old", False),
    ("another user's", True),      # never delete what the server did not write
    ("no locks, fresh", True),     # a file system without locks: only age proves it stale
    ("no locks, old", False),
])
def test_start_up_sweeps_only_temporary_files_provably_abandoned(
        digits, tmp_path, monkeypatch, case, kept):
    folder = tmp_path / "runs"
    folder.mkdir()
    temp = folder / ".tmp-0123456789abcdef0123-0123456789ab.npz"
    holder = None
    if case == "being written":
        holder = held_temp(folder, 5000, temp.name)
    else:
        temp.write_bytes(b"" if case in ("just created", "empty and old") else bytes(5000))
    if case in ("empty and old", "no locks, old"):
        age(temp, core.runs.STALE_TEMP_SECONDS + 600)
    if case == "another user's":
        another_user(monkeypatch)
    if case.startswith("no locks"):
        def no_locks(*args):
            raise OSError(37, "No locks available")
        monkeypatch.setattr(fcntl, "flock", no_locks)
    try:
        RunStore(disk_dir=folder)
        assert temp.exists() == kept
    finally:
        if holder:
            holder.close()


def test_a_live_writers_temporary_file_counts_toward_the_disk_budget(digits, tmp_path):
    _, probe = cached_file(tmp_path / "probe", digits)
    size = probe.stat().st_size
    folder = tmp_path / "runs"
    with held_temp(folder, 2 * size):
        store = RunStore(disk_dir=folder, max_disk_bytes=int(3.5 * size))
        for seed in range(3):
            store.get(digits, CFG.replace(seed=seed))
        assert (folder / ".tmp-livewriter.npz").exists()  # in use: never deleted
        assert len(list(folder.glob("run-*.npz"))) == 1  # 2 + 1 runs fit, 2 + 2 do not
        assert store.disk_bytes <= 3.5 * size


KILLED_WRITER = """
import resource, signal, sys
from pathlib import Path
import core.runs
from core.config import TrainConfig
from core.data import load_digits_dataset

# Once files are limited to 64 KB, the kernel kills this process (SIGXFSZ, default
# action; Python ignores it otherwise) at the write that passes the limit: a death in the
# middle of writing the run file, with no clean-up, at a moment known without timing.
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
trained = core.runs.train

def train_then_limit(*args, **kwargs):
    run = trained(*args, **kwargs)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    return run

core.runs.train = train_then_limit
core.runs.RunStore(disk_dir=Path(sys.argv[1])).get(
    load_digits_dataset(), TrainConfig(n_train=300, iterations=80, n_val=100))
"""


def test_a_write_killed_midway_is_counted_then_swept_by_the_next_start(digits, tmp_path):
    folder = tmp_path / "runs"
    running = RunStore(disk_dir=folder)  # a server that was up before the crash
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder)],
                           cwd=Path(core.runs.__file__).parents[1], capture_output=True,
                           timeout=120)
    assert child.returncode == -signal.SIGXFSZ, child.stderr.decode()[-2000:]
    left = list(folder.glob(".tmp-*.npz"))
    assert len(left) == 1 and left[0].stat().st_size == 1 << 16
    assert not list(folder.glob("run-*.npz"))
    assert running.disk_bytes == 1 << 16  # the leftover counts toward the budget
    restarted = RunStore(disk_dir=folder)
    assert not left[0].exists()
    assert restarted.disk_bytes == 0


def corrupt(arrays, change):
    """A copy of ``arrays`` changed by ``change`` (name -> new array, or None to drop)."""
    out = {k: v.copy() for k, v in arrays.items()}
    for name, new in change(out).items():
        if new is None:
            del out[name]
        else:
            out[name] = new
    return out


def _one_snapshot_fewer(a):
    S = len(a["snapshot_iterations"])
    return {k: v[:S - 1] for k, v in a.items()
            if v.ndim and v.shape[0] == S and not k.startswith("history/")}


def _set(name, index, value):
    def change(a):
        arr = a[name].copy()
        arr[index] = value
        return {name: arr}
    return change


BAD_FILES = {
    "a class fewer": lambda a: {"snapshot_weights": a["snapshot_weights"][:, :-1],
                                "snapshot_biases": a["snapshot_biases"][:, :-1]},
    "a pixel fewer": lambda a: {"snapshot_weights": a["snapshot_weights"][..., :-1]},
    "one record short": lambda a: {"rec/train/loss": a["rec/train/loss"][:-1]},
    "a snapshot fewer everywhere": _one_snapshot_fewer,
    "an iteration fewer": lambda a: {k: v[:-1] for k, v in a.items() if k.startswith("history/")},
    "a training image fewer": lambda a: {k: a[k][..., :-1] for k in (
        "train_indices", "learned_at", "forgetting_events", "snapshot_grad_norms",
        "rec/train/loss", "rec/train/p_true", "rec/train/pred")},
    "residual sums of other images": lambda a: {"residual_sums": a["residual_sums"][:, :-1]},
    "validation records of another size": lambda a: {
        k: a[k][..., :-1] for k in ("val_indices", "rec/val/loss", "rec/val/p_true",
                                    "rec/val/pred")},
    "an index outside the data": _set("train_indices", 0, 10**6),
    "a prediction of no class": _set("rec/val/pred", (2, 0), 10),
    "a snapshot that is not stored": _set("snapshot_iterations", 3, 4),
    "iterations done not the history's": lambda a: {"iterations_done": np.array(79)},
    "weights that are not finite": _set("snapshot_weights", (5, 0, 0), np.nan),
    "weights in the other precision": lambda a: {
        "snapshot_weights": a["snapshot_weights"].astype(np.float64)},
    "a scalar as a vector": lambda a: {"learning_rate": a["learning_rate"].reshape(1)},
    "labels as text": lambda a: {"rec/train/pred": a["rec/train/pred"].astype("U2")},
    "Python objects": lambda a: {"learned_at": a["learned_at"].astype(object)},
    "a member missing": lambda a: {"rec/val/pred": None},
    "a member nobody asked for": lambda a: {"notes": np.zeros(3)},
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_run_file_of_the_wrong_shape_is_refused_at_load_and_trained_again(
        digits, tmp_path, case):
    """A file with the right header (data, settings, format) but arrays that do not fit
    the config and data set is a cache miss, not a run that fails later in a page."""
    run, path = cached_file(tmp_path, digits)
    bad = corrupt(run_to_arrays(run), BAD_FILES[case])
    with pytest.raises(ValueError):
        run_from_arrays(bad, digits, CFG)
    with open(path, "wb") as fh:
        np.savez(fh, **bad)
    store = RunStore(disk_dir=tmp_path)
    assert_same_run(run, store.get(digits, CFG))
    assert store.trainings == 1
    again = RunStore(disk_dir=tmp_path)  # the refused file was replaced by a good one
    assert_same_run(run, again.get(digits, CFG))
    assert again.trainings == 0


def test_every_kind_of_run_the_trainer_makes_passes_the_checks(digits, tmp_path):
    """Diverged, L-BFGS (stopping early or not), one-vs-rest, float64 and tiny runs are
    read back from disk as they were written."""
    for cfg in (CFG.replace(learning_rate=50.0, iterations=300),
                CFG.replace(optimizer="lbfgs", dtype="float64", iterations=30, l2=0.01),
                CFG.replace(optimizer="lbfgs", dtype="float64", iterations=500),
                CFG.replace(model="ovr", iterations=250, l1=0.001),
                CFG.replace(iterations=1, n_train=10, n_val=0)):
        run, _ = cached_file(tmp_path, digits, cfg)
        store = RunStore(disk_dir=tmp_path)
        assert_same_run(run, store.get(digits, cfg))
        assert store.trainings == 0, cfg


def huge_member(path, name, shape):
    """Add member ``name`` to the npz at ``path``: a float64 array of ``shape`` whose
    zeros compress to almost nothing (a file of a few hundred KB)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(f"{name}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
            chunk = bytes(1 << 20)
            for _ in range(int(np.prod(shape)) * 8 >> 20):
                fh.write(chunk)


@pytest.mark.parametrize("member", ["notes", "history/train_loss"])
def test_the_loader_refuses_an_oversized_member_without_reading_it(
        digits, tmp_path, member):
    """An unknown member, or a known one far longer than the config allows, is refused
    from its npy header: 100 MB of zeros are never allocated."""
    run, path = cached_file(tmp_path, digits)
    arrays = run_to_arrays(run)
    arrays.pop(member, None)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    huge_member(path, member, (12_500_000,))
    store = RunStore(disk_dir=tmp_path)
    tracemalloc.start()
    try:
        assert store.cached(digits, CFG) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MB allocated to refuse the file"
