"""The compiled kernel is made ready in the background (core/warmup.py): runs train on
numpy until then, on the kernel after, and a warmed-up process compiles nothing more."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import kernels, warmup
from core.config import TrainConfig
from core.data import load_digits_dataset
from core.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]

needs_numba = pytest.mark.skipif(not kernels.AVAILABLE, reason=kernels.unavailable_reason())


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_runs_train_on_numpy_until_the_kernel_is_ready_and_keep_one_key(digits):
    """Before the warm-up a run trains on numpy; after it on the kernel (where Numba is);
    the numpy run stays the answer to its config (one training), since the backend is not
    part of a run's key."""
    warm = warmup.KernelWarmup(child=False)
    store = RunStore(backend=warm.backend)
    cfg = TrainConfig(n_train=100, iterations=5, n_val=100)
    first = store.get(digits, cfg)
    assert first.backend == "numpy"
    warm.start()
    assert warm.ready_event.wait(120), "the warm-up did not end"
    assert warm.state == ("ready" if kernels.AVAILABLE else "unavailable")
    again = store.get(digits, cfg)
    assert again is first and store.trainings == 1
    other = store.get(digits, cfg.replace(seed=1))
    assert other.backend == ("numba" if kernels.AVAILABLE else "numpy")


@needs_numba
def test_a_failed_compile_leaves_the_numpy_backend_and_says_why(monkeypatch, server_log):
    monkeypatch.setattr(warmup, "CHILD_ARGS", ("-c", "print('no room'); raise SystemExit(3)"))
    monkeypatch.setattr(kernels, "CACHED", True)
    warm = warmup.KernelWarmup().start()
    assert warm.ready_event.wait(60)
    assert warm.state == "failed" and warm.backend() == "numpy"
    assert server_log("kernel warm-up failed", "exited with 3", "no room", "numpy backend")


#: A fresh interpreter: warm up (compiling child, then loading here), then train real runs
#: of every kind through the run store, and count the kernel's compiled signatures.
AFTER_WARMUP = textwrap.dedent("""
    import json, sys
    from core import warmup
    from core.config import TrainConfig
    from core.data import load_dataset
    from core.runs import RunStore

    warm = warmup.KernelWarmup().start()
    warm.ready_event.wait(600)
    ready = warmup.signatures()
    ds = load_dataset("fashion-mnist", data_dir=sys.argv[1])
    store = RunStore(backend=warm.backend)
    base = TrainConfig(n_train=200, iterations=300, n_val=200)
    from core.trainer import train_many
    train_many(ds, [base, base.replace(l2=0.01), base.replace(l1=0.001)],
               backend=warm.backend())  # the Overfitting page's runs, trained together
    runs = [store.get(ds, c) for c in (
        base, base.replace(model="ovr", l1=0.001), base.replace(l2=0.01, learning_rate=0.5),
        base.replace(dtype="float64"), base.replace(model="ovr", dtype="float64"),
        base.replace(optimizer="lbfgs", dtype="float64", iterations=4))]
    print(json.dumps({"state": warm.state, "ready": ready, "after": warmup.signatures(),
                      "backends": sorted({r.backend for r in runs})}))
""")


