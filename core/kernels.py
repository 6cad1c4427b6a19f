"""Fused forward-and-gradient pass over uint8 images, compiled with Numba.

One pass over the rows of ``X8`` (n, d) uint8 does everything a gradient step
needs: each row is scaled to [0, 1] once into a small buffer, its K logits are
computed, then its probabilities, loss and prediction, and its contribution
``(p - e_y) x`` is added to a per-thread gradient. So the images are read once
per step, as bytes (a quarter of float32's traffic), instead of twice as
float32 by two separate matrix products. Rows are split between threads; each
thread sums into its own (K, d) buffer and the buffers are added at the end.

The trainer uses this when Numba imports (``AVAILABLE``) and falls back to
plain numpy otherwise; both compute the same quantities (tests compare them).
"""

from __future__ import annotations

import math
import os

import numpy as np

try:  # Numba is optional: without it the trainer uses numpy.
    import numba
    from numba import njit, prange

    AVAILABLE = os.environ.get("WEIGHTSCOPE_KERNEL", "numba") != "numpy"
except ImportError:  # pragma: no cover - exercised where numba is absent
    AVAILABLE = False

MODEL_CODES = {"softmax": 0, "ovr": 1}

if AVAILABLE:
    # Reassociation lets LLVM vectorise the dot products; exp and log stay exact
    # (no approximate functions) and infinities are kept for divergence checks.
    _FLAGS = {"reassoc", "contract", "nsz"}

    @njit(parallel=True, fastmath=_FLAGS, cache=True, nogil=True)
    def _pass(X8, y, W, b, scale, model, want_grad, floor,
              grad, grad_b, loss, pred, p_true, resid):  # pragma: no cover - compiled
        n, d = X8.shape
        K = W.shape[0]
        chunks = grad.shape[0]
        size = (n + chunks - 1) // chunks
        for c in prange(chunks):
            G = grad[c]
            gb = grad_b[c]
            G[:, :] = 0
            gb[:] = 0
            x = np.empty(d, dtype=W.dtype)
            z = np.empty(K, dtype=W.dtype)
            start = c * size
            stop = min(n, start + size)
            for i in range(start, stop):
                for j in range(d):
                    x[j] = X8[i, j] * scale
                best = 0
                for k in range(K):
                    s = b[k]
                    for j in range(d):
                        s += W[k, j] * x[j]
                    z[k] = s
                    if s > z[best]:
                        best = k
                pred[i] = best
                yi = y[i]
                if model == 0:
                    top = z[best]
                    shifted_true = z[yi] - top
                    total = 0.0
                    for k in range(K):
                        v = z[k] - top
                        if v < floor:  # keeps exp() out of the subnormal range
                            v = floor
                        z[k] = math.exp(v)
                        total += z[k]
                    loss[i] = math.log(total) - shifted_true
                    for k in range(K):
                        z[k] = z[k] / total
                else:
                    acc = 0.0
                    for k in range(K):
                        v = z[k]
                        # softplus(v) - [k == y] v, and sigmoid(v), both stable
                        sp = max(v, 0.0) + math.log1p(math.exp(-abs(v)))
                        acc += sp
                        if k == yi:
                            acc -= v
                        lp = -(max(-v, 0.0) + math.log1p(math.exp(-abs(v))))
                        if lp < floor:
                            lp = floor
                        z[k] = math.exp(lp)
                    loss[i] = acc
                p_true[i] = z[yi]
                z[yi] -= 1.0
                r2 = 0.0
                for k in range(K):
                    r2 += z[k] * z[k]
                resid[i] = math.sqrt(r2)
                if want_grad:
                    for k in range(K):
                        g = z[k]
                        gb[k] += g
                        if g != 0.0:
                            for j in range(d):
                                G[k, j] += g * x[j]


def threads() -> int:
    """Threads the kernel uses (Numba's setting, at most the machine's cores)."""
    return int(numba.get_num_threads()) if AVAILABLE else 1


class Pass:
    """Buffers for repeated passes over one set of rows.

    Parameters
    ----------
    X8 : (n, d) uint8, C-contiguous
    y : (n,) int64
    n_classes : int
    dtype : float32 or float64
    """

    def __init__(self, X8: np.ndarray, y: np.ndarray, n_classes: int, dtype, model: str):
        self.X8 = np.ascontiguousarray(X8)
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        n, d = self.X8.shape
        # More chunks than threads balance the load; each chunk has its own gradient.
        self.chunks = max(1, min(threads() * 2, max(1, n // 256)))
        self.grad = np.zeros((self.chunks, n_classes, d), dtype=self.dtype)
        self.grad_b = np.zeros((self.chunks, n_classes), dtype=self.dtype)
        self.loss = np.zeros(n, dtype=self.dtype)
        self.pred = np.zeros(n, dtype=np.int64)
        self.p_true = np.zeros(n, dtype=self.dtype)
        self.resid = np.zeros(n, dtype=self.dtype)
        self.scale = self.dtype.type(1.0 / 255.0)
        self.model = MODEL_CODES[model]
        self.floor = -80.0 if self.dtype == np.float32 else -700.0

    def run(self, W: np.ndarray, b: np.ndarray, want_grad: bool = True):
        """One pass at weights ``W`` (K, d), ``b`` (K,).

        Returns ``(grad_W, grad_b)`` of the *summed* loss (not yet divided by n)
        when ``want_grad``, else ``(None, None)``; per-row ``loss``, ``pred``,
        ``p_true`` and ``resid`` (= ||p - e_y||) are left in this object's arrays.
        """
        _pass(self.X8, self.y, W, b, self.scale, self.model, want_grad, self.floor,
              self.grad, self.grad_b, self.loss, self.pred, self.p_true, self.resid)
        if not want_grad:
            return None, None
        return self.grad.sum(axis=0), self.grad_b.sum(axis=0)
