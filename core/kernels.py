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

The grouped pass (:meth:`Pass.run_groups`) does the same for G models at once,
their weights stacked as (G * K, d): each row is read and scaled once, its G * K
logits computed together, each group of K finished as one model's row, and all
G gradients summed in the same sweep. Training several settings side by side
then reads the images once per step instead of G times.

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
        # registers and L1 instead of waiting on the cache. The logits go two weight rows
        # at a time, so each load of the scaled rows serves both (16 sums in registers), as
        # in _pass_groups_py; the gradient keeps one row at a time, which measured faster
        # than pairs here.
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
                for k in range(0, K - 1, 2):
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = b[k]
                    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = b[k + 1]
                    for j in range(d):
                        w = W[k, j]
                        v = W[k + 1, j]
                        x0 = xb[0, j]
                        x1 = xb[1, j]
                        x2 = xb[2, j]
                        x3 = xb[3, j]
                        x4 = xb[4, j]
                        x5 = xb[5, j]
                        x6 = xb[6, j]
                        x7 = xb[7, j]
                        s0 += w * x0
                        s1 += w * x1
                        s2 += w * x2
                        s3 += w * x3
                        s4 += w * x4
                        s5 += w * x5
                        s6 += w * x6
                        s7 += w * x7
                        t0 += v * x0
                        t1 += v * x1
                        t2 += v * x2
                        t3 += v * x3
                        t4 += v * x4
                        t5 += v * x5
                        t6 += v * x6
                        t7 += v * x7
                    z[0, k], z[1, k], z[2, k], z[3, k] = s0, s1, s2, s3
                    z[4, k], z[5, k], z[6, k], z[7, k] = s4, s5, s6, s7
                    z[0, k + 1], z[1, k + 1], z[2, k + 1], z[3, k + 1] = t0, t1, t2, t3
                    z[4, k + 1], z[5, k + 1], z[6, k + 1], z[7, k + 1] = t4, t5, t6, t7
                if K % 2:
                    k = K - 1
                    for r in range(8):
                        s = b[k]
                        for j in range(d):
                            s += W[k, j] * xb[r, j]
                        z[r, k] = s
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


    def _pass_groups_py(X8, y, W, b, groups, scale, model, want_grad, floor, grad, grad_b,
                        loss, pred, p_true, resid, acc, slots):  # pragma: no cover - compiled
        # _pass_py for G models stacked as W (G * K, d): the logits and gradient loops run
        # over all G * K rows, so a scaled row in xb serves every model; only finishing a
        # row goes group by group. Per-row outputs are (G, n); group g's residuals are
        # added to acc[slots[g]] (n, K).
        # With G * K rows there are pairs to share: each load of xb serves two weight rows
        # (16 sums in registers), which measured 1.2x faster for the logits in float32 and
        # 1.7x in float64. For the gradient, pairs help float64 the same way but were
        # slower in float32, which keeps one row at a time.
        n, d = X8.shape
        GK = W.shape[0]
        K = GK // groups
        chunks = grad.shape[0]
        size = (n + chunks - 1) // chunks
        for c in prange(chunks):
            G = grad[c]
            gb = grad_b[c]
            G[:, :] = 0
            gb[:] = 0
            xb = np.zeros((8, d), dtype=W.dtype)
            z = np.zeros((8, GK), dtype=W.dtype)
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
                for k in range(0, GK - 1, 2):
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = b[k]
                    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = b[k + 1]
                    for j in range(d):
                        w = W[k, j]
                        v = W[k + 1, j]
                        x0 = xb[0, j]
                        x1 = xb[1, j]
                        x2 = xb[2, j]
                        x3 = xb[3, j]
                        x4 = xb[4, j]
                        x5 = xb[5, j]
                        x6 = xb[6, j]
                        x7 = xb[7, j]
                        s0 += w * x0
                        s1 += w * x1
                        s2 += w * x2
                        s3 += w * x3
                        s4 += w * x4
                        s5 += w * x5
                        s6 += w * x6
                        s7 += w * x7
                        t0 += v * x0
                        t1 += v * x1
                        t2 += v * x2
                        t3 += v * x3
                        t4 += v * x4
                        t5 += v * x5
                        t6 += v * x6
                        t7 += v * x7
                    z[0, k], z[1, k], z[2, k], z[3, k] = s0, s1, s2, s3
                    z[4, k], z[5, k], z[6, k], z[7, k] = s4, s5, s6, s7
                    z[0, k + 1], z[1, k + 1], z[2, k + 1], z[3, k + 1] = t0, t1, t2, t3
                    z[4, k + 1], z[5, k + 1], z[6, k + 1], z[7, k + 1] = t4, t5, t6, t7
                if GK % 2:  # the odd row left over
                    k = GK - 1
                    for r in range(8):
                        s = b[k]
                        for j in range(d):
                            s += W[k, j] * xb[r, j]
                        z[r, k] = s
                for r in range(8):
                    if r < m:
                        i = i0 + r
                        for g in range(groups):
                            zg = z[r, g * K:(g + 1) * K]
                            loss[g, i], pred[g, i], p_true[g, i], resid[g, i] = _finish_row(
                                zg, y[i], model, floor)
                            if want_grad and acc.shape[1] == n:
                                a = acc[slots[g], i]
                                for k in range(K):
                                    a[k] += zg[k]
                    else:
                        z[r, :] = 0  # padding rows pull on nothing
                if not want_grad:
                    continue
                paired = 0 if W.itemsize == 4 else GK - GK % 2
                for k in range(0, paired, 2):
                    g0, g1, g2, g3 = z[0, k], z[1, k], z[2, k], z[3, k]
                    g4, g5, g6, g7 = z[4, k], z[5, k], z[6, k], z[7, k]
                    h0, h1, h2, h3 = z[0, k + 1], z[1, k + 1], z[2, k + 1], z[3, k + 1]
                    h4, h5, h6, h7 = z[4, k + 1], z[5, k + 1], z[6, k + 1], z[7, k + 1]
                    gb[k] += g0 + g1 + g2 + g3 + g4 + g5 + g6 + g7
                    gb[k + 1] += h0 + h1 + h2 + h3 + h4 + h5 + h6 + h7
                    for j in range(d):
                        x0 = xb[0, j]
                        x1 = xb[1, j]
                        x2 = xb[2, j]
                        x3 = xb[3, j]
                        x4 = xb[4, j]
                        x5 = xb[5, j]
                        x6 = xb[6, j]
                        x7 = xb[7, j]
                        G[k, j] += g0 * x0 + g1 * x1 + g2 * x2 + g3 * x3 \
                            + g4 * x4 + g5 * x5 + g6 * x6 + g7 * x7
                        G[k + 1, j] += h0 * x0 + h1 * x1 + h2 * x2 + h3 * x3 \
                            + h4 * x4 + h5 * x5 + h6 * x6 + h7 * x7
                for k in range(paired, GK):
                    g0, g1, g2, g3 = z[0, k], z[1, k], z[2, k], z[3, k]
                    g4, g5, g6, g7 = z[4, k], z[5, k], z[6, k], z[7, k]
                    gb[k] += g0 + g1 + g2 + g3 + g4 + g5 + g6 + g7
                    for j in range(d):
                        G[k, j] += g0 * xb[0, j] + g1 * xb[1, j] + g2 * xb[2, j] \
                            + g3 * xb[3, j] + g4 * xb[4, j] + g5 * xb[5, j] \
                            + g6 * xb[6, j] + g7 * xb[7, j]

    def _steps_py(X8, y, W, b, scale, model, floor, grad, grad_b, loss, pred, p_true, resid,
                  acc, t0, t1, a, inv_n, l2, shrink, pen_l2, pen_l1, limit, hist_loss,
                  hist_acc, hist_obj, counting, correct_prev, forgets, last_wrong, W_prev,
                  b_prev):  # pragma: no cover - compiled
        # Gradient steps t0 .. t1 - 1 of core.trainer's _descend and what its Recorder keeps
        # of each (see Pass.descend), without returning to Python in between. Compiled
        # without fastmath: every update is rounded operation by operation in W's dtype as
        # numpy rounds it, so the weights are those of the step-by-step loop bit for bit.
        n = X8.shape[0]
        K, d = W.shape
        chunks = grad.shape[0]
        penalized = pen_l2 != 0.0 or pen_l1 != 0.0
        for t in range(t0, t1):
            _pass(X8, y, W, b, scale, model, True, floor, grad, grad_b, loss, pred, p_true,
                  resid, acc)
            total = 0.0
            right = 0
            for i in range(n):
                total += loss[i]
                if pred[i] == y[i]:
                    right += 1
            mean = total / n
            squares = 0.0
            sizes = 0.0
            for k in range(K):
                for j in range(d):
                    w = np.float64(W[k, j])
                    squares += w * w
                    sizes += abs(w)
            if not math.isfinite(sizes):  # a weight is not finite (or overflows the sum)
                return t
            objective = mean + 0.5 * pen_l2 * squares + pen_l1 * sizes if penalized else mean
            if not objective <= limit:  # diverged, or NaN: the caller records t itself
                return t
            hist_loss[t] = mean
            hist_acc[t] = right / n
            hist_obj[t] = objective
            if counting:
                for i in range(n):
                    good = pred[i] == y[i]
                    if correct_prev[i] and not good:
                        forgets[i] += 1
                    if not good:
                        last_wrong[i] = t
                    correct_prev[i] = good
            W_prev[:, :] = W
            b_prev[:] = b
            for k in range(K):
                g = grad_b[0, k]
                for c in range(1, chunks):
                    g += grad_b[c, k]
                g *= inv_n
                b[k] = b[k] - a * g
                for j in range(d):
                    g = grad[0, k, j]
                    for c in range(1, chunks):
                        g += grad[c, k, j]
                    g *= inv_n
                    if l2 != 0:
                        g += l2 * W[k, j]
                    w = W[k, j] - a * g
                    if shrink != 0:
                        v = abs(w) - shrink
                        if v <= 0:
                            w = 0
                        elif w > 0:
                            w = v
                        else:
                            w = -v  # also a NaN stays NaN
                    W[k, j] = w
        return t1

