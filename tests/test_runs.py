"""The run store: one training per config, memory budget, disk cache, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.data import load_digits_dataset
from core.runs import RunStore, run_from_arrays, run_key, run_to_arrays
from core.trainer import Run, TrainConfig, TrainingCancelled


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


CFG = TrainConfig(n_train=300, iterations=80, n_val=100)


def assert_same_run(a: Run, b: Run) -> None:
    for name in ("train_indices", "val_indices", "snapshot_iterations", "learned_at",
                 "forgetting_events", "_weights", "_biases", "_grad_norms"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for k in a.history:
        assert np.array_equal(a.history[k], b.history[k])
    for k in a.snapshot_history:
        assert np.array_equal(a.snapshot_history[k], b.snapshot_history[k], equal_nan=True)
    for split in ("train", "val"):
        assert np.array_equal(a.example_losses(5, split), b.example_losses(5, split))
    assert (a.learning_rate, a.lipschitz, a.stop_reason, a.iterations_done) == \
        (b.learning_rate, b.lipschitz, b.stop_reason, b.iterations_done)


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
    store = RunStore(max_bytes=int(2.5 * one))
    for seed in range(5):
        store.get(digits, CFG.replace(seed=seed))
    assert store.memory_bytes <= 2.5 * one
    assert len(store) == 2
    store.get(digits, CFG.replace(seed=4))
    assert store.trainings == 5  # the most recent one was still held
    store.get(digits, CFG.replace(seed=0))
    assert store.trainings == 6  # the oldest had been dropped


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
