"""Weightscope home: what the app shows, where the data came from, presets, the current run."""

import streamlit as st

from core.settings import PRESETS, to_params
from ui import cached, draw, frame, resources, uploads

page = frame.current()
ds = page.ds

st.title("Weightscope")
# Collapsed: the paragraph below already says what the app shows; this is the background.
with st.expander("What am I looking at?", expanded=False):
    st.markdown(
        "A **weight image** is what a logistic regression learns for one class: one weight "
        "per pixel, drawn orange where the weight is positive (brightness there votes for the "
        "class) and purple where it is negative (votes against). The app is built around a "
        "question asked on CrossValidated, the statistics Q&A site (question 483072): trained "
        "on Fashion-MNIST, 28 x 28 pictures of ten kinds of clothing, shoes and bags, these "
        "images looked like the clothes after one iteration and like noise after many. Why? "
        "An answer there (answer 483079) gives three reasons; the pages test them with "
        "numbers from a run you can change in the sidebar. Presets that name \"the question\" "
        "or \"the answer\" refer to that thread: the asker's setup and the answer's argument.")
st.markdown(
    "Why do the weight images of a logistic regression trained on Fashion-MNIST look like "
    "clothes after one gradient step and like noise after many? Each page checks one part "
    "of the explanation with live numbers:\n"
    "1. **First step**: from zero weights, one step adds every image of a class and subtracts "
    "the others, so each weight image is an exact contrast of class-mean images.\n"
    "2. **Trajectory**: typical examples are soon predicted well and stop pulling; later "
    "updates come from hard, atypical examples, and the images get harder to read.\n"
    "3. **Overfitting**: the noise comes first, as gradient descent fits ever finer "
    "directions of the data; overfitting begins only where that stops paying, at the "
    "validation-loss minimum. L2 and early stopping keep the images smoother.\n"
    "4. **Hardest examples**: the examples that still carry loss, and what each pulls on.\n"
    "5. **Why the noise**: descent fits the directions of the images one after another, "
    "smooth ones first and ever finer ones later.\n"
    "6. **Where it heads**: on images a straight-line rule can sort, the weights turn toward "
    "the max-margin rule (the one with the widest gap around the hardest images), set by a "
    "few hard examples; the typical ones stop pulling."
)

cols = st.columns(len(frame.PAGES) - 1)
for col, spec in zip(cols, frame.PAGES[1:]):
    # The current settings travel along, so the page opens on the same run.
    col.page_link(frame.page_object(spec.path), label=spec.title, icon=spec.icon,
                  query_params=page.link_params(spec.path))

st.subheader("Presets")
st.caption("Each preset is a link: open it, bookmark it, or send it to a colleague.")
offered = resources.available_datasets()
for preset in PRESETS:
    if preset.settings.dataset not in offered:
        continue
    left, right = st.columns([1, 2])
    left.page_link(frame.page_object(preset.page), label=f"**{preset.title}**",
                   icon=":material/play_arrow:",
                   query_params=to_params(preset.settings,
                                          resources.dataset(preset.settings.dataset).fingerprint))
    right.markdown(preset.blurb)

st.subheader("The current run")
run = page.run(label="the current settings")
final = run.iterations_done
test_acc = run.snapshot_history["test_acc"][-1]
numbers = st.grid(4, min_column_width=150)  # wraps to fewer a row on a narrow window
numbers.metric("Test accuracy", f"{test_acc:.3f}", help="Official test split, final weights.")
numbers.metric("Validation accuracy",
               uploads.validation_value(run.snapshot_history['val_acc'][-1]),
               help="Images held out from the training split and never trained on; the "
                    "pages use them to find where overfitting begins.")
numbers.metric("L-BFGS iterations" if run.config.optimizer == "lbfgs" else "Gradient steps",
               f"{final:,}")
numbers.metric("Training time", f"{run.seconds:.1f} s")
uploads.no_validation(run, ds)
scale = draw.pick_scale(ds.image_shape)
st.markdown(f"**Weight images after step 1 and after step {final:,}**")
draw.weight_rows([("step 1", run.weights(1)), (f"step {final:,}", run.weights(final))],
                 ds.class_names, scale=scale, file_name=f"weights-step-1-and-{final}.png")
draw.download("One-page summary (HTML)", cached.summary_maker(run, ds, page.link()),
              "weightscope-summary.html", "text/html")
smoothness_help = (
    "The smoothness L bounds the curvature of the training loss on these images (how fast "
    "its slope can change). Gradient descent with any step size below 2/L, the stability "
    "limit, lowers the loss at every step; the auto step 1/L is a safe, conservative choice "
    "inside that range. The bound is loose, so somewhat larger steps often still work, "
    "without the guarantee.")
if run.config.optimizer == "lbfgs":
    st.caption(f"L-BFGS (scikit-learn's settings, float64) chooses its own steps. "
               f"{run.stop_reason} Smoothness L = {run.smoothness:.4g}.", help=smoothness_help)
else:
    st.caption(
        f"Learning rate {run.learning_rate:.4g} "
        f"({'auto = 1/L' if run.config.learning_rate == 'auto' else 'fixed'}); smoothness "
        f"L = {run.smoothness:.4g}, stability limit 2/L = {run.stability_limit:.4g}.",
        help=smoothness_help)

st.subheader("Your own data")
uploads.upload_messages()
uploads.upload_ui()

st.subheader("Data")
for name in resources.broken_folders():
    # The operator's folders are named, never located: the path and the reason are in the log.
    why = resources.why_unavailable(f"folder:{name}")
    st.warning(f"{draw.md(why[0].upper() + why[1:])}.", icon=":material/folder_off:")
st.markdown(
    f"{draw.md(ds.source)}  \n"
    f"{len(ds.y_train):,} training images (of which "
    f"{len(run.val_indices):,} are held out for validation and never trained on), "
    f"{len(ds.y_test):,} test images of {ds.image_shape[0]} x {ds.image_shape[1]} pixels, "
    f"{ds.n_classes} classes. Fingerprint `{ds.fingerprint}`."
)
