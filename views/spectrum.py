"""Why the noise: gradient descent fits the directions of the images one after another,
smooth ones first and ever finer ones later; early stopping keeps only the first, like L2."""

import numpy as np
import pandas as pd
import streamlit as st

from core import analysis, charts, metrics, report
from ui import cached, draw, frame, uploads

page = frame.current()
ds = page.ds
st.title("Why the noise: ever finer directions")
run = page.run(label="the current settings")
gd = run.config.optimizer != "lbfgs"
with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "Every training set has a few broad patterns that most images share (a silhouette, "
        "light against dark) and many fine ones that only a few images have (a stripe, a "
        "logo, one pixel's speckle). The eigen-images of the training images sort them: "
        "the first ones are smooth and look like garments, the last ones look like noise.\n\n"
        "Gradient descent learns the broad patterns first: a direction whose eigenvalue is "
        "λ takes about 1/(a·λ) steps to fit (a is the step size). So by step t it has fitted "
        "at most the directions with **a·t·λ > 1**, and each later step adds finer ones. "
        "That is the noise in the weight images, and it grows long before the validation "
        "loss turns up; overfitting is only where the new detail stops paying. Stopping "
        "early keeps the first directions only, which is what an L2 penalty of strength "
        "1/(a·t) does (section at the bottom).")
if not gd:
    st.info("L-BFGS chooses its own steps, so there is no step size a and no line "
            "a·t·λ = 1: the spectrum and the weights' energy over it are shown, the fitted "
            "count and the L2 match are not.", icon=":material/info:")

sp = cached.spectrum(run, ds)
traj = cached.trajectory(run, ds)
curves = cached.spectrum_curves(run, ds)
its = [int(t) for t in run.snapshot_iterations if t >= 1]
t = page.choice(st.select_slider, "Step (stored snapshots, log-spaced)", "t", its[-1], its,
                format_func=lambda v: f"{v:,}", help="Every panel below shows this step.")
slot = run.slot(t)
W, b = run.weights(t), run.bias(t)
d = len(sp.eigenvalues)

numbers = st.grid(4, min_column_width=170)
if gd:
    numbers.metric("Directions fitted (at most)", f"{sp.fitted(t):,} of {d:,}",
                   help="Eigen-directions with a·t·λ > 1: an upper bound on those fitted by "
                        "this step (the loss's curvature is at most half of λ).")
numbers.metric("Roughness, measured", f"{traj['roughness_mean'][slot]:.2f}",
               help="Total variation / L1 norm of each weight image, mean over classes: "
                    "about 0.5 for a smooth silhouette, higher for speckle.")
numbers.metric("Roughness from the spectrum", f"{curves['roughness_estimate'][slot]:.2f}",
               help="An estimate: each class's share of its squared weights along each "
                    "direction times that eigen-image's roughness, summed over directions.")
numbers.metric("Validation accuracy",
               uploads.validation_value(run.snapshot_history['val_acc'][slot]))
uploads.no_validation(run, ds)

st.subheader("The directions, largest first")
# The very last directions are pixels no training image lights (eigenvalue 0): show the
# last ten that carry any variance. A tiny data set has fewer than ten (at most one per
# image): then one row holds them all.
live = max(1, int(np.count_nonzero(sp.eigenvalues > 1e-9 * sp.eigenvalues[0])))
top_idx = np.arange(min(10, live))
low_idx = np.arange(max(0, live - 10), live)
mid = live // 2 if live > 30 else 0
rows = [(f"directions 1-{len(top_idx)}", sp.eigen_images(top_idx))]
if mid > 10:
    rows.append((f"directions {mid + 1}-{mid + 10}", sp.eigen_images(np.arange(mid, mid + 10))))
if live > 10:
    rows.append((f"directions {low_idx[0] + 1}-{live}", sp.eigen_images(low_idx)))
draw.weight_rows(rows, [f"#{i + 1}" for i in top_idx], scale=draw.pick_scale(ds.image_shape, 56),
                 file_name="eigen-images.png",
                 caption="Eigen-images of the training images' second moment x^T x / n (each "
                         "row's columns are consecutive directions). Roughness: "
                         f"{sp.eigen_roughness[:10].mean():.2f} for the first ten, "
                         f"{sp.eigen_roughness[low_idx].mean():.2f} for the last ten with any variance.")

