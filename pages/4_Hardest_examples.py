"""Hardest examples: what is still hard at a step, and what each example pulls on."""

import numpy as np
import streamlit as st

from core import charts, metrics, report, state

GALLERY = 30

page = state.setup_page("Hardest_examples", "Hardest examples",
                        view_keys=("t", "split", "cls", "order", "ex"))
ds = page.ds
st.title("The examples that are still hard")
run = page.run(label="the current settings")
K = ds.n_classes
its = [int(t) for t in run.snapshot_iterations if t >= 1]

c1, c2, c3, c4 = st.columns([3, 1, 2, 1])
t = c1.select_slider("Gradient step", options=its, format_func=lambda v: f"{v:,}",
                     key=page.view_key("t", its[-1], choices=its))
split = c2.radio("Split", ["train", "val"], horizontal=True,
                 format_func={"train": "train", "val": "validation"}.get,
                 key=page.view_key("split", "train", choices=("train", "val"), cast=str))
classes = [-1] + list(range(K))
cls = c3.selectbox("Class", classes, key=page.view_key("cls", -1, choices=classes),
                   format_func=lambda k: "all classes" if k < 0 else ds.class_names[k])
order = c4.radio("Show", ["hardest", "easiest"],
                 key=page.view_key("order", "hardest", choices=("hardest", "easiest"), cast=str))
page.set_view(t=t, split=split, cls=cls, order=order)

idx = run.train_indices if split == "train" else run.val_indices
labels = ds.y_train[idx]
loss = run.remaining_loss(t, split)
p_true = run.p_true(t, split)
pred = run.predictions(t, split)
pool = np.flatnonzero(labels == cls) if cls >= 0 else np.arange(len(idx))
ranked = pool[np.argsort(-loss[pool] if order == "hardest" else loss[pool], kind="stable")]
shown = ranked[:GALLERY]

st.markdown(
    f"Ranked by remaining loss −log p(true class) at step {t:,}, among {len(pool):,} "
    f"{'training' if split == 'train' else 'validation'} images"
    f"{'' if cls < 0 else ' of class ' + state.md(ds.class_names[cls])}. Mean loss there: "
    f"{loss[pool].mean():.3f}; misclassified: {(pred[pool] != labels[pool]).mean():.1%}.")
scale = state.pick_scale(ds.image_shape)
state.thumbnails(
    ds.x_train[idx][shown],
    [f"{ds.class_names[labels[i]]}\nas {ds.class_names[pred[i]]}\np={p_true[i]:.3f}"
     for i in shown],
    scale=scale, caption="true class, predicted class, p(true class)",
    file_name=f"{order}-{split}-step-{t}.png")
state.download("Ranked CSV", lambda: report.examples_table(run, ds, t, split).to_csv(index=False),
               f"examples-{split}-step-{t}.csv", "text/csv")

st.subheader("One example")
choice = st.selectbox(
    "Example", list(range(len(shown))),
    key=page.view_key("ex", 0, choices=range(len(shown))),
    format_func=lambda r: f"#{r + 1}: {ds.class_names[labels[shown[r]]]} predicted as "
                          f"{ds.class_names[pred[shown[r]]]}, loss {loss[shown[r]]:.3f}")
page.set_view(ex=choice)
i = int(shown[choice])
image = ds.x_train[idx][i]
x = image.reshape(-1) / 255.0
y_i = int(labels[i])
p = metrics.example_probabilities(run.weights(t), run.bias(t), x[None], run.config.model)[0]
contribution = metrics.example_gradient_image(p, y_i, x).reshape(K, *ds.image_shape)
rows = [y_i] + ([int(pred[i])] if pred[i] != y_i else [])

left, right = st.columns([1, 2])
with left:
    state.thumbnails(image[None], [ds.class_names[y_i]], ncols=1, scale=scale + 1,
                     file_name=f"example-{int(idx[i])}.png")
    if split == "train":
        learned = int(run.learned_at[i])
        st.markdown(
            f"- learned from step: **{learned:,}**" if learned >= 0 else
            "- learned from step: **never** (wrong at the end)")
        st.markdown(f"- forgotten (correct, then wrong): **{int(run.forgetting_events[i])}** times")
    st.markdown(f"- p(true) at step {t:,}: **{p[y_i]:.3f}**; gradient norm ‖p − y‖‖x‖ = "
                f"**{np.linalg.norm(p - np.eye(K)[y_i]) * np.linalg.norm(x):.3f}**")
with right:
    pairs = np.stack([np.stack([run.weights(t)[k], contribution[k]]) for k in rows])
    vmax_w = np.abs(run.weights(t)[rows]).max()
    vmax_c = np.abs(contribution[rows]).max()
    both = np.stack([pairs[:, 0] / max(vmax_w, 1e-30), pairs[:, 1] / max(vmax_c, 1e-30)], axis=1)
    state.weight_images(
        both, vmax=1.0, col_labels=["weight image", "this example's pull"],
        row_labels=[ds.class_names[k] for k in rows], scale=scale + 1, legend=False,
        file_name=f"example-{int(idx[i])}-pull-step-{t}.png",
        caption=f"Left: the class's weight image at step {t:,}. Right: this example's descent "
                "contribution −(p − y)x to it (true class: (1 − p) x, pulls towards the image; "
                "predicted class: −p x, pushes away). Each column scaled to its own maximum.")
curve = charts.frame({"loss of this example": (run.snapshot_iterations,
                                               run.remaining_loss_curve(i, split))})
state.chart(charts.curves(curve, y_title="−log p(true) (nats)", selected=t,
                          title="Its loss over training"), f"example-{int(idx[i])}-loss")
