"""Trajectory: the weight images fade from templates to noise as hard examples take over."""

import re

import numpy as np
import streamlit as st

from core import charts, metrics, report
from core.report import percent
from core.trainer import one_two_five
from ui import cached, draw, frame, play, uploads

page = frame.current()
ds = page.ds
# The presentation view (present=1): the weight images as large as the window allows, the
# step in big type, the slider and Play; no sidebar, explanation or charts. A view value
# like the step, so a link opens it; its button beside Play flips it.
present = page.choice(None, "Presentation", "present", 0, (0, 1))
if not present:
    st.title("From templates to noise")
run = page.run(label="the current settings")
K = ds.n_classes
its = [int(t) for t in run.snapshot_iterations if t >= 1]
traj = cached.trajectory(run, ds)
if not present:
    with st.expander("What am I looking at?", expanded=True):
        step = "iteration" if run.config.optimizer == "lbfgs" else "step"
        rough = traj["roughness_mean"]
        st.markdown(
            "The weight images (one per class, one weight per pixel) as training goes on: at the "
            f"{step} the slider picks, then row by row from {step} 1 to the last. After one "
            f"{step} they are templates made of average images (page \"First step\"); "
            "later they fade into speckle. Every training image pulls on the weights, harder the "
            "more wrong the model still is about it. Typical images are soon classified with "
            "room to spare and their pull fades; the later changes come from the few hard, "
            "unusual ones (shorts among trousers), and fitting them adds ever finer detail. Here, "
            f"by {step} {its[-1]:,}, the **similarity to step 1** (1: unchanged) is "
            f"{traj['similarity_mean'][-1]:.2f} and the **roughness** (how speckled the images "
            f"are) went from {rough[run.slot(its[0])]:.2f} to {rough[-1]:.2f}. The speckle "
            "is not overfitting: it starts long before the loss on held-out images turns up "
            "(page \"Overfitting and regularization\").")
    if run.config.optimizer == "lbfgs":
        st.info(
            "L-BFGS, the optimizer the CrossValidated question used (scikit-learn's default). "
            "The asker's three figures are the coefficient images per "
            "iteration count (Every class over training), the Coefficient range chart and the "
            "Accuracy chart below, all from this one recorded run. Each iterate equals "
            "scikit-learn's LogisticRegression(max_iter=k, tol=0) refit on the same images.",
            icon=":material/info:")

step_word = "Iteration" if run.config.optimizer == "lbfgs" else "Step"
scale = draw.pick_scale(ds.image_shape)


def flip_presentation():
    key = page.widget_key("present")
    st.session_state[key] = 0 if st.session_state.get(key) else 1
    play.needs_full_run(page, "t")


def controls() -> int:
    """The step slider with Play/Pause and the presentation button in one row (the step
    in big type before them in presentation); returns the step."""
    row = st.container(horizontal=True, vertical_alignment="bottom", gap="medium")
    # The slider keeps room to scrub (420 px, or the row): on a narrow window the buttons
    # wrap below it instead of squeezing it. Streamlit names a keyed element's box
    # st-key-<key>, other characters than letters, digits, _ and - made -.
    box = "st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", page.widget_key("t"))
    st.html(f"<style>.{box} {{ min-width: min(100%, 420px); }}</style>")
    big = row.empty() if present else None
    t = page.choice(
        row.select_slider,
        f"{'Iteration' if run.config.optimizer == 'lbfgs' else 'Gradient step'} "
        "(stored snapshots, log-spaced)", "t", its[-1], its,
        format_func=lambda v: f"{v:,}", disabled=play.playing(page, "t"),
        help="Every panel below shows this step; a click on a chart picks the step nearest "
             "to it. Snapshots are spaced evenly in log(step).")
    play.button(page, "t", its, row)
    row.button("Exit presentation" if present else "Presentation", key="ws_present_button",
               icon=":material/close_fullscreen:" if present else ":material/fullscreen:",
               on_click=flip_presentation,
               help="The weight images as large as the window allows, with the step and "
                    "Play, for a projector (a link to it opens it directly).")
    if big is not None:
        big.title(f"{step_word} {t:,}")
    return t