def _compile(cache: bool) -> None:
    """Compile ``_finish_row``, ``_pass``, ``_pass_groups`` and ``_steps``, with Numba's disk
    cache or without.

    All are module globals, rebound here: the passes call ``_finish_row`` by its global
    name, which Numba looks up when it compiles them. RuntimeError ("cannot cache
    function") when ``cache`` and Numba finds no folder it can write.
    """
    global _finish_row, _pass, _pass_groups, _steps, CACHED
    _finish_row = njit(fastmath=_FLAGS, cache=cache, nogil=True)(_finish_row_py)
    _pass = njit(parallel=True, fastmath=_FLAGS, cache=cache, nogil=True)(_pass_py)
    _pass_groups = njit(parallel=True, fastmath=_FLAGS, cache=cache, nogil=True)(
        _pass_groups_py)
    _steps = njit(cache=cache, nogil=True)(_steps_py)
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
        # The grouped pass's residual sums (V, n, K) and buffers, made when first needed.
        self.acc_groups = np.zeros((0, 0, n_classes))
        self._groups = None

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

    def descend(self, W: np.ndarray, b: np.ndarray, t0: int, t1: int, step, l2, shrink,
                penalties: tuple[float, float], limit: float, history: tuple, counts: tuple):
        """Gradient steps ``t0 .. t1 - 1`` in one compiled call, ``W`` (K, d) and ``b`` (K,)
        updated in place, as :func:`core.trainer._descend` takes them one by one.

        Step ``t`` runs the gradient pass at (W, b) (adding to :meth:`accumulate`'s sums),
        computes the objective ``mean loss + (l2 / 2)||W||^2 + l1 ||W||_1`` with
        ``penalties = (l2, l1)``, and stops there, before recording anything, if it is not
        at most ``limit`` or a weight is not finite; else it writes ``history =
        (train_loss, train_acc, objective)`` (each (T + 1,) float64) at ``t``, with
        ``counts = (counting, correct_prev, forgets, last_wrong)`` counts forgetting as
        :class:`core.trainer.Recorder` does, and takes the step: ``W <- prox(W - step
        (grad / n + l2 W))`` with soft-thresholding by ``shrink`` (0: none), ``b <- b -
        step grad_b / n``. ``step``, ``l2`` and ``shrink`` are scalars of W's dtype.

        Returns ``(t, W_prev, b_prev)``: the iteration it stopped before (``t1`` when it
        took every step) and copies of the weights of iteration ``t - 1`` (the last one
        recorded; unset when ``t == t0``).
        """
        W_prev, b_prev = np.empty_like(W), np.empty_like(b)
        inv_n = self.dtype.type(1.0 / len(self.y))
        args = (self.X8, self.y, W, b, self.scale, self.model, self.floor, self.grad,
                self.grad_b, self.loss, self.pred, self.p_true, self.resid, self.acc,
                int(t0), int(t1), step, inv_n, l2, shrink, float(penalties[0]),
                float(penalties[1]), float(limit), *history, bool(counts[0]), *counts[1:],
                W_prev, b_prev)
        try:
            t = _steps(*args)
        except OSError as err:  # as in run: the disk cache failed while compiling
            if not CACHED:
                raise
            _without_disk_cache(f"its cache folder failed ({err})")
            t = _steps(*args)
        return int(t), W_prev, b_prev

    def accumulate_groups(self, variants: int) -> np.ndarray:
        """Start adding each grouped gradient pass's ``p_i - e_{y_i}`` into the returned
        (variants, n, K) array: group g of a pass adds to entry ``slots[g]``
        (see :meth:`run_groups`)."""
        self.acc_groups = np.zeros((variants, len(self.y), self.grad.shape[1]))
        return self.acc_groups

    def run_groups(self, W: np.ndarray, b: np.ndarray, groups: int, want_grad: bool = True,
                   slots: np.ndarray | None = None):
        """One pass at ``groups`` stacked models: ``W`` (G * K, d), ``b`` (G * K,), model g
        in rows ``g K .. (g + 1) K``.

        Returns ``(grad_W (G * K, d), grad_b (G * K,))`` of each model's *summed* loss when
        ``want_grad``, else ``(None, None)``. Per-row ``loss``, ``pred``, ``p_true`` and
        ``resid``, each (G, n), are left in :attr:`groups_out` until the next call; after
        :meth:`accumulate_groups`, a gradient pass adds group g's ``p - e_y`` to
        ``acc_groups[slots[g]]`` (``slots`` defaults to ``0 .. G - 1``).
        """
        n, d = self.X8.shape
        K = self.grad.shape[1]
        if self._groups is None or self._groups["G"] != groups:
            # Buffers for this many models: together as large as one pass's per model.
            self._groups = {
                "G": groups,
                "grad": np.zeros((self.chunks, groups * K, d), dtype=self.dtype),
                "grad_b": np.zeros((self.chunks, groups * K), dtype=self.dtype),
                "loss": np.zeros((groups, n), dtype=self.dtype),
                "pred": np.zeros((groups, n), dtype=np.int64),
                "p_true": np.zeros((groups, n), dtype=self.dtype),
                "resid": np.zeros((groups, n), dtype=self.dtype),
            }
        buf = self._groups
        slots = np.arange(groups, dtype=np.int64) if slots is None \
            else np.ascontiguousarray(slots, dtype=np.int64)
        args = (self.X8, self.y, W, b, groups, self.scale, self.model, want_grad, self.floor,
                buf["grad"], buf["grad_b"], buf["loss"], buf["pred"], buf["p_true"],
                buf["resid"], self.acc_groups, slots)
        try:
            _pass_groups(*args)
        except OSError as err:  # as in run: the disk cache failed while compiling
            if not CACHED:
                raise
            _without_disk_cache(f"its cache folder failed ({err})")
            _pass_groups(*args)
        if not want_grad:
            return None, None
        return buf["grad"].sum(axis=0), buf["grad_b"].sum(axis=0)

    @property
    def groups_out(self) -> dict:
        """Per-row outputs of the last :meth:`run_groups`: ``loss``, ``pred``, ``p_true``,
        ``resid``, each (G, n)."""
        return self._groups
