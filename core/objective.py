"""The objective the trainer minimises, and the passes that evaluate it.

Shapes, stated once: ``n`` images of ``d = H * W`` pixels scaled to [0, 1],
``K`` classes. ``X`` is (n, d), labels ``y`` are (n,), the weights ``W`` are
(K, d) and the bias ``b`` is (K,). Logits are ``Z = X W^T + b``, (n, K).

Objective (mean over the n examples, intercept never penalised)::

    F(W, b) = (1/n) sum_i loss_i(W, b) + (l2 / 2) ||W||_F^2 + l1 ||W||_1

    softmax: loss_i = -log p_{i, y_i},        p_i = softmax(z_i)
    ovr:     loss_i = sum_k BCE(sigmoid(z_ik), [y_i == k])

Both share one gradient form, ``G = (P - Y) / n`` with ``P`` (n, K) the
probabilities (softmax or per-class sigmoid) and ``Y`` one-hot labels::

    grad_W = G^T X + l2 W,    grad_b = sum_i G_i

The L1 term has no gradient; the trainer handles it by a proximal step. The
loss is L-smooth with ``L = c * lambda_max([X 1]^T [X 1] / n) + l2``,
``c = 1/2`` for softmax and ``1/4`` for one-vs-rest (:func:`smoothness`).

A *pass* evaluates the loss, and optionally its gradient and per-example
records, over one fixed set of rows in a single forward computation: either
plain numpy matrix products (:class:`NumpyPass`) or the fused compiled kernel
of :mod:`core.kernels` (:class:`KernelPass`). Both return a :class:`PassOut`.
"""

from __future__ import annotations

import numpy as np

from core import kernels

#: Floor of the shifted logits before ``exp``, per dtype character (see :class:`Forward`).
_EXP_FLOOR = {"f": -80.0, "d": -700.0}


class Forward:
    """One forward pass of a model: per-example loss, probabilities, predictions.

    Called with ``logits`` (m, K), which it overwrites, ``y`` (m,) and
    ``rows = arange(m)``; returns ``loss`` (m,), ``probs`` (m, K) (the
    overwritten logits) and ``pred`` (m,).
    """

    def __init__(self, model: str):
        self.model = model

    def __call__(self, logits: np.ndarray, y: np.ndarray, rows: np.ndarray):
        if self.model == "softmax":
            pred = logits.argmax(axis=1)
            logits -= logits.max(axis=1, keepdims=True)
            z_true = logits[rows, y]
            # exp of very negative logits gives subnormal floats, which make the next
            # matrix product about ten times slower; probabilities below e^-80 (float32)
            # or e^-700 (float64) are raised to that floor, a change far below rounding.
            np.maximum(logits, _EXP_FLOOR[logits.dtype.char], out=logits)
            np.exp(logits, out=logits)
            total = logits.sum(axis=1)
            loss = np.log(total) - z_true
            logits /= total[:, None]
            return loss, logits, pred
        pred = logits.argmax(axis=1)
        # BCE summed over classes: softplus(z) - [k == y] z, written stably.
        z_true = logits[rows, y].copy()
        loss = np.logaddexp(0.0, logits).sum(axis=1) - z_true
        # sigmoid(z) = exp(-softplus(-z)), finite for every z; floored like softmax.
        probs = np.exp(np.maximum(-np.logaddexp(0.0, -logits), _EXP_FLOOR[logits.dtype.char]),
                       out=logits)
        return loss, probs, pred


class PassOut:
    """What one pass over m rows yields (see :meth:`NumpyPass.run`).

    ``loss`` (m,) per-example loss, ``pred`` (m,) predicted class; with records,
    ``p_true`` (m,) probability of the true class and ``resid`` (m,) ``||p - e_y||``;
    with the gradient, ``grad_W`` (K, d) and ``grad_b`` (K,) of the *summed* loss.
    """

    __slots__ = ("loss", "pred", "p_true", "resid", "grad_W", "grad_b")

    def __init__(self, loss, pred, p_true=None, resid=None, grad_W=None, grad_b=None):
        self.loss, self.pred, self.p_true, self.resid = loss, pred, p_true, resid
        self.grad_W, self.grad_b = grad_W, grad_b


class NumpyPass:
    """Rows held as floats in [0, 1]; logits and gradient by two matrix products.

    Parameters
    ----------
    X8 : (m, d) uint8
    y : (m,) int
    n_classes : int
    dtype : numpy dtype, float32 or float64
    model : {"softmax", "ovr"}
    """

    def __init__(self, X8, y, n_classes, dtype, model):
        X = X8.astype(dtype)
        X *= dtype.type(1.0 / 255.0)
        self._setup(X, y, model, n_classes)

    @classmethod
    def from_float(cls, X, y, model, n_classes: int | None = None) -> "NumpyPass":
        """A pass over rows that are already floats (any values, any float dtype)."""
        self = cls.__new__(cls)
        self._setup(np.asarray(X), y, model, n_classes)
        return self

    def _setup(self, X, y, model, n_classes):
        self.K = n_classes
        self.X = X
        self.y = np.ascontiguousarray(y)
        self.rows = np.arange(len(y))
        self.forward = Forward(model)
        self.acc = None

    def accumulate(self) -> np.ndarray:
        """Start adding each gradient pass's ``p_i - e_{y_i}`` into the returned (n, K) array
        (float64): the residual sums behind ``W = -(a / n) A^T X`` (see :class:`Recorder`)."""
        self.acc = np.zeros((len(self.y), self.K))
        return self.acc

    def run(self, W, b, want_grad=True, want_records=False) -> PassOut:
        """Per-row loss and prediction at (W, b); with ``want_records`` also p(true) and
        ||p - e_y||; with ``want_grad`` the gradient of the *summed* loss."""
        logits = self.X @ W.T
        logits += b
        loss, probs, pred = self.forward(logits, self.y, self.rows)
        out = PassOut(loss, pred)
        if want_records:
            out.p_true = probs[self.rows, self.y].copy()
        probs[self.rows, self.y] -= 1.0
        if want_records:
            out.resid = np.sqrt(np.einsum("ij,ij->i", probs, probs))
        if want_grad and self.acc is not None:
            self.acc += probs
        if want_grad:
            # P - Y stays unscaled: dividing its tiny entries by n would make them subnormal.
            out.grad_W = probs.T @ self.X
            out.grad_b = probs.sum(axis=0)
        return out


