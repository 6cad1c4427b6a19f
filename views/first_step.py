"""First step: each weight image after one step is a closed-form contrast of class means
(for one-vs-rest, mostly minus the mean image, plus a class contrast)."""

import numpy as np
import streamlit as st

from core import analysis, metrics
from ui import cached, draw, frame

page = frame.current()
ds = page.ds
cfg = page.config
st.title("The first one-vs-rest step is minus the average image, plus a class contrast"
         if cfg.model == "ovr" and ds.n_classes > 2 else
         "The first gradient step is an average image")

run = page.run(label="the current settings")
lbfgs = cfg.optimizer == "lbfgs"
K = ds.n_classes
y = ds.y_train[run.train_indices]
fs = cached.first_step(run, ds)
counts, means = fs["counts"], fs["means"]
got = run.weights(1).reshape(K, -1).astype(np.float64)
# L-BFGS's first iterate is the negative gradient at zero times a line-search step: the
# closed form up to one scale factor, fitted by least squares (weights and bias).
a = analysis.first_step_scale(run, fs)
if lbfgs:
    exact = run  # already float64
else:
    # The same step in float64, at the very same step size, isolates rounding from the algebra.
    exact = page.run(cfg.replace(iterations=1, dtype="float64", learning_rate=a),
                     label="one float64 step")
W1, b1 = a * fs["unit_W"], a * fs["unit_b"]
got64 = exact.weights(1).reshape(K, -1)
diff32 = np.abs(got - W1).max(axis=1)
diff64 = np.abs(got64 - W1).max(axis=1)

with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "Each small picture is a **weight image**: one weight per pixel for one class. A "
        "class's score for an image adds up weight × brightness over the pixels, so orange "
        "(positive) pixels vote for the class where the image is bright and purple "
        "(negative) ones vote against. Training starts from all-zero weights, where the "
        "model gives every class the same chance. "
        + ("With **one-vs-rest** every class has its own yes/no classifier, so the first "
           "step adds the class's own images and subtracts all the others. The others are "
           f"about {K - 1} in {K} images, so each weight image is minus the average image, "
           "the same for every class, plus a class contrast: the class's average minus the "
           "average of all images (row \"mean - all\"). "
           if cfg.model == "ovr" else
           "The first step adds each class's images to its weight image and subtracts a "
           "share of all images: on balanced data, the class's average image minus the "
           "average of all images, what sets the class apart. That is why the weight images "
           "look like the objects after one step. ")
        + ("L-BFGS's first iteration is the same picture, scaled by a step it picks itself. "
           if lbfgs else "")
        + f"The formula below and the trained weights differ by at most {diff32.max():.0e}, "
          f"against weights up to {np.abs(W1).max():.0e}.")

if cfg.model == "softmax":
    st.latex(r"p_{ik} = \frac{e^{w_k^\top x_i + b_k}}{\sum_j e^{w_j^\top x_i + b_j}},\qquad "
             r"\nabla_{w_k} = \frac{1}{n}\sum_i (p_{ik} - y_{ik})\,x_i")
    st.latex(r"W = 0 \Rightarrow p_{ik} = \tfrac{1}{K} \Rightarrow "
             r"w_k^{(1)} = a\Big(\frac{n_k}{n}\,\mu_k - \frac{1}{K}\,\mu\Big),\quad "
             r"b_k^{(1)} = a\Big(\frac{n_k}{n} - \frac{1}{K}\Big)")
    st.markdown(
        f"With step a = {a:.4g}, K = {K} and class shares n_k/n "
        + (f"all {counts[0] / len(y):.3f}" if counts.min() == counts.max() else
           f"from {counts.min() / len(y):.3f} to {counts.max() / len(y):.3f}")
        + ": on balanced data this is "
        r"$\frac{a}{K}(\mu_k - \mu)$, the class mean minus the mean of all images.")
else:
    # The footnote's misplaced y is corrected once, in the per-example formula below.
    st.latex(r"\nabla_{w_k} = \frac{1}{n}\sum_i \big(\sigma(w_k^\top x_i + b_k) - y_{ik}\big)\,x_i")
    st.latex(r"W = 0 \Rightarrow \sigma(0) = \tfrac12 \Rightarrow "
             r"w_k^{(1)} = \frac{a}{n}\cdot\frac12\Big(\sum_{i:\,y_i = k} x_i - "
             r"\sum_{i:\,y_i \neq k} x_i\Big)")
    specific, shared = metrics.ovr_first_step_parts(means, counts)
    ratio = np.linalg.norm(shared, axis=1) / np.linalg.norm(specific, axis=1)
    mu = counts @ means / counts.sum()  # the mean of all training images
    to_mean = metrics.similarity(W1, np.broadcast_to(-mu, W1.shape))
    to_class = metrics.similarity(W1, means)
    st.markdown(f"Every image of class k is added and every other image subtracted, scaled by "
                f"a / 2n with a = {a:.4g} and n = {len(y):,}. Written with the mean image μ:")
    st.latex(r"w_k^{(1)} = a\Big(\frac{n_k}{n}\,(\mu_k - \mu) - "
             r"\big(\tfrac12 - \tfrac{n_k}{n}\big)\,\mu\Big)")
    st.markdown(
        (f"The second term, minus the mean image, is {ratio.min():.1f} to {ratio.max():.1f} "
         "times the first in size, so every class gets nearly the same image. "
         if ratio.min() > 1 else "")
        + f"Each step-1 image correlates {to_mean.min():.2f} to {to_mean.max():.2f} with "
        f"minus the mean image, and {to_class.min():.2f} to {to_class.max():.2f} with its own "
        "class mean. The class-specific part is the first term: the class mean minus the "
        "mean of all images, the row \"mean - all\" below.")
