"""Compare two settings: two runs side by side at the same step, each with a full set of
settings (A: the sidebar's; B: drawn on this page, kept in the URL as b.n, b.T, ...)."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from core import charts, render
from core.config import SETTINGS, n_train_range
from core.settings import Settings, work_problem
from core.trainer import one_two_five
from ui import cached, draw, frame, resources, sidebar, uploads

page = frame.current()
A = page.settings
st.title("Compare two settings")
with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "Two trainings of the same kind of model, each with its own settings, shown at the "
        "same step. **A** uses the settings in the sidebar; **B** uses the settings in the "
        "box \"Settings of B\" below (at first A's, with the other choice of L2 penalty). "
        "The weight images of both are drawn in one picture on one colour scale, so a paler "
        "row really has smaller weights. Beside them: how often each is right on its "
        "training images and on held-out **validation** images (never trained on), its "
        "validation loss (lower is better), how speckled its images are (**roughness**) and "
        "how much they still look like after step 1 (**similarity to step 1**). Runs of "
        "different lengths keep snapshots of different steps; the steps 1, 2, 5, 10, 20, "
        "50, ... are kept by every run, so the step control offers those both runs have. "
        "The buttons below set up the comparisons that teach most in one click; a side the "
        "server cannot train (too large) says what to lower, and the other side still shows. "
        "(\"The "
        "question\" and \"the answer\" in the settings' help are the CrossValidated thread "
        "this app follows, question 483072: why the weight images look like clothes after "
        "one step and like noise after many.)")


def describe(s: Settings, other: Settings) -> str:
    """The settings of ``s`` that differ from ``other``'s, in a few words ("" if none)."""
    parts = []
    for row in SETTINGS:
        value = getattr(s, row.name)
        if value == getattr(other, row.name):
            continue
        if row.name == "learning_rate" and s.optimizer == other.optimizer == "lbfgs":
            continue  # L-BFGS has no learning rate
        shown = row.choices.get(value, value) if row.choices else value
        if row.name == "n_train":
            parts.append(f"{value:,} images")
        elif row.name == "iterations":
            parts.append(f"{value:,} steps")
        elif row.kind == "choice":
            parts.append(str(shown))
        else:
            parts.append(f"{row.label.replace(' penalty', '')} {row.format(value)}")
    return ", ".join(parts)


def refusal(s: Settings, ds) -> str | None:
    """Why a side's run cannot be trained on this server (work cap, memory), else None."""
    cfg = s.config()
    work = work_problem(cfg.iterations, cfg.n_train)
    if work:
        return work
    problems = cfg.problems(ds, max_bytes=resources.run_memory_bound())
    return " ".join(problems.values()) or None


