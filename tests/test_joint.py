"""Training several configs together (core.trainer.train_many) gives each the run that
training it alone gives: same snapshots, histories, per-example records and stop reason."""

from __future__ import annotations

import numpy as np
import pytest

from core import kernels
from core.config import TrainConfig
from core.data import load_digits_dataset
from core.trainer import TrainingCancelled, train, train_many

BACKENDS = ["numpy"] + (["numba"] if kernels.AVAILABLE else [])

#: The Overfitting page's runs (views/overfitting.py), by their penalties.
PAGE_VARIANTS = ({"l2": 0.0, "l1": 0.0}, {"l2": 0.001}, {"l2": 0.01}, {"l1": 0.0003})
#: On 200 digits (1/L is about 0.18 for softmax, 0.35 for one-vs-rest): a step that
#: overfits within 200 iterations (so the test split is measured at two snapshots), and one
#: that diverges within a few.
OVERFITTING, DIVERGING = 8.0, 16.0
#: Largest difference allowed, relative to the largest entry of the array compared. float32
#: rounding differs between products blocked differently (about 3e-7 after 200 steps at
#: 1/L here); a step far beyond the stability limit 2/L (OVERFITTING is about 45/L)
#: amplifies it, to about 3e-4 in float32, so that run has its own tolerance.
RTOL = {"float64": 1e-9, "float32": 2e-5}
RTOL_BEYOND_LIMIT = {"float64": 1e-9, "float32": 3e-3}


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def recorded(run) -> dict[str, np.ndarray]:
    """Every array a run records, by name."""
    arrays = {
        "snapshot_iterations": run.snapshot_iterations,
        "snapshot_weights": run.snapshot_weights,
        "snapshot_biases": run.snapshot_biases,
        "snapshot_grad_norms": run.snapshot_grad_norms,
        "residual_iterations": run.residual_iterations,
        "residual_sums": run.residual_sums,
        "learned_at": run.learned_at,
        "forgetting_events": run.forgetting_events,
        "train_indices": run.train_indices,
        "val_indices": run.val_indices,
    }
    arrays.update({f"history.{k}": v for k, v in run.history.items()})
    arrays.update({f"snapshot_history.{k}": v for k, v in run.snapshot_history.items()})
    for split, rec in run.records.items():
        arrays.update({f"records.{split}.{f}": getattr(rec, f) for f in ("loss", "p_true", "pred")})
    return arrays


#: Arrays of whole numbers that follow from predictions: equal in float64; in float32 a
#: near tie between two classes may round the other way in a differently blocked product.
PREDICTED = ("learned_at", "forgetting_events", "records.train.pred", "records.val.pred")


def assert_same_run(alone, joint, dtype: str, rtol: dict = RTOL) -> None:
    """``joint`` equals ``alone`` in every recorded array, up to ``rtol[dtype]`` relative to
    each array's largest entry, with the same step, smoothness, stop and reason."""
    assert joint.config == alone.config
    assert joint.stop_reason == alone.stop_reason
    assert (joint.diverged, joint.iterations_done) == (alone.diverged, alone.iterations_done)
    assert joint.learning_rate == pytest.approx(alone.learning_rate, rel=1e-15)
    assert joint.smoothness == pytest.approx(alone.smoothness, rel=1e-15)
    assert joint.backend == alone.backend
    a, b = recorded(alone), recorded(joint)
    assert a.keys() == b.keys()
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.shape == y.shape, name
        if name in PREDICTED and dtype == "float32":
            assert (x == y).mean() >= 0.999, name
            continue
        if x.dtype.kind in "iub":
            assert np.array_equal(x, y), name
            continue
        # NaN where nothing was measured (the test split between its two snapshots).
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        seen = ~np.isnan(x)
        scale = np.abs(x[seen]).max(initial=0.0)
        assert np.abs(x[seen] - y[seen]).max(initial=0.0) <= rtol[dtype] * scale, name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", ["softmax", "ovr"])
