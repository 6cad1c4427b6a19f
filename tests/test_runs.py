"""The Run record and the run store: one training per config, memory budget, disk cache,
cancel."""

from __future__ import annotations

import json
import threading

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
    assert (a.learning_rate, a.smoothness, a.stop_reason, a.iterations_done, a.diverged,
            a.backend, a.config, a.fingerprint) == \
        (b.learning_rate, b.smoothness, b.stop_reason, b.iterations_done, b.diverged,
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