ranks = np.arange(1, d + 1)
energy = sp.class_energy(W)
cum = {ds.class_names[k]: np.cumsum(energy[k]) for k in range(ds.n_classes)}
rule = sp.fitted(t) + 0.5 if gd and sp.fitted(t) else None
series = {"eigenvalue λ": sp.eigenvalues[:live]}  # zeros cannot sit on a log axis
if gd:
    series["1 / (a t)"] = np.full(live, 1.0 / (run.learning_rate * t))
draw.chart_grid((
    (charts.lines(charts.long_frame(ranks[:live], series), x_title="direction (largest first)",
                  y_title="eigenvalue of x^T x / n", log_x=True, log_y=True, rule=rule,
                  rule_label="a·t·λ = 1", title="Spectrum of the training images"), "spectrum"),
    (charts.lines(charts.long_frame(ranks, cum), x_title="direction (largest first)",
                  y_title="share of the class's squared weights", log_x=True, rule=rule,
                  rule_label="a·t·λ = 1", title=f"Where each class's weights lie at step {t:,}"),
     "energy-over-spectrum"),
))
if gd:
    st.caption(f"Left of the dashed line, a·t·λ > 1: the directions step {t:,} can have fitted. "
               "Each curve climbs to 1; the later it climbs, the more of that class's weight "
               "image is fine detail.")

snaps = run.snapshot_iterations
over = {"measured": traj["roughness_mean"], "from the spectrum": curves["roughness_estimate"]}
items = [(charts.curves(charts.frame({k: (snaps, v) for k, v in over.items()}),
                        y_title="roughness (TV / L1)", selected=t, title="Roughness over training"),
          "roughness-vs-estimate")]
if gd:
    items.insert(0, (charts.curves(charts.frame({"directions with a·t·λ > 1": (snaps, curves["fitted"])}),
                                   y_title="directions (at most fitted)", selected=t,
                                   title="Directions fitted over training"), "fitted-directions"))
draw.chart_grid(items)
best = run.best_iteration()
rough = traj["roughness_mean"]
if not len(run.val_indices):
    pass  # no validation minimum to speak of; the note above says why
elif not gd:
    st.markdown(f"The validation minimum is at iteration {best:,}.")
elif best == run.iterations_done:
    st.markdown(
        f"The validation loss is still falling at the last step ({best:,}): nothing overfits "
        f"yet, and still gradient descent has fitted up to **{sp.fitted(best):,}** directions "
        f"and the roughness rose from **{rough[1]:.2f}** at step 1 to **{rough[-1]:.2f}**: "
        "the noise does not wait for overfitting.")
else:
    st.markdown(
        f"At the validation minimum (step {best:,}) gradient descent had fitted at most "
        f"**{sp.fitted(best):,}** directions and the roughness was "
        f"**{rough[run.slot(best)]:.2f}**; at the end ({run.iterations_done:,}): "
        f"**{sp.fitted(run.iterations_done):,}** and **{rough[-1]:.2f}**." + (
            f" {report.percent(share)} of the roughness rise came before the minimum, while "
            "validation still improved." if np.isfinite(share := metrics.roughness_rise(run)[
                "share"]) else ""))

st.subheader("Keep only the first directions")
ks = [k for k in (5, 10, 20, 50, 100, 200, 400) if k < d] + [d]
k = page.choice(st.select_slider, "Directions kept", "k", min(100, d), ks,
                format_func=lambda v: f"{v:,}",
                help="The weights at this step projected on the first k directions.")
kept = sp.keep_top(W, k)
acc_kept, acc_all = analysis.accuracy(run, ds, kept, b), analysis.accuracy(run, ds, W, b)
rough_kept, rough_all = metrics.roughness(kept).mean(), metrics.roughness(W).mean()
cols = st.grid(3, min_column_width=170)
cols.metric("Validation accuracy, kept", uploads.validation_value(acc_kept),
            delta=uploads.validation_value(acc_kept - acc_all, "+.3f") + " vs all")
cols.metric("Roughness, kept", f"{rough_kept:.2f}", delta=f"{rough_kept - rough_all:+.2f} vs all",
            delta_color="inverse")
cols.metric("Share of the squared weights kept", f"{sp.energy(W)[:k].sum():.1%}")
draw.weight_rows([(f"step {t:,}", W), (f"first {k:,} directions", kept)], ds.class_names,
                 scale=draw.pick_scale(ds.image_shape, 56), file_name=f"keep-{k}-step-{t}.png")
