"""Numbers that describe weight images and examples over training.

All functions take plain arrays; :func:`trajectory_metrics` evaluates them at
every stored snapshot of a :class:`core.run.Run`.
"""

from __future__ import annotations

import numpy as np


def class_means(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean image of each class, (K, d) in float64, from images ``x`` (n, d).

    A class with no images gets a zero image.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, y, x)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


def class_contrasts(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """``mu_k - mu`` (K, d): each class mean minus the mean of all images.

    The shape of the softmax step-1 weight image on balanced data, and the
    reference for how typical an example is of its class (for both models:
    one-vs-rest's step-1 image is dominated by the other classes' mean).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    return class_means(x, y, n_classes) - x.mean(axis=0)


def first_step_closed_form(
    x: np.ndarray, y: np.ndarray, n_classes: int, learning_rate: float, model: str
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (K, d) and bias (K,) after one gradient step from zero, in closed form.

    With mean loss over n examples and step ``a``:

    - softmax: ``W_k = a ((n_k / n) mu_k - mu / K)``, ``b_k = a (n_k / n - 1 / K)``
    - ovr:     ``W_k = (a / n) (1/2) (sum over class k - sum over the others)``,
      ``b_k = (a / n) (1/2) (n_k - (n - n_k))``

    where ``mu_k`` is the mean image of class k and ``mu`` the mean of all n.
    Computed in float64.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    n, K = len(y), n_classes
    counts = np.bincount(y, minlength=K).astype(np.float64)
    sums = np.zeros((K, x.shape[1]))
    np.add.at(sums, y, x)
    total = x.sum(axis=0)
    if model == "softmax":
        W = learning_rate * (sums / n - total / (n * K))
        b = learning_rate * (counts / n - 1.0 / K)
    elif model == "ovr":
        W = (learning_rate / n) * 0.5 * (sums - (total - sums))
        b = (learning_rate / n) * 0.5 * (counts - (n - counts))
    else:
        raise ValueError(f"Unknown model {model!r}; expected 'softmax' or 'ovr'.")
    return W, b


def ovr_first_step_parts(means: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-vs-rest step-1 weights for a unit step, split into a shared and a class part.

    ``w_k = (n_k / n) (mu_k - mu) - (1/2 - n_k / n) mu``: the first term is the class's
    contrast with the mean image, the second minus the mean image ``mu`` of all n,
    nearly the same for every class (with 10 balanced classes, ``0.1 (mu_k - mu) - 0.4
    mu``). Their sum is :func:`first_step_closed_form` for ``model="ovr"`` and ``a = 1``.

    Parameters
    ----------
    means : ndarray (K, d)
        Class mean images (:func:`class_means`).
    counts : ndarray (K,)
        Training images per class.

    Returns
    -------
    specific, shared : ndarray (K, d)
        ``(n_k / n) (mu_k - mu)`` and ``-(1/2 - n_k / n) mu``.
    """
    means = np.asarray(means, dtype=np.float64)
    share = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    mu = share @ means
    return share[:, None] * (means - mu), -(0.5 - share)[:, None] * mu


def similarity(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of each image with its reference, (K,).

    ``images`` and ``reference`` are (K, ...) with the same shape. A constant
    image has no defined correlation and gets 0.
    """
    a = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    a = a - a.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
    num = np.einsum("ij,ij->i", a, r)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


def roughness(images: np.ndarray) -> np.ndarray:
    """Normalised total variation of each image, (K,).

    ``sum |horizontal differences| + sum |vertical differences|`` divided by
    ``sum |pixel|``: about 0.5 for a smooth clothing silhouette on 28 x 28,
    growing as neighbouring pixels disagree. An all-zero image gets 0.
    ``images`` is (K, H, W).
    """
    w = np.asarray(images, dtype=np.float64)
    tv = np.abs(np.diff(w, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(w, axis=2)).sum(axis=(1, 2))
    l1 = np.abs(w).sum(axis=(1, 2))
    return np.divide(tv, l1, out=np.zeros_like(tv), where=l1 > 0)


def top_share(norms: np.ndarray, k: int) -> float:
    """Share of ``norms.sum()`` carried by the ``k`` largest of ``norms`` (n,); NaN if the
    sum is not positive."""
    norms = np.asarray(norms, dtype=np.float64)
    total = norms.sum()
    if total <= 0:
        return float("nan")
    k = min(max(1, int(k)), len(norms))
    return float(np.partition(norms, len(norms) - k)[-k:].sum() / total)


def gradient_concentration(norms: np.ndarray, top: float = 0.1) -> float:
    """Share of the summed per-example gradient norm carried by the top ``top`` fraction.

    ``norms`` (n,) are ``||p_i - e_{y_i}|| ||x_i||``. Equal norms would give ``top``,
    but they are never equal: at zero weights every residual ``||p_i - e_{y_i}||`` is
    the same, so the share there measures how the image norms ``||x_i||`` differ. That
    step-0 value is the baseline; a gradient driven by a few hard examples gives a value
    near 1.
    """
    return top_share(norms, int(round(top * len(norms))))


def top_gradient_examples(norms: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest per-example gradient norms, largest first."""
    k = min(k, len(norms))
    idx = np.argpartition(-norms, k - 1)[:k]
    return idx[np.argsort(-norms[idx], kind="stable")]


def never_learned(learned_at: np.ndarray, forgetting_events: np.ndarray) -> np.ndarray:
    """Which training examples (n,) were wrong at every iteration from 1 on (bool).

    ``learned_at`` is -1 for an example wrong at the end (:class:`core.run.Run`). One
    that was right at some iteration and wrong at the end went from right to wrong in
    between, so it has at least one forgetting event; wrong at the end with none means
    it was never right.
    """
    return (np.asarray(learned_at) < 0) & (np.asarray(forgetting_events) == 0)


def forgetting_counts(learned_at: np.ndarray, forgetting_events: np.ndarray) -> np.ndarray:
    """Forgetting events per training example (n,) as in Toneva et al. (2019), float64.

    The run's count of right-to-wrong transitions, except that an example never learned
    (:func:`never_learned`) counts as forgotten infinitely often (``inf``): it is the
    least memorable of all, not the most stable.
    """
    counts = np.asarray(forgetting_events, dtype=np.float64).copy()
    counts[never_learned(learned_at, forgetting_events)] = np.inf
    return counts


def roughness_rise(run) -> dict:
    """How much of the roughness rise of ``run`` came before its validation minimum.

    Roughness is :func:`roughness` averaged over classes, at the first stored step
    ``first`` (1 as a rule), at :meth:`~core.run.Run.best_iteration` ``best`` (the
    validation-loss minimum) and at the last step ``last``; all three are snapshots.

    Returns
    -------
    dict
        ``first``, ``best``, ``last`` (steps); ``at_first``, ``at_best``, ``at_last``
        (roughness there); ``share``: ``(at_best - at_first) / (at_last - at_first)``,
        the fraction of the rise reached by the minimum (NaN when roughness did not
        rise); ``overfits``: whether validation loss has its minimum before the last
        snapshot (False without validation data).
    """
    its = run.snapshot_iterations
    stepped = its[its >= 1]
    first = int(stepped[0] if len(stepped) else its[0])
    best, last = int(run.best_iteration()), int(its[-1])
    at = {t: float(roughness(run.weights(t)).mean()) for t in {first, best, last}}
    rise = at[last] - at[first]
    val = np.asarray(run.snapshot_history["val_loss"], dtype=np.float64)
    return {
        "first": first, "best": best, "last": last,
        "at_first": at[first], "at_best": at[best], "at_last": at[last],
        "share": (at[best] - at[first]) / rise if rise > 0 else float("nan"),
        "overfits": bool(np.isfinite(val).any()) and best < last,
    }


def trajectory_metrics(run) -> dict[str, np.ndarray]:
    """Per-snapshot metrics of a :class:`core.run.Run` with ``S`` snapshots and ``K`` classes.

    Returns
    -------
    dict
        ``iteration`` (S,); per class (S, K): ``similarity`` to the iteration-1
        image (the last one if iteration 1 is not stored) and ``roughness``, NaN
        at iteration 0; averaged over classes (S,): ``similarity_mean``,
        ``roughness_mean``; ``coef_range`` (S,) over all classes; ``concentration``
        (S,): share of the gradient norm carried by the top 10 % of training examples.
    """
    its = run.snapshot_iterations
    ref_t = 1 if len(its) > 1 and its[1] == 1 else int(its[-1])
    reference = run.weights(ref_t)
    sim, rough, conc = [], [], []
    for t in its:
        w = run.weights(int(t))
        sim.append(similarity(w, reference))
        rough.append(roughness(w))
        conc.append(gradient_concentration(run.grad_norms(int(t))))
    sim, rough = np.array(sim), np.array(rough)
    if its[0] == 0:
        # Zero weights have no shape: similarity and roughness are undefined there.
        sim[0], rough[0] = np.nan, np.nan
    return {
        "iteration": its.copy(),
        "similarity": sim,
        "roughness": rough,
        "similarity_mean": sim.mean(axis=1),
        "roughness_mean": rough.mean(axis=1),
        "coef_range": run.snapshot_history["coef_range"].copy(),
        "concentration": np.array(conc),
    }


def example_probabilities(weights: np.ndarray, bias: np.ndarray, x: np.ndarray,
                          model: str) -> np.ndarray:
    """Class probabilities (m, K) of images ``x`` (m, d) under ``weights`` (K, d), ``bias`` (K,).

    Softmax probabilities, or the per-class sigmoids of one-vs-rest.
    """
    z = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ \
        np.asarray(weights, dtype=np.float64).reshape(len(bias), -1).T + bias
    if model == "softmax":
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return np.exp(-np.logaddexp(0.0, -z))


def example_gradient_image(p: np.ndarray, label: int, image: np.ndarray) -> np.ndarray:
    """The descent contribution ``-(p - e_y) x`` of one example to every class image, (K, d).

    Row ``y`` is ``(1 - p_y) x`` (pulls the true class towards the image), every
    other row ``-p_k x`` (pushes the classes it is confused with away).
    """
    residual = np.asarray(p, dtype=np.float64).copy()
    residual[label] -= 1.0
    return -residual[:, None] * np.asarray(image, dtype=np.float64).reshape(1, -1)