def comparisons(ds_name: str, ds) -> list[tuple[str, Settings, Settings]]:
    """One-click comparisons (label, A, B) on data set ``ds`` (named ``ds_name``): each
    changes one thing, on runs short enough for a demo (on Fashion-MNIST, the presets')."""
    low, high = n_train_range(ds)
    small, large = min(1000, max(low, high // 10)), min(50_000, high)
    base = Settings(dataset=ds_name, n_train=small)
    out = [
        # 50,000 images x 30,000 steps is over the default work cap: 2,000 steps fit,
        # and are the "Full data" preset's run.
        (f"{small:,} vs {large:,} images", base.replace(iterations=2000),
         base.replace(n_train=large, iterations=2000)),
        ("no penalty vs L2 0.01", base.replace(iterations=30_000),
         base.replace(iterations=30_000, l2=0.01)),
        ("softmax vs one-vs-rest", base.replace(iterations=3000),
         base.replace(iterations=3000, model="ovr")),
        ("gradient descent vs L-BFGS", base.replace(iterations=300),
         base.replace(iterations=300, optimizer="lbfgs")),
    ]
    return out


def take(a: Settings, b: Settings) -> None:
    """Put ``a`` into the sidebar's controls and ``b`` into B's (a button's callback, run
    before the rerun draws them). A button, not a link to this page: Streamlit 1.67 leaves
    the address bar as it was after a link to the page already shown, so the frame could
    not write the new view there."""
    sidebar.seed(a, force=True)
    sidebar.seed(b, force=True, prefix="b.")


st.markdown("**One click:**")
with st.container(horizontal=True, gap="small"):
    for label, a, b in comparisons(A.dataset, page.ds):
        st.button(label, icon=":material/compare_arrows:", on_click=take, args=(a, b),
                  key=f"compare/{label}",
                  help=f"Sets A to {a.n_train:,} images and {a.iterations:,} steps and B to "
                       f"the same but {describe(b, a)}. Each run trains once (the longest, "
                       "about a minute) and is kept for every later visit.")

default_b = A.replace(l2=0.01 if A.l2 == 0 else 0.0)
box = st.expander("Settings of B (A's are in the sidebar)", icon=":material/tune:")
B, ds_b = page.more_settings("b.", default_b, container=box)

sides = {"A": (A, page.ds), "B": (B, ds_b)}
names = {"A": describe(A, B), "B": describe(B, A)}
label_of = {k: f"{k}: {names[k]}" if names[k] else k for k in sides}


def setting_text(row, value) -> str:
    """A setting's value as a viewer reads it (choices by label, whole numbers as 2,000)."""
    if row.choices:
        return row.choices.get(value, value)
    return f"{value:,}" if row.kind == "int" else row.format(value)


diff = pd.DataFrame(
    [{"setting": row.label, "A": setting_text(row, getattr(A, row.name)),
      "B": setting_text(row, getattr(B, row.name))}
     for row in SETTINGS if getattr(A, row.name) != getattr(B, row.name)])
if diff.empty:
    st.info("A and B have the same settings: change B's below, or click a comparison above.",
            icon=":material/info:")
else:
    st.caption("What differs between A and B (everything else is the same):")
    st.table(diff.set_index("setting"))

refused = {k: refusal(s, d) for k, (s, d) in sides.items()}
for k, why in refused.items():
    if why:
        st.error(f"{k} is not trained: {why}", icon=":material/block:")
runs = {}
for k, (s, d) in sides.items():
    if not refused[k]:
        runs[k] = page.run(s.config(), label=f"{label_of[k]}", ds=d,
                           upload=s.dataset == "upload")
if not runs:
    frame.stop()
said = set()
for k, r in runs.items():  # once per data set: both sides may lack a validation hold-out
    if sides[k][1].fingerprint not in said and uploads.no_validation(r, sides[k][1]):
        said.add(sides[k][1].fingerprint)

common = sorted(set().union(*(one_two_five(r.iterations_done) for r in runs.values()))
                .intersection(*({int(t) for t in r.snapshot_iterations} for r in runs.values())))
common = [t for t in common if t >= 1]
t = page.choice(
    st.select_slider, "Step shown on both sides (1, 2, 5, 10, ...: the steps both runs kept)",
    "t", common[-1], common, format_func=lambda v: f"{v:,}",
    help="Every run keeps snapshots at 1, 2, 5, 10, 20, 50, ... steps (L-BFGS: iterations) "
         "and at its last one; this control offers those both runs have.")

st.subheader(f"Weight images at step {t:,}")
weights = {k: r.weights(t) for k, r in runs.items()}
vmax = max(render.symmetric_limit(w) for w in weights.values())
shapes = {w.shape for w in weights.values()}
class_names = page.ds.class_names if "A" in runs else ds_b.class_names
if len(shapes) == 1:
    draw.weight_images(np.stack(list(weights.values())), col_labels=class_names,
                       row_labels=[f"{k} " for k in weights], vmax=vmax,
                       scale=draw.pick_scale(next(iter(shapes))[-2:]),
                       file_name=f"compare-step-{t}.png")
else:  # two data sets of different image sizes or classes: two grids, one scale
    for k, w in weights.items():
        draw.weight_images(w, col_labels=sides[k][1].class_names, vmax=vmax,
                           caption=label_of[k], legend=k == list(weights)[-1],
                           scale=draw.pick_scale(w.shape[-2:]),
                           file_name=f"compare-{k}-step-{t}.png")
st.caption(
    f"Rows: {'; '.join(label_of[k] for k in runs)}. Both on one colour scale, ±{vmax:.3g}: the "
    f"larger of the two runs' own scales (the {render.SCALE_PERCENTILE:g}th percentile of "
    "|weight|), so a paler row has smaller weights, not a different scale.")


def numbers(run, ds) -> dict[str, float]:
    slot = run.slot(t)
    traj = cached.trajectory(run, ds)
    return {"Train accuracy": float(run.history["train_acc"][t]),
            "Validation accuracy": float(run.snapshot_history["val_acc"][slot]),
            "Validation loss": float(run.snapshot_history["val_loss"][slot]),
            "Roughness": float(traj["roughness_mean"][slot]),
            "Similarity to step 1": float(traj["similarity_mean"][slot])}


st.subheader(f"Key numbers at step {t:,}")
got = {k: numbers(r, sides[k][1]) for k, r in runs.items()}
rows = []
for what in next(iter(got.values())):
    row = {"number": what, **{k: got[k][what] if k in got else math.nan for k in sides}}
    row["B − A"] = row["B"] - row["A"]
    rows.append(row)
table = pd.DataFrame(rows).set_index("number")


def shown(v: float, sign: str = "") -> str:
    return f"{v:{sign}.3f}" if math.isfinite(v) else "none"


st.table(pd.DataFrame({k: [shown(v, "+" if k == "B − A" else "") for v in table[k]]
                       for k in table.columns}, index=table.index))
st.caption(
    "Validation: images held out of training. Roughness: how speckled the weight images "
    "are (total variation over L1 norm, mean over classes; about 0.5 for a smooth "
    "silhouette). Similarity to step 1: mean over classes of the correlation with the "
    "images after the first step (1: unchanged). \"none\": that side has no number (not "
    "trained, or no validation images).")
draw.download("Numbers CSV", lambda: table.to_csv(), f"compare-step-{t}.csv", "text/csv")

st.subheader("Validation loss and accuracy of both runs")
loss = charts.frame({f"{label_of[k]}": (r.snapshot_iterations, r.snapshot_history["val_loss"])
                     for k, r in runs.items()})
acc = charts.frame({f"{label_of[k]}": (r.snapshot_iterations, r.snapshot_history["val_acc"])
                    for k, r in runs.items()})
picked = draw.chart_grid((
    (charts.curves(loss, y_title="validation loss (nats)", selected=t,
                   title="Validation loss", pickable=True), "compare-val-loss"),
    (charts.curves(acc, y_title="validation accuracy (fraction correct)", selected=t,
                   title="Validation accuracy", pickable=True), "compare-val-accuracy"),
), pickable=True)
if picked is not None and picked != t:
    page.select("t", picked)  # a click on a chart picks the nearest common step
st.caption(
    "Loss in nats (natural-log units): the mean of −log p(true class) on the validation "
    f"images; a uniform guess over the {page.ds.n_classes} classes scores "
    f"{np.log(page.ds.n_classes):.2f}. The vertical line marks the step shown above; steps "
    "run along the bottom on a log scale."
    + (" One-vs-rest's loss adds one yes-or-no loss per class, so it is not on softmax's "
       "scale: compare the two models by their accuracies." if A.model != B.model else ""))