def step_part():
    """Everything that shows the step: while playing, each tick reruns only this."""
    t = controls()
    if present:
        draw.presentation_grid(run.weights(t), ds.class_names, ds.image_shape)
        return
    slot = run.slot(t)
    numbers = st.grid(5, min_column_width=150)  # wraps to fewer a row on a narrow window
    numbers.metric("Train accuracy", f"{run.history['train_acc'][t]:.3f}")
    numbers.metric("Validation accuracy",
                   uploads.validation_value(run.snapshot_history['val_acc'][slot]))
    numbers.metric("Similarity to step 1", f"{traj['similarity_mean'][slot]:.2f}",
                   help="Mean over classes of the correlation between the class's weight "
                        "image now and after step 1.")
    numbers.metric("Roughness", f"{traj['roughness_mean'][slot]:.2f}",
                   help="Total variation of the weight image divided by its L1 norm (mean over "
                        "classes): about 0.5 for a smooth silhouette, higher for noise.")
    numbers.metric("Top-10 % gradient share", percent(traj["concentration"][slot]),
                   help="Share of the summed per-example gradient norm ||p - y|| ||x|| carried "
                        "by the 10 % of training examples with the largest one. At step 0 every "
                        "residual ||p - y|| is the same, so the share there, "
                        f"{percent(traj['concentration'][0])}, comes from image norms alone: "
                        "that is the baseline, not 10 %.")
    uploads.no_validation(run, ds)

    st.subheader(f"Weight images at step {t:,}")
    draw.weight_images(run.weights(t), col_labels=ds.class_names, scale=scale,
                       file_name=f"weights-step-{t}.png")

    st.subheader("What the numbers do")
    sel = t
    loss = charts.frame(charts.train_val_series(run, "loss"))
    acc = charts.frame(charts.train_val_series(run, "acc"))
    snaps = run.snapshot_iterations
    shape = charts.frame({
        "similarity to step 1": (snaps, traj["similarity_mean"]),
        "roughness": (snaps, traj["roughness_mean"]),
    })
    pull = charts.frame({"top 10 % gradient share": (snaps, traj["concentration"])})
    # The accuracy axis fits the last two decades of steps: the late changes of a point or
    # two (validation accuracy turning down) would be a flat line on a 0-1 axis.
    acc_from = max(1, run.iterations_done // 100)
    crange = charts.frame({"max - min of all weights": (snaps, traj["coef_range"])})
    picked = draw.chart_grid((
        (charts.curves(loss, y_title="mean loss (nats)", selected=sel, title="Loss",
                       pickable=True), "loss"),
        (charts.curves(acc, y_title="accuracy (fraction correct)", selected=sel,
                       title=f"Accuracy (axis fit to steps from {acc_from:,})", fit_from=acc_from,
                       pickable=True),
         "accuracy"),
        (charts.curves(shape, y_title="value (unitless)", selected=sel,
                       title="Shape of the weight images", pickable=True), "weight-image-shape"),
        (charts.curves(pull, y_title="share of the summed gradient norm", selected=sel,
                       title="Who pulls on the weights", pickable=True), "gradient-concentration"),
        (charts.curves(crange, y_title="coefficient range (weight units)", selected=sel,
                       title="Coefficient range", log_y=True, pickable=True), "coefficient-range"),
    ), pickable=True)
    if picked is not None and picked != t:
        play.pause(page, "t")  # the viewer takes over
        page.select("t", picked)  # a click on a chart picks the step nearest to it
    draw.download("History CSV", lambda: report.history_table(run, traj).to_csv(index=False),
                  "history.csv", "text/csv")
    st.caption(
        "Loss in nats (natural-log units): the mean of −log p(true class); a uniform guess over "
        f"the {K} classes scores log {K} ≈ {np.log(K):.2f}. "
        f"Who pulls: at step 0 the top 10 % carry {percent(traj['concentration'][0])}, from image "
        "norms alone; a share above that means some examples pull harder because they are still "
        "predicted badly. The page \"Where it heads\" shows which examples stop pulling: the share "
        "of the pull carried by examples that are not support vectors of the max-margin limit "
        "(the hard images that alone decide the rule with the widest gap between classes).")
    heads = frame.BY_PATH.get("Limit")  # the page "Where it heads"
    if heads:
        st.page_link(frame.page_object(heads.path), label=heads.title, icon=heads.icon,
                     query_params=page.link_params(heads.path))

    st.subheader(f"The examples that carry the gradient at step {t:,}")
    norms = run.grad_norms(t)
    top = metrics.top_gradient_examples(norms, 20)
    y = ds.y_train[run.train_indices]
    pred = run.predictions(t)
    share = metrics.top_share(norms, len(top))
    baseline = metrics.top_share(run.grad_norms(0), len(top))
    st.markdown(
        f"These {len(top)} of {len(norms):,} training images "
        f"({percent(len(top) / len(norms))} of them) carry **{percent(share)}** of the summed "
        "gradient norm. At step 0, where every residual ‖p − y‖ is the same and only the "
        f"image norms differ, the {len(top)} largest carry {percent(baseline)}.")
    draw.thumbnails(
        ds.x_train[run.train_indices][top],
        [f"{ds.class_names[y[i]]}\nas {ds.class_names[pred[i]]}" for i in top],
        scale=scale, caption="true class, and the class predicted at this step",
        file_name=f"gradient-carriers-step-{t}.png")
    draw.download("Per-example CSV at this step",
                  lambda: report.examples_table(run, ds, t, "train").to_csv(index=False),
                  f"examples-train-step-{t}.csv", "text/csv")


play.part(page, "t", its, step_part)
if not present:
    st.subheader("Every class over training")
    rows = [s for s in one_two_five(run.iterations_done) if s in its]
    draw.weight_rows([(f"{s:,}", run.weights(s)) for s in rows], ds.class_names,
                     scale=max(2, scale - 1), file_name="weights-over-training.png")
    with st.expander("Play the evolution", expanded=False):
        gif = cached.evolution_gif(run)
        st.image(gif, caption="All classes at every stored snapshot, each frame on its own "
                 "symmetric scale.")
        draw.download("GIF", gif, "weights-evolution.gif", "image/gif")

