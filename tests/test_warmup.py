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
    base = TrainConfig(n_train=200, iterations=4, n_val=200)
    runs = [store.get(ds, c) for c in (
        base, base.replace(model="ovr", l1=0.001), base.replace(l2=0.01, learning_rate=0.5),
        base.replace(dtype="float64"), base.replace(model="ovr", dtype="float64"),
        base.replace(optimizer="lbfgs", dtype="float64"))]
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
    assert got["ready"] >= 4, got  # the pass and its row function, per dtype
    assert got["after"] == got["ready"], got
    assert got["backends"] == ["numba"], got
