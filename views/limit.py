"""Where it heads: on separable images, unpenalised gradient descent turns toward the
max-margin solution, set by a few hard examples; the typical ones stop pulling."""

import numpy as np
import pandas as pd
import streamlit as st

from core import analysis, charts, report
from ui import cached, draw, frame

page = frame.current()
ds = page.ds
st.title("Where it heads: the max-margin limit")
run = page.run(label="the current settings")
cfg = run.config
with st.expander("What am I looking at?", expanded=True):
    st.markdown(
        "When a straight-line (linear) rule can sort every training image correctly, the "
        "loss can always be made a little smaller by making the weights bigger: it never "
        "reaches zero, and plain gradient descent never stops growing them. While they grow, "
        "they turn toward one fixed direction: the **max-margin** rule, the one that leaves "
        "the widest gap around the hardest images. Only those hardest images, the **support "
        "vectors**, decide it; every other image is already sorted with room to spare.\n\n"
        "So the typical images pull on the weights early and then fall silent, and the pull "
        "that is left comes from the few hard ones. The headline number below measures it.")
if cfg.l2 or cfg.l1:
    st.info("This run has a penalty: its weights stop growing, so it does not head to the "
            "max-margin limit. The limit of unpenalised descent on the same images is shown "
            "for comparison.", icon=":material/info:")
if cfg.optimizer == "lbfgs":
    st.info("L-BFGS is not gradient descent: the max-margin limit is proven for gradient "
            "descent, and L-BFGS runs do not record who pulls. The limit is shown for "
            "comparison.", icon=":material/info:")

mm = draw.background(cached.max_margin(run, ds), "the max-margin limit",
                     "about 10-20 s at 1,000 images")
if mm is None:
    frame.stop()
if not mm.determined:
    st.warning(mm.reason, icon=":material/warning:")
    frame.stop()
n = len(mm.support)
n_sv = int(mm.support.sum())
if not mm.separable:
    st.warning(
        f"These {n:,} training images cannot all be sorted by a linear rule (the smallest "
        f"margin is {mm.margin.min():.3f} < 1): there is no hard-margin limit, and gradient "
        "descent's weights converge instead of growing. What is shown is the soft-margin "
        "solution at C = 1,000.", icon=":material/warning:")

its = [int(t) for t in run.snapshot_iterations if t >= 1]
cos = analysis.direction_cosines(run, mm)
norms = analysis.parameter_norms(run)
edges, pulls = analysis.window_pulls(run)
shares = analysis.pull_shares(run, mm.support) if len(pulls) else np.zeros(0)

numbers = st.grid(4, min_column_width=170)
numbers.metric("Support vectors", f"{n_sv:,} of {n:,}",
               help="Training images with margin at most 1.001 under the max-margin rule: "
                    "the ones that decide it.")
numbers.metric(f"Cosine to the limit at step {its[-1]:,}", f"{cos[-1]:.2f}",
               help="Cosine of the angle between [W, b] at this step and the max-margin "
                    "[W, b]: 1 means the same direction. Close, not there: the approach is slow "
                    "(like 1 / log t).")
if len(shares) >= 2:
    first, last = shares[0], shares[-1]
    numbers.metric("Pull from non-support vectors",
                   f"{report.percent(first)} → {report.percent(last)}",
                   help=f"Share of the pull carried by the {n - n_sv:,} images that are not "
                        f"support vectors, in steps {edges[0] + 1:,}-{edges[1]:,} and in steps "
                        f"{edges[-2] + 1:,}-{edges[-1]:,}.")
numbers.metric("Solved in", f"{mm.seconds:.1f} s")

if len(shares) >= 2:
    st.markdown(
        f"**Typical images stop pulling.** The {n - n_sv:,} images that are not support "
        f"vectors ({(n - n_sv) / n:.0%} of the training set) carried "
        f"**{report.percent(shares[0])}** of the pull in steps {edges[0] + 1:,}-{edges[1]:,} "
        f"and **{report.percent(shares[-1])}** in steps "
        f"{edges[-2] + 1:,}-{edges[-1]:,}: the weights are left to the hard ones.")

t = page.choice(st.select_slider, "Step (stored snapshots, log-spaced)", "t", its[-1], its,
                format_func=lambda v: f"{v:,}", help="The weight images below show this step.")
st.subheader(f"The weights at step {t:,} and their limit")
draw.weight_rows([(f"step {t:,} (cosine {cos[run.slot(t)]:.2f})", run.weights(t)),
                  ("max-margin limit", mm.weights)], ds.class_names,
                 scale=draw.pick_scale(ds.image_shape, 56), file_name=f"limit-step-{t}.png",
                 caption="Each row on its own scale, ± the value in its label: "
                         "the limit is a direction, so only its shape matters.")

snaps = run.snapshot_iterations
items = [
    (charts.curves(charts.frame({"cosine to the limit": (snaps, cos)}),
                   y_title="cosine of [W, b] with the limit", selected=t,
                   title="Turning toward the limit"), "cosine-to-limit"),
    (charts.curves(charts.frame({"||[W, b]||": (snaps, norms)}), y_title="norm of the weights",
                   selected=t, title="Size of the weights (log t is a straight line here)"),
     "weight-norm"),
]
if len(shares):
    mids = np.sqrt(np.maximum(edges[:-1], 1) * edges[1:])
    items.append((charts.lines(charts.long_frame(mids, {"not support vectors": shares}),
                               x_title="step (window middle, log scale)",
                               y_title="share of the window's pull", log_x=True, points=True,
                               title="Who pulls: typical images fall silent"), "pull-shares"))
draw.chart_grid(items)

if len(shares):
    table = pd.DataFrame({
        "window_from": edges[:-1] + 1, "window_to": edges[1:],
        "share_not_support": shares,
        "share_support": 1 - shares,
    })
    st.dataframe(table, hide_index=True, column_config={
        "window_from": st.column_config.NumberColumn("from step", format="localized"),
        "window_to": st.column_config.NumberColumn("to step", format="localized"),
        "share_not_support": st.column_config.NumberColumn("not support vectors",
                                                           format="percent"),
        "share_support": st.column_config.NumberColumn("support vectors", format="percent"),
    })
    st.caption(
        "An image's pull in a window is the size of its summed residual p − e_y over the "
        "window's steps: its coefficient in the window's change of the weights (which is the "
        "sum of coefficient × image). The shares add these sizes; the images' contributions "
        "partly cancel, so this is not the size of a part of the weight change.")
    draw.download("Pull shares CSV", table.to_csv(index=False), "pull-shares.csv", "text/csv")

    st.subheader("Who pulled")
    x = ds.x_train[run.train_indices]
    y = ds.y_train[run.train_indices]
    groups = (
        (~mm.support, pulls[0], "early-pullers.png",
         f"Not support vectors that pulled hardest in steps {edges[0] + 1:,}-{edges[1]:,}, with "
         "their margin under the limit (above 1: sorted with room to spare, so they stop "
         "pulling)."),
        (mm.support, pulls[-1], "late-pullers.png",
         f"Support vectors that pulled hardest in steps {edges[-2] + 1:,}-{edges[-1]:,}, with "
         "their margin (1: on the edge of the gap): the hard images the limit is made of."),
    )
    for members, pull, file_name, caption in groups:
        top = np.argsort(-np.where(members, pull, -1.0))[:10]
        draw.thumbnails(x[top], [f"{ds.class_names[y[i]]}\n{mm.margin[i]:.2f}" for i in top],
                        scale=3, caption=caption, file_name=file_name)
