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

Numba keeps compiled code on disk (``NUMBA_CACHE_DIR``, else beside this file, else the
user's cache folder), so a server starts training at once after its first start. Where no
such folder can be written, the kernel is compiled without the disk cache, once per
process, and the server log says why.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from core.env import warn_once

try:  # Numba is optional: without it the trainer uses numpy.
    import numba
    from numba import njit, prange

    INSTALLED = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    INSTALLED = False

#: ``WEIGHTSCOPE_KERNEL=numpy`` switches the compiled kernel off even where Numba is installed.
_CHOICE = os.environ.get("WEIGHTSCOPE_KERNEL", "").strip()
if _CHOICE not in ("", "numba", "numpy"):
    warn_once(f"WEIGHTSCOPE_KERNEL={_CHOICE[:60]!r} is not 'numba' or 'numpy'; using the "
              "default, numba where it is installed.")
SWITCHED_OFF = _CHOICE == "numpy"
AVAILABLE = INSTALLED and not SWITCHED_OFF

MODEL_CODES = {"softmax": 0, "ovr": 1}

if AVAILABLE:
    # Reassociation lets LLVM vectorise the dot products; exp and log stay exact
    # (no approximate functions) and infinities are kept for divergence checks.
    _FLAGS = {"reassoc", "contract", "nsz"}

    def _finish_row_py(z, yi, model, floor):  # pragma: no cover - compiled
        """Turn the logits ``z`` (K,) of one row into ``p - e_y`` in place.

        Returns (loss, predicted class, p of the true class, ||p - e_y||).
        """
        K = z.shape[0]
        best = 0
        for k in range(1, K):
            if z[k] > z[best]:
                best = k
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
            loss = math.log(total) - shifted_true
            for k in range(K):
                z[k] = z[k] / total
        else:
            loss = 0.0
            for k in range(K):
                v = z[k]
                # softplus(v) - [k == y] v and sigmoid(v) = exp(-softplus(-v)), both stable
                soft = math.log1p(math.exp(-abs(v)))
                loss += max(v, 0.0) + soft
                if k == yi:
                    loss -= v
                lp = -(max(-v, 0.0) + soft)
                if lp < floor:
                    lp = floor
                z[k] = math.exp(lp)
        p_true = z[yi]
        z[yi] -= 1.0
        r2 = 0.0
        for k in range(K):
            r2 += z[k] * z[k]
        return loss, best, p_true, math.sqrt(r2)

    def _pass_py(X8, y, W, b, scale, model, want_grad, floor,
                 grad, grad_b, loss, pred, p_true, resid, acc):  # pragma: no cover - compiled
        # Rows go eight at a time: each weight loaded for the logits, and each gradient
        # entry loaded and stored, serves eight rows, so the inner loops stay in
        # registers and L1 instead of waiting on the cache.
        n, d = X8.shape
        K = W.shape[0]
        chunks = grad.shape[0]
        size = (n + chunks - 1) // chunks
        for c in prange(chunks):
            G = grad[c]
            gb = grad_b[c]
            G[:, :] = 0
            gb[:] = 0
            xb = np.zeros((8, d), dtype=W.dtype)
            z = np.zeros((8, K), dtype=W.dtype)
            start = c * size
            stop = min(n, start + size)
            for i0 in range(start, stop, 8):
                m = min(8, stop - i0)
                for r in range(8):
                    if r < m:
                        for j in range(d):
                            xb[r, j] = X8[i0 + r, j] * scale
                    else:
                        xb[r, :] = 0
                for k in range(K):
                    s0 = b[k]
                    s1 = b[k]
                    s2 = b[k]
                    s3 = b[k]
                    s4 = b[k]
                    s5 = b[k]
                    s6 = b[k]
                    s7 = b[k]
                    for j in range(d):
                        w = W[k, j]
                        s0 += w * xb[0, j]
                        s1 += w * xb[1, j]
                        s2 += w * xb[2, j]
                        s3 += w * xb[3, j]
                        s4 += w * xb[4, j]
                        s5 += w * xb[5, j]
                        s6 += w * xb[6, j]
                        s7 += w * xb[7, j]
                    z[0, k] = s0
                    z[1, k] = s1
                    z[2, k] = s2
                    z[3, k] = s3
                    z[4, k] = s4
                    z[5, k] = s5
                    z[6, k] = s6
                    z[7, k] = s7
                for r in range(8):
                    if r < m:
                        i = i0 + r
                        loss[i], pred[i], p_true[i], resid[i] = _finish_row(
                            z[r], y[i], model, floor)
                        if want_grad and acc.shape[0] == n:
                            for k in range(K):
                                acc[i, k] += z[r, k]
                    else:
                        z[r, :] = 0  # padding rows pull on nothing
                if want_grad:
                    for k in range(K):
                        g0 = z[0, k]
                        g1 = z[1, k]
                        g2 = z[2, k]
                        g3 = z[3, k]
                        g4 = z[4, k]
                        g5 = z[5, k]
                        g6 = z[6, k]
                        g7 = z[7, k]
                        gb[k] += g0 + g1 + g2 + g3 + g4 + g5 + g6 + g7
                        for j in range(d):
                            G[k, j] += g0 * xb[0, j] + g1 * xb[1, j] + g2 * xb[2, j] \
                                + g3 * xb[3, j] + g4 * xb[4, j] + g5 * xb[5, j] \
                                + g6 * xb[6, j] + g7 * xb[7, j]


def _compile(cache: bool) -> None:
    """Compile ``_finish_row`` and ``_pass``, with Numba's disk cache or without.

    Both are module globals, rebound here: ``_pass`` calls ``_finish_row`` by its global
    name, which Numba looks up when it compiles ``_pass``. RuntimeError ("cannot cache
    function") when ``cache`` and Numba finds no folder it can write.
    """
    global _finish_row, _pass, CACHED
    _finish_row = njit(fastmath=_FLAGS, cache=cache, nogil=True)(_finish_row_py)
    _pass = njit(parallel=True, fastmath=_FLAGS, cache=cache, nogil=True)(_pass_py)
    CACHED = cache


def _unwritable(folder: str) -> str:
    """Why Numba cannot keep its cache in ``folder`` ("" when it can), tested the way
    Numba tests it: make the folder, then a temporary file in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return ""


def _without_disk_cache(why: str) -> None:
    warn_once(f"Numba cannot cache compiled code: {why}. The kernel is compiled without a "
              "disk cache, once per server process (some seconds before the first "
              "training); point NUMBA_CACHE_DIR at a writable folder to keep it.")
    _compile(cache=False)


#: Whether the compiled kernel is kept in Numba's disk cache.
CACHED = False
if AVAILABLE:
    _asked = numba.config.CACHE_DIR
    _refused = _asked and _unwritable(_asked)
    _refusal = f"NUMBA_CACHE_DIR={_asked} cannot be written ({_refused})" if _refused else ""
    try:
        _compile(cache=True)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        _others = (f"neither the folder of {__file__} nor the user's cache folder can be "
                   "written")
        _without_disk_cache(f"{_refusal}, and {_others}" if _refusal else _others)
    else:
        if _refusal:  # Numba quietly used another folder; the operator asked for this one
            warn_once(f"{_refusal}; Numba keeps compiled code in the next folder it can "
                      "write instead (beside core/kernels.py or in the user's cache folder).")


def unavailable_reason() -> str:
    """Why the compiled kernel cannot be used ("" when it can)."""
    if not INSTALLED:
        return "it needs the numba package (pip install numba)."
    if SWITCHED_OFF:
        return "it was switched off by WEIGHTSCOPE_KERNEL=numpy; unset it to use Numba."
    return ""


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
        # One chunk of equal rows per thread (each with its own gradient buffer).
        self.chunks = max(1, min(threads(), n // 64))
        self.grad = np.zeros((self.chunks, n_classes, d), dtype=self.dtype)
        self.grad_b = np.zeros((self.chunks, n_classes), dtype=self.dtype)
        self.loss = np.zeros(n, dtype=self.dtype)
        self.pred = np.zeros(n, dtype=np.int64)
        self.p_true = np.zeros(n, dtype=self.dtype)
        self.resid = np.zeros(n, dtype=self.dtype)
        self.scale = self.dtype.type(1.0 / 255.0)
        self.model = MODEL_CODES[model]
        self.floor = -80.0 if self.dtype == np.float32 else -700.0
        # Residual sums (n, K) float64, added to by every gradient pass once switched on.
        self.acc = np.zeros((0, n_classes))

    def accumulate(self) -> np.ndarray:
        """Start adding each gradient pass's ``p_i - e_{y_i}`` into the returned (n, K) array."""
        self.acc = np.zeros((len(self.y), self.grad.shape[1]))
        return self.acc

    def run(self, W: np.ndarray, b: np.ndarray, want_grad: bool = True):
        """One pass at weights ``W`` (K, d), ``b`` (K,).

        Returns ``(grad_W, grad_b)`` of the *summed* loss (not yet divided by n)
        when ``want_grad``, else ``(None, None)``; per-row ``loss``, ``pred``,
        ``p_true`` and ``resid`` (= ||p - e_y||) are left in this object's arrays;
        after :meth:`accumulate`, a gradient pass also adds ``p - e_y`` to ``acc``.
        """
        args = (self.X8, self.y, W, b, self.scale, self.model, want_grad, self.floor,
                self.grad, self.grad_b, self.loss, self.pred, self.p_true, self.resid, self.acc)
        try:
            _pass(*args)
        except OSError as err:
            # Only Numba's disk cache does I/O here, when a new signature is compiled and
            # before any row is touched: the cache folder was lost, filled up, or holds
            # another user's files. Compiling without it and running again is safe.
            if not CACHED:
                raise
            _without_disk_cache(f"its cache folder failed ({err})")
            _pass(*args)
        if not want_grad:
            return None, None
        return self.grad.sum(axis=0), self.grad_b.sum(axis=0)