@needs_numba
@pytest.mark.realdata
def test_after_the_warm_up_a_real_run_compiles_nothing_new(fashion_dir, tmp_path):
    """Every signature real runs use (both models, both dtypes, penalties, L-BFGS, on the
    real 784-pixel images) was compiled by the warm-up, so no viewer waits for a compile."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", AFTER_WARMUP, str(fashion_dir)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["state"] == "ready"
    # per dtype: the pass, the grouped pass, the row function and the compiled steps
    assert got["ready"] >= 8, got
    assert got["after"] == got["ready"], got
    assert got["backends"] == ["numba"], got


# --------------------------------------------------------------------------- presets

def _until(condition, what: str, timeout: float = 60.0) -> None:
    """Wait for ``condition()`` (a thread of the store changes it), failing after ``timeout``."""
    import threading
    tick = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        tick.wait(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_a_background_training_pauses_while_a_viewer_trains_then_finishes(digits, monkeypatch):
    """The warm-up's job takes no slot and stops stepping while a viewer's training runs or
    waits; when the viewer's is done it goes on, and its run is the same as a viewer's."""
    import threading

    import core.runs
    from core.trainer import train as real_train

    release = threading.Event()

    def held_for_viewers(ds, cfg, progress=None, backend=None, on_snapshot=None):
        if cfg.seed == 99:  # the viewer's run: held until released
            release.wait(60)
        return real_train(ds, cfg, progress=progress, backend="numpy", on_snapshot=on_snapshot)

    monkeypatch.setattr(core.runs, "train", held_for_viewers)
    store = RunStore(max_jobs=1)
    long = TrainConfig(n_train=300, iterations=100_000, n_val=100)
    bg = store.request(digits, long, background=True)
    _until(lambda: bg.done_steps > 0, "the background job to start")
    viewer = store.request(digits, long.replace(seed=99, iterations=5), watcher="s1")
    assert not viewer.background and store.viewers_training()
    _until(lambda: bg.paused, "the background job to pause")
    held_at = bg.done_steps
    assert not viewer.wait(0.3) and bg.done_steps == held_at, "it kept training"
    release.set()
    assert viewer.wait(60) and viewer.error is None
    _until(lambda: bg.done_steps > held_at, "the background job to resume")
    bg.cancel()
    assert bg.wait(60)


def test_a_viewer_asking_for_a_background_run_makes_it_a_viewers_job(digits):
    store = RunStore()
    cfg = TrainConfig(n_train=300, iterations=20_000, n_val=100)
    bg = store.request(digits, cfg, background=True)
    same = store.request(digits, cfg, watcher="s1")
    assert same is bg and not bg.background and store.trainings == 1
    bg.cancel()
    bg.wait(60)


def test_the_warm_up_trains_every_run_of_each_preset_once(digits):
    """Each preset's own run, the Overfitting page's penalty variants and First step's
    float64 step are in the store afterwards (without reading them: ``has``); a second
    warm-up trains nothing."""
    from core.settings import OVERFITTING_VARIANTS, Preset, Settings

    presets = [Preset("tiny gd", "", Settings(dataset="digits", n_train=100, iterations=20),
                      "First_step"),
               Preset("tiny lbfgs", "", Settings(dataset="digits", n_train=100, iterations=5,
                                                  optimizer="lbfgs"), "Trajectory")]
    store = RunStore()
    warm = warmup.PresetWarmer(store, lambda: [(p, digits) for p in presets],
                               first=lambda: [(digits, TrainConfig(n_train=50, iterations=3))])
    assert not any(warm.ready(p, digits) for p in presets)
    warm.start()
    assert warm.done_event.wait(300) and warm.state == "done"
    assert all(warm.ready(p, digits) for p in presets)
    gd = presets[0].settings.config()
    expected = {gd, *(gd.replace(**pen) for _, pen in OVERFITTING_VARIANTS)}
    assert all(store.has(digits, c) for c in expected)
    first = warmup.first_step_run(store.get(digits, gd), digits)
    assert first.dtype == "float64" and first.iterations == 1 and store.has(digits, first)
    lbfgs = presets[1].settings.config()
    assert not store.has(digits, lbfgs.replace(l1=0.0003)), "L1 needs gradient descent"
    # 1 default + 4 gd variants + 1 float64 step + 3 L-BFGS variants (no L1)
    assert store.trainings == 9
    again = warmup.PresetWarmer(store, lambda: [(p, digits) for p in presets]).start()
    assert again.done_event.wait(60) and store.trainings == 9


@pytest.mark.parametrize("value, mode", [("", "all"), ("on", "all"), ("off", "off"),
                                         ("0", "off"), ("default", "default"),
                                         ("sometimes", "all")])
def test_warm_mode_reads_weightscope_warm(value, mode):
    assert warmup.warm_mode({"WEIGHTSCOPE_WARM": value}) == mode


def test_a_long_run_waits_for_the_kernel_being_made_ready_and_a_short_one_does_not():
    """While the kernel is compiled, a run over LONG_WORK image-steps waits for it (numpy
    would take two to three times as long for the whole run); a short one starts on numpy."""
    import threading
    from types import SimpleNamespace

    warm = warmup.KernelWarmup(child=False)
    warm.state = "compiling"  # as while the child compiles
    short = SimpleNamespace(key="short", awaiting_kernel=False,
                            cfg=TrainConfig(n_train=1000, iterations=3000))
    long = SimpleNamespace(key="long", awaiting_kernel=False,
                           cfg=TrainConfig(n_train=1000, iterations=30_000))
    assert short.cfg.iterations * short.cfg.n_train <= warmup.LONG_WORK \
        < long.cfg.iterations * long.cfg.n_train
    assert warm.backend(short) == "numpy"
    got = []
    waiter = threading.Thread(target=lambda: got.append(warm.backend(long)))
    waiter.start()
    _until(lambda: long.awaiting_kernel, "the long run to wait")
    assert not got
    warm.state = "ready"
    warm.ready_event.set()
    waiter.join(10)
    assert got == ["numba"] and not long.awaiting_kernel