table = pd.DataFrame({"direction": ranks, "eigenvalue": sp.eigenvalues,
                      "eigen_image_roughness": sp.eigen_roughness,
                      **{f"energy_{name}": energy[i] for i, name in enumerate(ds.class_names)}})
draw.download("Spectrum CSV at this step", lambda: table.to_csv(index=False),
              f"spectrum-step-{t}.csv", "text/csv")

st.subheader("Early stopping is close to L2 at strength 1/(a t)")
why = analysis.l2_unavailable(run)
if why:
    st.info(why, icon=":material/info:")
    frame.stop()
steps = analysis.l2_steps(run)
t_l2 = min(steps, key=lambda s: abs(np.log(s) - np.log(t)))
st.caption(
    "Along gradient flow, stopping at step t with step size a acts like an L2 penalty of "
    "strength 1/(a t) (plus the run's own L2). The converged L2 solutions are computed at "
    f"the 1-2-5 steps; this section shows step {t_l2:,}, the one nearest the slider. Only the "
    "weights are compared: the L2 solution's bias has converged, gradient descent's has not.")
task = cached.l2_path(run, ds)
eq = draw.background(task, f"the converged L2 solutions for step {t_l2:,}",
                     "seconds to a minute at 1,000 images", part=t_l2)
if eq is not None:
    path = dict(sorted(task.partial.items()))
    lo, hi = eq.strength_range
    cols = st.grid(4, min_column_width=170)
    cols.metric("Strength L2 + 1/(a t)" if run.config.l2 else "Strength 1/(a t)",
                f"{eq.predicted_strength:.3g}")
    cols.metric("Cosine at that strength", f"{eq.predicted_cosine:.3f}",
                help="Cosine of the angle between W_t and the converged L2 solution (1 = same "
                     "direction). Close, not exact: sizes differ too (next metric).")
    cols.metric("Best match", f"{lo / eq.predicted_strength:.2f}-{hi / eq.predicted_strength:.2f}x",
                help="Multiples of 1/(a t) whose cosine is within 0.001 of the best "
                     f"({eq.cosine:.3f}): the match is flat near its peak.")
    cols.metric("Size, ||W_t|| / ||W_L2||", f"{eq.norm_ratio:.2f}")
    draw.weight_rows([(f"gradient descent, step {t_l2:,}", run.weights(t_l2)),
                      (f"L2 {eq.predicted_strength:.3g}, converged", eq.weights)],
                     ds.class_names, scale=draw.pick_scale(ds.image_shape, 56),
                     file_name=f"early-stopping-vs-l2-step-{t_l2}.png",
                     caption="Each row on its own scale, ± the value in its label: "
                             "the shapes are compared; the sizes differ (metric above).")
    st.caption("Cosine per class: " + ", ".join(
        f"{name} {c:.3f}" for name, c in zip(ds.class_names, eq.class_cosines)))
    table = pd.DataFrame([{"step": s, "strength_1_over_at": e.predicted_strength,
                           "cosine_at_1_over_at": e.predicted_cosine,
                           "best_strength": e.strength, "best_cosine": e.cosine,
                           "best_range_low": e.strength_range[0],
                           "best_range_high": e.strength_range[1], "norm_ratio": e.norm_ratio}
                          for s, e in path.items()])
    over_training = (charts.curves(charts.frame({"cosine at 1/(a t)": (
        table["step"].to_numpy(), table["cosine_at_1_over_at"].to_numpy())}),
        y_title="cosine with the L2 solution", selected=t_l2,
        title="Early stopping vs L2 over training"), "l2-cosine-over-training")
    draw.chart_grid((
        (charts.lines(charts.long_frame(eq.factors, {f"step {t_l2:,}": eq.cosines}),
                      x_title="strength / (1 / (a t))", y_title="cosine with W_t", log_x=True,
                      rule=1.0, rule_label="1 / (a t)", points=True,
                      x_ticks=(0.25, 0.5, 1, 2, 4),
                      title="Which L2 strength matches step t"), "l2-cosine-vs-strength"),
    ) + ((over_training,) if len(table) > 1 else ()))
    if len(path) < len(steps):
        st.caption(f"{len(path)} of {len(steps)} steps solved so far; the rest appear as you "
                   "move the slider or reload.")
    draw.download("Early stopping vs L2 CSV", lambda: table.to_csv(index=False),
                  "early-stopping-vs-l2.csv", "text/csv")
