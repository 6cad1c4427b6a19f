"""Hardest examples: what is still hard at a step, and what each example pulls on."""

import numpy as np
import streamlit as st

from core import charts, metrics, report
from ui import draw, frame, uploads

GALLERY = 30

page = frame.current()
ds = page.ds
st.title("Which examples still carry loss")
with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "Images ranked by the **loss** they still carry at the chosen step: −log p(true "
        "class), near 0 when the model gives the right class a high probability and large "
        "when it gives it a low one. Each training image pulls on the weights with its error "
        "p − y (predicted probabilities minus the true label) times the image itself, so "
        "once the typical images are classified with room to spare, the hard, unusual ones "
        "shown here (a sandal that looks like a sneaker) are what still moves the weights. "
        "Pick one below to see its loss over training, when it was first classified right, "
        "how often it was forgotten (right, then wrong again), and what it adds to its "
        "class's weight image. The validation split shows held-out images instead: the model "
        "never trains on them, so they do not move the weights.")
run = page.run(label="the current settings")
K = ds.n_classes
its = [int(t) for t in run.snapshot_iterations if t >= 1]

step_word = "Iteration" if run.config.optimizer == "lbfgs" else "Gradient step"
t = page.choice(st.select_slider, step_word, "t", its[-1], its, format_func=lambda v: f"{v:,}")
# Three cells that wrap to fewer a row rather than break "validation" mid-word (900 px).
controls = st.grid(3, min_column_width=200)
split = page.choice(controls.radio, "Split", "split", "train", ["train", "val"], cast=str,
                    horizontal=True, format_func={"train": "train", "val": "validation"}.get,
                    help="validation: images held out from the training split, never trained "
                         "on.")
cls = page.choice(controls.selectbox, "Class", "cls", -1, [-1] + list(range(K)),
                  format_func=lambda k: "all classes" if k < 0 else ds.class_names[k])
order = page.choice(controls.radio, "Show", "order", "hardest", ["hardest", "easiest"],
                    cast=str)

if split == "val" and uploads.no_validation(run, ds):
    frame.stop()
idx = run.train_indices if split == "train" else run.val_indices
labels = ds.y_train[idx]
loss = run.neg_log_p_true(t, split)
p_true = run.p_true(t, split)
pred = run.predictions(t, split)
pool = np.flatnonzero(labels == cls) if cls >= 0 else np.arange(len(idx))
ranked = pool[np.argsort(-loss[pool] if order == "hardest" else loss[pool], kind="stable")]
shown = ranked[:GALLERY]
if not len(shown):
    st.info(f"No {'training' if split == 'train' else 'validation'} images of class "
            f"{draw.md(ds.class_names[cls])} in this run; choose another class or split.")
    frame.stop()

st.markdown(
    f"Ranked by remaining loss −log p(true class) at step {t:,}, in nats (natural-log "
    f"units: 0 for a sure right answer, log {K} ≈ {np.log(K):.2f} for a uniform guess over "
    f"the {K} classes), among {len(pool):,} "
    f"{'training' if split == 'train' else 'validation'} images"
    f"{'' if cls < 0 else ' of class ' + draw.md(ds.class_names[cls])}. Mean loss there: "
    f"{loss[pool].mean():.3f}; misclassified: {(pred[pool] != labels[pool]).mean():.1%}.")
scale = draw.pick_scale(ds.image_shape)
draw.thumbnails(
    ds.x_train[idx][shown],
    [f"{ds.class_names[labels[i]]}\nas {ds.class_names[pred[i]]}\n"
     f"p={draw.probability(p_true[i])}"
     for i in shown],
    scale=scale, caption="true class, predicted class, p(true class)",
    file_name=f"{order}-{split}-step-{t}.png")
draw.download("Ranked CSV", lambda: report.examples_table(run, ds, t, split).to_csv(index=False),
              f"examples-{split}-step-{t}.csv", "text/csv")

st.subheader("One example")
never = metrics.never_learned(run.learned_at, run.forgetting_events)
unforgotten = int(((run.forgetting_events == 0) & ~never).sum())
st.markdown(
    f"Full-batch training rarely forgets: {unforgotten:,} of {len(never):,} training images "
    f"were never forgotten once learned (0 events), {int(never.sum()):,} were never learned "
    f"and {len(never) - unforgotten - int(never.sum()):,} were forgotten at least once. As in "
    "Toneva et al. (2019), an image never learned counts as forgotten infinitely often (∞).")
choice = page.choice(
    st.selectbox, "Example", "ex", 0, range(len(shown)),
    format_func=lambda r: f"#{r + 1}: {ds.class_names[labels[shown[r]]]} predicted as "
                          f"{ds.class_names[pred[shown[r]]]}, loss {loss[shown[r]]:.3f}")
i = int(shown[choice])
image = ds.x_train[idx][i]
x = image.reshape(-1) / 255.0
y_i = int(labels[i])
p = metrics.example_probabilities(run.weights(t), run.bias(t), x[None], run.config.model)[0]
contribution = metrics.example_gradient_image(p, y_i, x).reshape(K, *ds.image_shape)
rows = [y_i] + ([int(pred[i])] if pred[i] != y_i else [])

left, right = st.columns([1, 2])
with left:
    draw.thumbnails(image[None], [ds.class_names[y_i]], ncols=1, scale=scale + 1,
                    file_name=f"example-{int(idx[i])}.png")
    if split == "train":
        learned, forgotten = int(run.learned_at[i]), int(run.forgetting_events[i])
        if never[i]:
            st.markdown("- learned: **never** (wrong at every step)\n"
                        "- forgotten (correct, then wrong): **∞** (never learned)")
        else:
            st.markdown(
                (f"- learned from step: **{learned:,}**" if learned >= 0 else
                 "- learned: **not at the end** (right at times, wrong at the last step)")
                + f"\n- forgotten (correct, then wrong): **{forgotten}** times")
    st.markdown(f"- p(true) at step {t:,}: **{draw.probability(p[y_i])}**; "
                "gradient norm ‖p − y‖‖x‖ = "
                f"**{np.linalg.norm(p - np.eye(K)[y_i]) * np.linalg.norm(x):.3f}**")
with right:
    pairs = np.stack([np.stack([run.weights(t)[k], contribution[k]]) for k in rows])
    vmax_w = np.abs(run.weights(t)[rows]).max()
    vmax_c = np.abs(contribution[rows]).max()
    both = np.stack([pairs[:, 0] / max(vmax_w, 1e-30), pairs[:, 1] / max(vmax_c, 1e-30)], axis=1)
    draw.weight_images(
        both, vmax=1.0, col_labels=["weight image", "this example's pull"],
        row_labels=[ds.class_names[k] for k in rows], scale=scale + 1, legend=False,
        file_name=f"example-{int(idx[i])}-pull-step-{t}.png",
        caption=f"Left: the class's weight image at step {t:,}. Right: this example's descent "
                "contribution −(p − y)x to it (true class: (1 − p) x, pulls towards the image; "
                "predicted class: −p x, pushes away). Each column scaled to its own maximum.")
curve = charts.frame({"loss of this example": (run.snapshot_iterations,
                                               run.neg_log_p_true_curve(i, split))})
draw.chart(charts.curves(curve, y_title="−log p(true) (nats)", selected=t,
                         title="Its loss over training"), f"example-{int(idx[i])}-loss")
