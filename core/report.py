"""Things to take away from a run: CSV tables and a one-page HTML summary.

Plain Python (no Streamlit); the pages offer these as downloads.
"""

from __future__ import annotations

import base64
import html
from typing import Mapping

import numpy as np
import pandas as pd

from core import analysis, charts, metrics, render
from core.data import Dataset
from core.run import Run
from core.trainer import one_two_five

HISTORY_COLUMNS = (
    "iteration", "train_loss", "train_acc", "objective", "val_loss", "val_acc", "test_loss",
    "test_acc", "weight_norm", "coef_range", "similarity_to_step1", "roughness",
    "top10_gradient_share",
)


def history_table(run: Run, traj: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per iteration 0..T; snapshot-only columns are empty between snapshots.

    ``traj`` is :func:`core.analysis.trajectory` of the run.
    """
    T = run.iterations_done
    table = pd.DataFrame({"iteration": np.arange(T + 1)})
    for name in ("train_loss", "train_acc", "objective"):
        table[name] = run.history[name]
    snaps = run.snapshot_iterations
    per_snapshot = {
        "val_loss": run.snapshot_history["val_loss"], "val_acc": run.snapshot_history["val_acc"],
        "test_loss": run.snapshot_history["test_loss"],
        "test_acc": run.snapshot_history["test_acc"],
        "weight_norm": run.snapshot_history["weight_norm"],
        "coef_range": run.snapshot_history["coef_range"],
        "similarity_to_step1": traj["similarity_mean"], "roughness": traj["roughness_mean"],
        "top10_gradient_share": traj["concentration"],
    }
    for name, values in per_snapshot.items():
        column = np.full(T + 1, np.nan)
        column[snaps] = values
        table[name] = column
    return table[list(HISTORY_COLUMNS)]


def examples_table(run: Run, ds: Dataset, t: int, split: str) -> pd.DataFrame:
    """Per-example numbers at snapshot ``t`` for the "train" or "val" split, hardest first.

    ``index`` points into the data set's official training split; ``loss`` is the
    example's term of the objective, ``neg_log_p_true`` its remaining loss -log p(true).
    Training examples also get ``learned_at`` (-1: wrong at the end), ``forgetting_events``
    (right-to-wrong transitions, an integer) and ``never_learned`` (wrong at every step:
    Toneva et al. count those as forgotten infinitely often, see
    :func:`core.metrics.forgetting_counts`).
    """
    idx = run.train_indices if split == "train" else run.val_indices
    labels = ds.y_train[idx]
    pred = run.predictions(t, split)
    table = pd.DataFrame({
        "index": idx, "label": labels,
        "class": [ds.class_names[k] for k in labels],
        "predicted": pred, "predicted_class": [ds.class_names[k] for k in pred],
        "loss": run.example_losses(t, split), "p_true": run.p_true(t, split),
        "neg_log_p_true": run.neg_log_p_true(t, split),
    })
    if split == "train":
        table["gradient_norm"] = run.grad_norms(t)
        table["learned_at"] = run.learned_at
        table["forgetting_events"] = run.forgetting_events
        table["never_learned"] = metrics.never_learned(run.learned_at, run.forgetting_events)
    return table.sort_values("neg_log_p_true", ascending=False, kind="stable")


def hardest(run: Run, t: int, k: int, split: str = "train") -> np.ndarray:
    """Positions (into the split's examples) of the ``k`` examples with the largest remaining
    loss -log p(true) at snapshot ``t``, hardest first: the order of :func:`examples_table`
    and of the Hardest examples page, for both models (one-vs-rest's own per-example loss is
    a sum of sigmoid losses, not -log p(true))."""
    return np.argsort(-run.neg_log_p_true(t, split), kind="stable")[:k]


def equivalent_stopping_step(step_size: float, l2: float) -> float:
    """The gradient-descent step ``t = 1 / (a l2)`` whose early stopping acts like an L2
    penalty of strength ``l2``, for step size ``a`` = ``step_size``.

    Under gradient flow, stopping at time ``a t`` shrinks each direction of the data
    roughly as an L2 penalty of ``1 / (a t)`` does. NaN when ``l2`` is not positive or
    there is no step size (L-BFGS: ``Run.learning_rate`` is NaN).
    """
    if not (np.isfinite(step_size) and step_size > 0 and l2 > 0):
        return float("nan")
    return 1.0 / (step_size * l2)


def regularization_row(label: str, run: Run, t: int, step_size: float = float("nan")) -> dict:
    """One row of the regularization table: ``run`` stopped at snapshot ``t``.

    ``gap`` is train minus validation accuracy; ``best val loss`` and ``best at`` look
    at the snapshots up to ``t`` only (for early stopping, ``t`` is the best one).
    ``roughness`` is NaN for a run with an L1 penalty: total variation / L1 counts the
    edges of its zero patches, so it would score sparsity as noise (read ``zeros``).
    ``like stopping at`` is :func:`equivalent_stopping_step` of ``step_size`` (the
    unpenalised run's step) and the run's L2, rounded; NaN without either.
    """
    its = run.snapshot_iterations
    slot = int(np.searchsorted(its, t))
    upto = run.snapshot_history["val_loss"][: slot + 1]
    w = run.weights(t)
    best = int(np.nanargmin(upto)) if np.isfinite(upto).any() else slot
    return {
        "run": label, "step": int(t),
        "train acc": float(run.history["train_acc"][t]),
        "val acc": float(run.snapshot_history["val_acc"][slot]),
        "test acc": float(run.snapshot_history["test_acc"][slot]),
        "gap": float(run.history["train_acc"][t] - run.snapshot_history["val_acc"][slot]),
        "val loss": float(run.snapshot_history["val_loss"][slot]),
        "best val loss": float(upto[best]),
        "best at": int(its[best]),
        "roughness": float("nan") if run.config.l1 > 0 else float(metrics.roughness(w).mean()),
        "zeros": float((w == 0).mean()),
        "like stopping at": float(np.round(equivalent_stopping_step(step_size, run.config.l2))),
    }


def percent(share: float) -> str:
    """``share`` (a fraction) as a percentage with two significant digits below 10 %, so
    that a small share never reads "0 %" (0.0004 -> "0.04%", 0.153 -> "15%")."""
    if not np.isfinite(share):
        return "n/a"
    if share == 0 or share >= 0.1:
        return f"{share:.0%}"
    digits = np.format_float_positional(100 * share, precision=2, fractional=False, trim="-")
    return f"{digits}%"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def summary_html(run: Run, ds: Dataset, traj: Mapping[str, np.ndarray], link: str = "",
                 claims: Mapping | None = None) -> str:
    """A self-contained HTML page: settings, the first-step proof, the trajectory strip,
    the curves, the numbers behind the noise and the limit, and the hardest training
    examples of ``run``.

    ``claims`` may hold ``spectrum`` (:class:`~core.analysis.Spectrum`), ``l2`` (the
    :func:`~core.analysis.l2_path`) and ``max_margin`` (:class:`~core.analysis.MaxMargin`);
    a missing one is reported as not computed.
    """
    cfg = run.config
    K = ds.n_classes
    final = run.iterations_done
    y = ds.y_train[run.train_indices]
    parts = [f"<h1>Weightscope run summary</h1><p>{html.escape(ds.source)}. "
             f"Data fingerprint <code>{ds.fingerprint}</code>.</p>"]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in (
        ("model", cfg.model), ("optimizer", cfg.optimizer), ("training images", f"{cfg.n_train:,}"),
        ("iterations", f"{final:,} of {cfg.iterations:,}"), ("learning rate", cfg.learning_rate
                                                                 if cfg.optimizer == "gd" else "n/a"),
        ("step used", f"{run.learning_rate:.4g}" if cfg.optimizer == "gd"
         else "n/a (L-BFGS chooses its own)"), ("L2", cfg.l2), ("L1", cfg.l1),
        ("seed", cfg.seed), ("stopped", run.stop_reason),
        ("validation accuracy", f"{run.snapshot_history['val_acc'][-1]:.4f}"
         if len(run.val_indices) else "none (too few training images for a validation "
                                      "hold-out)"),
        ("test accuracy", f"{run.snapshot_history['test_acc'][-1]:.4f}"),
    ))
    parts.append(f"<h2>Settings and results</h2><table>{rows}</table>")
    if link:
        parts.append(f'<p>Open this view: <a href="{html.escape(link)}">{html.escape(link)}</a></p>')

    if final >= 1:
        # Gradient descent steps by its learning rate; L-BFGS's first iterate is the same
        # direction times a line-search step, fitted.
        fs = analysis.first_step(run, ds)
        a = analysis.first_step_scale(run, fs)
        got = run.weights(1).reshape(K, -1).astype(np.float64)
        W1 = a * fs["unit_W"]
        diff = np.abs(got - W1).max()
        parts.append(f"<h2>The first step</h2><p>Largest |trained step-1 weight - closed form| "
                     f"= {diff:.2e} ({cfg.dtype}, step {a:.4g}"
                     f"{', fitted' if cfg.optimizer == 'lbfgs' else ''}), against weights up to "
                     f"{np.abs(W1).max():.2e}: each weight image after one step is a contrast of "
                     "class means.</p>")

    steps = [s for s in one_two_five(final) if s in set(run.snapshot_iterations.tolist())]
    if steps:
        tiles = [render.diverging_rgb(run.weights(s), render.symmetric_limit(run.weights(s)))
                 for s in steps]
        strip = render.tile_grid(np.stack(tiles), scale=2, col_labels=ds.class_names,
                                 row_labels=[f"{s:,}" for s in steps])
        parts.append("<h2>Weight images over training</h2><p>Each row on its own symmetric "
                     "scale; orange positive, purple negative.</p>" +
                     _img(render.to_png(strip), "weight images over training"))

    if charts.export_formats():
        loss = charts.curves(charts.frame(charts.train_val_series(run, "loss")), y_title="mean loss (nats)",
                             title="Loss")
        acc = charts.curves(charts.frame(charts.train_val_series(run, "acc")),
                            y_title="accuracy (fraction)", title="Accuracy")
        shape = charts.curves(charts.frame({
            "similarity to step 1": (run.snapshot_iterations, traj["similarity_mean"]),
            "roughness": (run.snapshot_iterations, traj["roughness_mean"])}),
            y_title="value", title="Shape of the weight images")
        parts.append("<h2>Curves</h2>" + "".join(
            _img(charts.to_png(c, width=520), t) for c, t in
            ((loss, "loss"), (acc, "accuracy"), (shape, "shape"))))

    if final >= 1:
        parts.append(_claims_html(run, traj, claims or {}))

    losses = run.neg_log_p_true(final)
    top = hardest(run, final, 20)
    pred = run.predictions(final)
    thumbs = render.thumbnail_grid(
        ds.x_train[run.train_indices][top], ncols=10, scale=3,
        labels=[f"{ds.class_names[y[i]]}\nas {ds.class_names[pred[i]]}\n-log p {losses[i]:.2f}"
                for i in top])
    parts.append(f"<h2>Hardest training examples at iteration {final:,}</h2>"
                 "<p>Ranked by remaining loss -log p(true class), as on the Hardest examples "
                 "page.</p>" + _img(render.to_png(thumbs), "hardest examples"))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "img{max-width:100%;margin:4px 0}th{text-align:left;padding-right:1em}"
             "td,th{border-bottom:1px solid #ddd;padding:2px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Weightscope summary"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _claims_html(run: Run, traj: Mapping[str, np.ndarray], claims: Mapping) -> str:
    """The summary's section on why the noise comes and where the weights head."""
    final = run.iterations_done
    items = []
    sp = claims.get("spectrum")
    if sp is not None:
        W = run.weights(final)
        if run.config.optimizer == "gd":
            items.append(f"Directions with a·t·λ &gt; 1 at step {final:,} (at most fitted): "
                         f"{sp.fitted(final):,} of {len(sp.eigenvalues):,}" + (
                             f"; at the validation minimum (step {run.best_iteration():,}): "
                             f"{sp.fitted(run.best_iteration()):,}." if len(run.val_indices)
                             else "."))
        items.append(f"Roughness at the end: {traj['roughness_mean'][-1]:.2f} measured, "
                     f"{sp.roughness_estimate(W).mean():.2f} estimated from the weights' "
                     "energy over the spectrum.")
    path = claims.get("l2")
    if path:
        t = max(path)
        eq = path[t]
        lo, hi = eq.strength_range
        items.append(f"Early stopping at step {t:,} vs the converged L2 solution at "
                     f"1/(a t) = {eq.predicted_strength:.3g}: cosine {eq.predicted_cosine:.3f} "
                     f"(close, not exact); best match {lo / eq.predicted_strength:.2f}-"
                     f"{hi / eq.predicted_strength:.2f}x 1/(a t).")
    else:
        items.append("Early stopping vs L2: not computed (open the page 'Why the noise').")
    mm = claims.get("max_margin")
    if mm is not None and mm.determined:
        from core import analysis
        cos = analysis.direction_cosines(run, mm)
        items.append(f"Max-margin limit: {int(mm.support.sum()):,} support vectors of "
                     f"{len(mm.support):,} ({'separable' if mm.separable else 'not separable'}); "
                     f"cosine of [W, b] with it at step {final:,}: {cos[-1]:.2f}.")
        shares = analysis.pull_shares(run, mm.support)
        edges = run.residual_iterations
        if len(shares):
            items.append("Share of each window's pull from images that are not support "
                         "vectors: " + ", ".join(
                             f"steps {edges[i] + 1:,}-{edges[i + 1]:,}: {shares[i]:.1%}"
                             for i in range(len(shares))) + ".")
    elif mm is not None:
        items.append(f"Max-margin limit: {html.escape(mm.reason)}")
    else:
        items.append("Max-margin limit: not computed (open the page 'Where it heads').")
    return "<h2>Why the noise, and where it heads</h2><ul>" + "".join(
        f"<li>{item}</li>" for item in items) + "</ul>"