class KernelPass:
    """Rows kept as uint8; one fused compiled pass per call (see :mod:`core.kernels`).

    Same parameters and :meth:`run` as :class:`NumpyPass`; records are always
    computed (they cost nothing extra in the fused pass).
    """

    def __init__(self, X8, y, n_classes, dtype, model):
        self._pass = kernels.Pass(X8, y, n_classes, dtype, model)
        self.y = self._pass.y

    def accumulate(self) -> np.ndarray:
        """As :meth:`NumpyPass.accumulate`."""
        return self._pass.accumulate()

    def run(self, W, b, want_grad=True, want_records=False) -> PassOut:
        gW, gb = self._pass.run(W, b, want_grad)
        p = self._pass
        return PassOut(p.loss, p.pred, p.p_true, p.resid, gW, gb)


def make_pass(backend: str, X8: np.ndarray, y: np.ndarray, n_classes: int, dtype,
              model: str) -> NumpyPass | KernelPass:
    """A pass over rows ``X8`` (m, d) uint8 with labels ``y`` (m,) on ``backend``.

    Raises
    ------
    ValueError
        For an unknown backend, or "numba" where the kernel is unavailable
        (the message says why: not installed, or switched off).
    """
    if backend == "numba":
        if not kernels.AVAILABLE:
            raise ValueError(f"The numba backend is unavailable: {kernels.unavailable_reason()}")
        return KernelPass(X8, y, n_classes, dtype, model)
    if backend == "numpy":
        return NumpyPass(X8, y, n_classes, dtype, model)
    raise ValueError(f"Unknown backend {backend!r}; expected 'numba' or 'numpy'.")


def _smoothness_from_gram(gram: np.ndarray, n: int, model: str, l2: float) -> float:
    lam = float(np.linalg.eigvalsh(gram.astype(np.float64))[-1]) / n
    return (0.5 if model == "softmax" else 0.25) * lam + float(l2)


def smoothness(x: np.ndarray, model: str, l2: float = 0.0) -> float:
    """Smoothness constant L of the objective on design ``x`` (n, d), bias included.

    ``c * lambda_max([x 1]^T [x 1] / n) + l2`` with ``c`` = 1/2 (softmax) or 1/4
    (one-vs-rest). Computed from the smaller of the two Gram matrices.
    """
    n = x.shape[0]
    xb = np.hstack([x, np.ones((n, 1), dtype=x.dtype)])
    gram = xb.T @ xb if xb.shape[1] <= n else xb @ xb.T
    return _smoothness_from_gram(gram, n, model, l2)


def smoothness_u8(X8: np.ndarray, model: str, l2: float = 0.0, block: int = 8192,
                  dtype=np.float32) -> float:
    """:func:`smoothness` of ``X8 / 255`` (X8 (n, d) uint8) without a float copy of all rows.

    The Gram matrix is summed in ``dtype``, the run's precision: float32 is within
    about 2e-7 of float64 and twice as fast; a float64 run gets a float64 constant.
    """
    n, d = X8.shape
    if n <= d:
        return smoothness(X8.astype(np.float64) / 255.0, model, l2)
    dtype = np.dtype(dtype)
    gram = np.zeros((d + 1, d + 1))
    for start in range(0, n, block):
        xb = X8[start:start + block].astype(dtype)
        xb *= dtype.type(1.0 / 255.0)
        xb = np.hstack([xb, np.ones((len(xb), 1), dtype=dtype)])
        gram += (xb.T @ xb).astype(np.float64)
    return _smoothness_from_gram(gram, n, model, l2)


def objective_and_gradient(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, model: str,
    l2: float = 0.0, l1: float = 0.0,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Objective F(W, b) and the gradient of its smooth part, as the trainer computes them.

    Parameters
    ----------
    X : (n, d) design, y : (n,) labels, W : (K, d), b : (K,)

    Returns
    -------
    objective : float
        Mean loss + (l2/2)||W||^2 + l1 ||W||_1.
    grad_W : (K, d), grad_b : (K,)
        Gradient of mean loss + (l2/2)||W||^2 (the L1 term is handled by the prox step).
    """
    out = NumpyPass.from_float(X, y, model).run(W, b, want_grad=True)
    objective = float(out.loss.mean()) + 0.5 * l2 * float(np.vdot(W, W)) \
        + l1 * float(np.abs(W).sum())
    return objective, out.grad_W / len(y) + l2 * W, out.grad_b / len(y)