st.latex(r"\text{per example: } \nabla_\theta = \big(\sigma(\theta^\top x) - y\big)\,x"
         r"\qquad\text{not } \sigma(\theta^\top x - y)\,x")
st.caption("In both models the gradient of one example is (p - y) x: its predicted probability "
           "minus its label, times the image. The sigmoid (or softmax) is applied to the logit "
           "(the score θᵀx), then y is subtracted. The CrossValidated answer this app checks "
           "(question 483072) writes σ(θᵀx − y) x in a footnote, with y misplaced inside.")

scale = draw.pick_scale(ds.image_shape)
mean_images = np.clip(means * 255, 0, 255).astype(np.uint8).reshape(K, *ds.image_shape)
rows = [("trained", run.weights(1)), ("closed form", W1.reshape(K, *ds.image_shape))]
if cfg.model == "ovr":
    rows.append(("mean - all", fs["contrasts"].reshape(K, *ds.image_shape)))
draw.weight_rows(
    rows, ds.class_names, scale=scale, extra=[("class mean", mean_images)],
    caption="Row 1: the weights after one gradient step of this run. Row 2: the formula "
            "above, from the class sums alone. "
            + ("Row 3: each class mean minus the mean of all images, the class-specific part "
               "of the step. Row 4: " if cfg.model == "ovr" else "Row 3: ")
            + "the class-mean images. Orange positive, purple negative, white zero.",
    file_name="first-step.png")

st.subheader("The numerical proof")
st.markdown(
    (f"L-BFGS's first iterate is the negative gradient at zero times a line-search step: "
     f"fitted step a = {a:.4g}. " if lbfgs else "") +
    f"Largest absolute difference between the trained step-1 weights and the closed form: "
    f"**{diff32.max():.2e}** in this run ({cfg.dtype})"
    + ("" if cfg.dtype == "float64" else
       f", **{diff64.max():.2e}** for the same step in float64")
    + f", against weights up to {np.abs(W1).max():.2e}. Bias: "
    f"{np.abs(run.bias(1) - b1).max():.2e}.")
proof = {"class": list(ds.class_names), "images": counts.tolist(),
         f"max |trained - closed form| ({cfg.dtype})": [f"{v:.2e}" for v in diff32]}
if cfg.dtype != "float64":
    proof["max |trained - closed form| (float64)"] = [f"{v:.2e}" for v in diff64]
proof["max |weight|"] = [f"{v:.2e}" for v in np.abs(W1).max(axis=1)]
proof["corr(step 1, class mean)"] = [f"{v:.3f}" for v in metrics.similarity(W1, means)]
st.dataframe(proof, hide_index=True)

st.subheader("Typical examples")
cls = page.choice(st.selectbox, "Class", "cls", 0, range(K),
                  format_func=lambda k: ds.class_names[k])
members = np.flatnonzero(y == cls)
template = fs["contrasts"][cls]
x = ds.x_train[run.train_indices][members].reshape(len(members), -1) / 255.0
corr = metrics.similarity(x, np.broadcast_to(template, x.shape))
order = np.argsort(-corr, kind="stable")
images = ds.x_train[run.train_indices][members]
st.markdown(
    f"The {draw.md(ds.class_names[cls])} images of the training subset that correlate most and "
    "least "
    f"with the class's contrast image: its mean minus the mean of all images (the softmax "
    f"step-1 image on balanced data). Typical images match it; the least typical ones are "
    f"the examples the later steps will have to work hardest on.")
left, right = st.columns([1, 4])
with left:
    draw.weight_images(template.reshape(1, *ds.image_shape), col_labels=["mean - all"],
                       scale=scale + 1, legend=False, file_name=f"contrast-class-{cls}.png")
with right:
    draw.thumbnails(images[order[:10]], [f"r={corr[i]:.2f}" for i in order[:10]],
                    scale=max(2, scale - 1),
                    caption="Most typical (r: correlation with the image on the left)",
                    file_name=f"most-typical-class-{cls}.png")
    draw.thumbnails(images[order[::-1][:10]], [f"r={corr[i]:.2f}" for i in order[::-1][:10]],
                    scale=max(2, scale - 1), caption="Least typical",
                    file_name=f"least-typical-class-{cls}.png")