def test_joint_training_equals_separate_runs_on_digits(digits, model, dtype, backend):
    base = TrainConfig(model=model, n_train=200, iterations=200, dtype=dtype, n_val=100)
    cfgs = [base.replace(**p) for p in PAGE_VARIANTS]
    cfgs += [base.replace(learning_rate=OVERFITTING), base.replace(learning_rate=DIVERGING)]
    joint = train_many(digits, cfgs, backend=backend)
    alone = [train(digits, cfg, backend=backend) for cfg in cfgs]
    # What the comparison covers: "auto" steps that differ with L2, an L1 run with exact
    # zeros, a test split measured at two snapshots, and a run that diverges while the
    # others go on.
    steps = [run.learning_rate for run in alone[:3]]
    assert steps[0] > steps[1] > steps[2]
    assert (alone[3].weights(200) == 0).mean() > 0.1
    assert np.isfinite(alone[4].snapshot_history["test_acc"]).sum() == 2
    assert [run.diverged for run in alone] == [False] * 5 + [True]
    assert alone[5].iterations_done < 10
    for a, b in zip(alone, joint):
        beyond = a.learning_rate * a.smoothness > 2
        assert_same_run(a, b, dtype, RTOL_BEYOND_LIMIT if beyond else RTOL)


@pytest.mark.realdata
@pytest.mark.parametrize("backend", BACKENDS)
def test_joint_training_equals_separate_runs_on_fashion_mnist(fashion_dir, backend):
    from core.data import load_dataset

    ds = load_dataset("fashion-mnist", data_dir=fashion_dir)
    for model in ("softmax", "ovr"):
        for dtype in ("float64", "float32"):
            base = TrainConfig(model=model, n_train=300, iterations=60, dtype=dtype,
                               n_val=300)
            cfgs = [base.replace(**p) for p in PAGE_VARIANTS]
            joint = train_many(ds, cfgs, backend=backend)
            alone = [train(ds, cfg, backend=backend) for cfg in cfgs]
            assert len({run.learning_rate for run in alone}) == 3  # L2 changes the step
            for a, b in zip(alone, joint):
                assert not a.diverged
                assert_same_run(a, b, dtype)


def test_a_step_beyond_the_precision_stops_its_run_at_once_and_the_rest_train(digits):
    base = TrainConfig(n_train=300, iterations=50, n_val=50)
    cfgs = [base, base.replace(learning_rate=1e39), base.replace(l2=0.01)]
    joint = train_many(digits, cfgs, backend="numpy")
    alone = [train(digits, cfg, backend="numpy") for cfg in cfgs]
    assert alone[1].diverged and alone[1].iterations_done == 0
    assert "beyond float32" in alone[1].stop_reason
    for a, b in zip(alone, joint):
        assert_same_run(a, b, "float32")


@pytest.mark.parametrize("changes,field", [
    ({"model": "ovr"}, "model"),
    ({"n_train": 300}, "n_train"),
    ({"seed": 1}, "seed"),
    ({"n_val": 60}, "n_val"),
    ({"dtype": "float64"}, "dtype"),
    ({"iterations": 40}, "iterations"),
])
def test_configs_that_differ_beyond_the_penalties_and_the_step_are_refused(
        digits, changes, field):
    base = TrainConfig(n_train=200, iterations=30, n_val=50)
    with pytest.raises(ValueError, match=f"must share {field}") as err:
        train_many(digits, [base, base.replace(l2=0.01), base.replace(**changes)])
    assert "config 2" in str(err.value)


