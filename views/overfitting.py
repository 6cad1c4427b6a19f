"""Overfitting and regularization: the noise in the weight images comes first (gradient
descent fitting ever finer directions of the data); overfitting is where that stops paying,
and penalties or early stopping cut it short."""

import numpy as np
import pandas as pd
import streamlit as st

from core import charts, metrics, report
from core.settings import PRESETS, to_params
from core.trainer import one_two_five
from ui import draw, frame, resources, uploads

#: The runs compared, each with the penalty this page sets itself.
VARIANTS = (
    ("no penalty", {"l2": 0.0, "l1": 0.0}),
    ("L2 0.001", {"l2": 0.001, "l1": 0.0}),
    ("L2 0.01", {"l2": 0.01, "l1": 0.0}),
    ("L1 0.0003", {"l2": 0.0, "l1": 0.0003}),
)

page = frame.current()
ds = page.ds
cfg = page.config
st.title("The noise comes first; overfitting is where it stops paying")
with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "**Overfitting** means getting better on the training images while getting worse on "
        "new ones: here the **validation** images, held out and never trained on. The same "
        "model is trained several times, differing only in a **penalty** on large weights: "
        "none; **L2** at two strengths (adds a multiple of the sum of squared weights to the "
        "loss); **L1** (a multiple of the sum of absolute weights, which sets many weights to "
        "exactly zero); and **early stopping**, the run without a penalty taken at the step "
        "where the validation loss was lowest. Compare when the **roughness** (how speckled "
        "the weight images are) rises with when the validation loss turns up: the speckle "
        "comes first, from gradient descent fitting ever finer patterns of the training "
        "images, and overfitting begins only where that extra detail stops helping on new "
        "images. The penalties and early stopping cut that fitting short, so their images "
        "stay smoother.")
st.info(
    "This page sets each run's penalty itself: the sidebar's L2 and L1 do not apply here. "
    "Data, model, training-set size, steps, learning rate and seed come from the sidebar. "
    "Try a small training set (overfits) against a large one.", icon=":material/info:")

wanted = {label: cfg.replace(**penalty) for label, penalty in VARIANTS
          if not (cfg.optimizer == "lbfgs" and penalty["l1"] > 0)}
if cfg.optimizer == "lbfgs":
    st.caption("L1 is left out: it needs gradient descent's proximal step (each step "
               "also sets the weights that L1 pulls past zero to exactly zero).")
# Checked together before any trains: a refusal after the first runs had trained would
# have spent their time and memory on a page that cannot be drawn.
over = {c.memory_problem(ds, resources.run_memory_bound()) for c in wanted.values()} - {None}
if over:
    st.error(f"None of this page's {len(wanted)} runs is trained: each is like the "
             "sidebar's, penalty aside. " + " ".join(sorted(over)))
    frame.stop()
missing = [label for label, c in wanted.items() if resources.run_store().cached(ds, c) is None]
note = st.empty()  # says what is being trained, then that it was (not "to train" any more)
if missing:
    note.caption(f"First visit with these settings: {len(missing)} run(s) to train "
                 f"({', '.join(missing)}), each as long as the sidebar's. They are kept, so "
                 "the next visit is instant.")
runs = {label: page.run(c, label=label) for label, c in wanted.items()}
if missing:
    note.caption(f"Trained {len(missing)} run(s) for this page ({', '.join(missing)}); they "
                 "are kept, so the next visit is instant.")
base = runs["no penalty"]
best = base.best_iteration()
rise = metrics.roughness_rise(base)
grew = (f"from {rise['at_first']:.2f} at step {rise['first']:,} to {rise['at_last']:.2f} at "
        f"step {rise['last']:,}")
spectrum = frame.BY_PATH.get("Spectrum")  # the page on the directions the noise is made of
if rise["overfits"]:
    share = rise["share"]
    st.markdown(
        (f"**{'All' if share >= 1 else report.percent(share)} of the roughness rise** ({grew}) "
         f"happened before the validation minimum at step {best:,} (roughness "
         f"{rise['at_best']:.2f} there), in the run without a penalty. "
         if np.isfinite(share) else f"Roughness did not rise without a penalty ({grew}). ")
        + "The noise is gradient descent fitting ever finer directions of the data (the page "
        f"\"{spectrum.title if spectrum else 'Spectrum'}\" shows them); overfitting begins "
        "only where that stops paying, at the validation minimum.")
    if spectrum:
        st.page_link(frame.page_object(spectrum.path), label=spectrum.title,
                     icon=spectrum.icon, query_params=page.link_params(spectrum.path))
elif np.isfinite(base.snapshot_history["val_loss"]).any():
    st.info(
        f"Nothing overfits yet at these settings: validation loss is still falling at the "
        f"last step ({rise['last']:,}), so early stopping picks the last step. "
        + (f"Roughness still rose, {grew}: the noise comes before any overfitting. "
           if rise["share"] > 0 else "")
        + "Fewer images or more steps show where overfitting begins, as in this preset:",
        icon=":material/trending_down:")
    preset = next(p for p in PRESETS if p.title == "Reproduce the answer")
    if preset.settings.dataset in resources.available_datasets():
        st.page_link(
            frame.page_object("Overfitting"), icon=":material/play_arrow:",
            label=f"{preset.title}: {preset.settings.n_train:,} images, "
                  f"{preset.settings.iterations:,} steps",
            query_params=to_params(preset.settings,
                                   resources.dataset(preset.settings.dataset).fingerprint))
