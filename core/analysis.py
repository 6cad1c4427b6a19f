"""Numbers and views computed from a finished run, for the pages and the summary.

Plain functions of a :class:`~core.run.Run` and its :class:`~core.data.Dataset`,
without caching (the UI caches them per run key). Shapes: ``S`` snapshots,
``K`` classes, ``n`` training images of ``d`` pixels.
"""

from __future__ import annotations

import numpy as np

from core import metrics
from core.data import Dataset
from core.run import Run


def training_design(run: Run, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The run's training images as ``x`` (n, d) float64 in [0, 1] and labels ``y`` (n,)."""
    idx = run.train_indices
    return ds.x_train[idx].reshape(len(idx), -1) / 255.0, ds.y_train[idx]


def trajectory(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """Per-snapshot metrics of ``run`` and how typical its pulling examples are.

    Returns
    -------
    dict
        Everything of :func:`core.metrics.trajectory_metrics` (``iteration``,
        ``similarity``, ``roughness``, ``similarity_mean``, ``roughness_mean``,
        ``coef_range``, ``concentration``), plus ``example_typicality`` (n,): each
        training image's correlation with its class contrast ``mu_k - mu``, and
        ``typicality`` (S,): that correlation averaged with the per-example
        gradient norms as weights (see :func:`core.metrics.gradient_typicality`).
    """
    out = metrics.trajectory_metrics(run)
    x, y = training_design(run, ds)
    templates = metrics.class_contrasts(x, y, ds.n_classes)
    out["example_typicality"] = metrics.template_correlation(x, y, templates)
    out["typicality"] = metrics.gradient_typicality(run, out["example_typicality"])
    return out


def first_step(run: Run, ds: Dataset) -> dict[str, np.ndarray]:
    """The closed-form first step for a unit step size, and what it is made of.

    Returns
    -------
    dict
        ``unit_W`` (K, d) and ``unit_b`` (K,): weights and bias after one step of
        size 1 from zero (:func:`core.metrics.first_step_closed_form`; multiply by
        :func:`first_step_scale`); ``counts`` (K,) training images per class;
        ``means`` (K, d) class mean images; ``contrasts`` (K, d) ``mu_k - mu``.
    """
    x, y = training_design(run, ds)
    K = ds.n_classes
    unit_W, unit_b = metrics.first_step_closed_form(x, y, K, 1.0, run.config.model)
    return {"unit_W": unit_W, "unit_b": unit_b, "counts": np.bincount(y, minlength=K),
            "means": metrics.class_means(x, y, K), "contrasts": metrics.class_contrasts(x, y, K)}


def first_step_scale(run: Run, fs: dict[str, np.ndarray]) -> float:
    """The step size ``a`` of the run's first step, so that step 1 is ``a * fs["unit_*"]``.

    Gradient descent's is its learning rate. L-BFGS's first iterate is the
    negative gradient at zero times a line-search step: ``a`` is fitted by least
    squares of ``[W(1), b(1)]`` onto ``[unit_W, unit_b]``, the bias included.

    Parameters
    ----------
    run : Run
    fs : dict
        :func:`first_step` of the run.

    Raises
    ------
    KeyError
        For an L-BFGS run without a stored iteration 1.
    """
    if run.config.optimizer != "lbfgs":
        return float(run.learning_rate)
    got = np.concatenate([run.weights(1).ravel(), run.bias(1)]).astype(np.float64)
    unit = np.concatenate([np.ravel(fs["unit_W"]), fs["unit_b"]])
    return float(np.vdot(got, unit) / np.vdot(unit, unit))