def test_lbfgs_and_invalid_configs_are_refused(digits):
    base = TrainConfig(n_train=200, iterations=30, n_val=50)
    lbfgs = base.replace(optimizer="lbfgs", dtype="float64")
    with pytest.raises(ValueError, match="gradient descent only"):
        train_many(digits, [lbfgs])
    with pytest.raises(ValueError, match="Config 1: L2 penalty"):
        train_many(digits, [base, base.replace(l2=-1.0)])
    assert train_many(digits, []) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_counts_the_shared_steps_and_can_cancel(digits, backend):
    base = TrainConfig(n_train=200, iterations=300, n_val=50)
    cfgs = [base, base.replace(l2=0.01), base.replace(learning_rate=DIVERGING)]
    calls, each = [], []
    runs = train_many(digits, cfgs, backend=backend, progress_interval=0.0,
                      progress=lambda done, total: calls.append((done, total)),
                      progress_each=lambda i, done, total: each.append((i, done, total)))
    assert calls[-1] == (300, 300) and len(calls) >= 100
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    # Per config: the diverged one stays at its last good step, the others reach 300.
    last = {i: done for i, done, _ in each}
    assert last == {0: 300, 1: 300, 2: runs[2].iterations_done}
    assert runs[2].diverged and runs[2].iterations_done < 10

    seen = []

    def cancel(done, total):
        seen.append(done)
        if done >= 10:
            raise TrainingCancelled

    with pytest.raises(TrainingCancelled):
        train_many(digits, cfgs, backend=backend, progress=cancel, progress_interval=0.0)
    assert seen[-1] == 10  # abandoned at the first report past 10, not trained on


def test_joint_training_holds_no_more_memory_than_the_runs_alone(digits):
    """Peak traced memory of the joint call is at most the sum of the separate calls'
    peaks (the stacked weights, logits and gradients add up the runs' own)."""
    import tracemalloc

    base = TrainConfig(n_train=600, iterations=60, n_val=200, dtype="float64")
    cfgs = [base.replace(**p) for p in PAGE_VARIANTS]

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    alone = sum(peak(lambda cfg=cfg: train(digits, cfg, backend="numpy")) for cfg in cfgs)
    joint = peak(lambda: train_many(digits, cfgs, backend="numpy"))
    assert joint <= alone


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["softmax", "ovr"])
@pytest.mark.parametrize("n_classes,groups", [(3, 3), (10, 4), (4, 1)])
def test_a_grouped_pass_gives_each_model_what_its_own_pass_gives(model, backend, n_classes,
                                                                   groups):
    """One pass over stacked weights equals G single passes of the numpy backend: loss,
    prediction, p(true), ||p - e_y||, gradient and residual sums (odd G K included, which
    the compiled kernel handles apart from its pairs of rows)."""
    from core.objective import make_pass

    rng = np.random.default_rng(3)
    n, d, K = 203, 37, n_classes  # rows not a multiple of the kernel's blocks of 8
    X8 = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    y = rng.integers(0, K, size=n)
    W = rng.normal(scale=0.05, size=(groups * K, d))
    b = rng.normal(scale=0.5, size=groups * K)
    dtype = np.dtype("float64")
    grouped = make_pass(backend, X8, y, K, dtype, model)
    acc = grouped.accumulate_groups(groups + 1)
    slots = np.arange(groups)[::-1] + 1  # slot 0 stays untouched
    outs, gW, gb = grouped.run_groups(W, b, groups, want_grad=True, want_records=True,
                                      slots=slots)
    for g in range(groups):
        rows = slice(g * K, (g + 1) * K)
        alone = make_pass("numpy", X8, y, K, dtype, model)
        own = alone.accumulate()
        out = alone.run(W[rows], b[rows], want_grad=True, want_records=True)
        for name in ("loss", "p_true", "resid"):
            assert np.allclose(getattr(outs[g], name), getattr(out, name), rtol=1e-12,
                               atol=1e-12), name
        assert np.array_equal(outs[g].pred, out.pred)
        assert np.allclose(gW[rows], out.grad_W, rtol=1e-11, atol=1e-11)
        assert np.allclose(gb[rows], out.grad_b, rtol=1e-11, atol=1e-11)
        assert np.allclose(acc[slots[g]], own, rtol=1e-12, atol=1e-12)
    assert not acc[0].any()