else:
    uploads.no_validation(base, ds)  # so nothing shows where overfitting begins

images = {label: run.weights(run.iterations_done) for label, run in runs.items()}
images["early stopping"] = base.weights(best)
a = base.learning_rate  # NaN for L-BFGS, which has no step size
rows = [report.regularization_row(label, run, run.iterations_done, step_size=a)
        for label, run in runs.items()]
rows.append(report.regularization_row("early stopping", base, best))
table = pd.DataFrame(rows)
if not np.isfinite(a):
    table = table.drop(columns="like stopping at")
st.dataframe(
    table, hide_index=True,
    column_config={
        c: st.column_config.NumberColumn(
            format="localized" if c in ("step", "best at", "like stopping at")
            else "%.3f")  # steps as 30,000, as everywhere else
        for c in table.columns if c != "run"
    })
draw.download("Table CSV", table.to_csv(index=False), "regularization.csv", "text/csv")
notes = [
    "gap = train acc - val acc; zeros = share of weights exactly zero. "
    "Early stopping is the unpenalised run at the stored snapshot with the lowest validation "
    "loss (the validation images are held out from the training split; the test split never "
    "chooses anything). Roughness: total variation / L1 norm of the weight images, mean over "
    "classes."]
for label in [label for label, run in runs.items() if run.config.l1 > 0]:
    zeros = table.loc[table["run"] == label, "zeros"].iloc[0]
    notes.append(
        f"{label} has no roughness: {report.percent(zeros)} of its weights are exactly zero, "
        "and total variation / L1 counts every edge of a zero patch, so it would score "
        "sparsity as noise. Read it by its zeros.")
if np.isfinite(a):
    like = table.dropna(subset=["like stopping at"])
    notes.append(
        f"Like stopping at: the step t = 1/(a·L2) at which early stopping acts like that L2 "
        "penalty (approximately, from gradient flow: descent with vanishing steps; "
        f"a = {a:.4g}, the no-penalty run's step): "
        + "; ".join(f"{label} ≈ stopping at step {step:,.0f}"
                    for label, step in zip(like["run"], like["like stopping at"])) + ".")
else:
    notes.append("L-BFGS has no step size, so no L2 run has an equivalent early-stopping step.")
st.caption(" ".join(notes))

st.subheader("Validation curves")
# The runs differ late: from step 1 on, the early descent fills the plot and the curves
# look alike. By default the charts start a decade or so before the early-stopping step.
last = base.iterations_done
starts = [s for s in one_two_five(last) if s < last] or [1]
zoom = max([s for s in starts if s <= max(1, best // 5)], default=1)
start = page.choice(
    st.select_slider, "Curves from step", "from", zoom, starts, format_func=lambda v: f"{v:,}",
    help="Where the curves begin. The default starts at about a fifth of the early-stopping "
         "step, where the runs part; move it to 1 to see the whole run.")
loss = charts.frame({label: (run.snapshot_iterations, run.snapshot_history["val_loss"])
                     for label, run in runs.items()})
acc = charts.frame({label: (run.snapshot_iterations, run.snapshot_history["val_acc"])
                    for label, run in runs.items()})
gap = charts.frame({
    label: (run.snapshot_iterations,
            run.history["train_acc"][run.snapshot_iterations] - run.snapshot_history["val_acc"])
    for label, run in runs.items()})
draw.chart_grid((
    (charts.curves(loss, y_title="validation loss (nats)", selected=best, start=start,
                   title="Validation loss (rule: early-stopping step)"), "validation-loss"),
    (charts.curves(acc, y_title="validation accuracy (fraction)", selected=best, start=start,
                   title="Validation accuracy"), "validation-accuracy"),
    (charts.curves(gap, y_title="train - validation accuracy", selected=best, start=start,
                   title="Generalisation gap"), "generalisation-gap"),
))
st.caption("Loss in nats (natural-log units): the mean of −log p(true class) over the "
           f"validation images; a uniform guess over the {ds.n_classes} classes scores "
           f"log {ds.n_classes} ≈ {np.log(ds.n_classes):.2f}. The generalisation gap is "
           "training minus validation accuracy: how much better the run does on the images "
           "it was trained on.")

st.subheader("Weight images")
show = page.choice(st.radio, "Show each run at", "show", "final step",
                   ["final step", "its best validation step"], cast=str, horizontal=True)
steps = {label: run.iterations_done for label, run in runs.items()}
steps["early stopping"] = best
if show == "its best validation step":
    for label, run in runs.items():
        steps[label] = run.best_iteration()
        images[label] = run.weights(steps[label])
labels = list(images)
scale = draw.pick_scale(ds.image_shape, 56)
draw.weight_rows([(f"{k} @ {steps[k]:,}", images[k]) for k in labels], ds.class_names,
                 scale=scale, file_name="weights-by-regularization.png")
