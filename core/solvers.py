"""Reference solutions a gradient-descent run is compared with.

- :func:`l2_logistic`: the converged minimiser of the trainer's objective with an L2
  penalty (what early stopping approximates: stopping at step ``t`` with step ``a``
  behaves like L2 at strength ``1 / (a t)`` along gradient flow).
- :func:`hard_margin`: the hard-margin SVM on ``[x, 1]`` that unpenalised gradient
  descent from zero heads to in direction on separable data (Soudry et al., 2018):
  the Crammer-Singer multiclass solution for softmax, one binary SVM per class for
  one-vs-rest. The bias is penalised like a weight (``intercept_scaling=1``): it is
  a weight on the constant feature, as it is for gradient descent.

Shapes: ``x`` (n, d) float64 in [0, 1], ``y`` (n,) int, ``W`` (K, d), ``b`` (K,).
Run as ``python -m core.solvers`` it solves :func:`hard_margin` for arrays read
from stdin (npz) and writes the answer to stdout, so the app can stop a solve that
takes too long by killing a process.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from core.objective import NumpyPass

#: C of the "hard" margin: the direction is the same at 1e2, 1e3 and 1e4 (cosine > 0.999999).
HARD_C = 1e3


def l2_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, model: str, l2: float, *,
                init: tuple[np.ndarray, np.ndarray] | None = None,
                basis: tuple[np.ndarray, np.ndarray] | None = None,
                gtol: float = 1e-6, max_iter: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Minimise mean loss + (l2 / 2) ||W||^2 (bias unpenalised) to convergence.

    L-BFGS in the eigenbasis of ``x^T x / n``, each direction rescaled by
    ``1 / sqrt(c lambda + l2)`` so that the curvature is about even (about 3x fewer
    iterations than plain L-BFGS on Fashion-MNIST). ``gtol`` 1e-6 moves the
    solution by less than 1e-4 relative to 1e-9.

    Parameters
    ----------
    init : (W, b), optional
        Starting point (zeros by default): warm starts along a path.
    basis : (eigenvalues (d,), eigenvectors (d, d)), optional
        Of ``x^T x / n``, when the caller has them.

    Returns
    -------
    W : (K, d), b : (K,)
    """
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    K = n_classes
    lam, V = basis if basis is not None else np.linalg.eigh(x.T @ x / n)
    c = 0.1 if model == "softmax" else 0.25
    s = 1.0 / np.sqrt(c * np.maximum(lam, 0.0) + l2 + 1e-12)
    design = NumpyPass.from_float((x @ V) * s, y, model, K)

    def objective(theta):
        U, b = theta[: K * d].reshape(K, d), theta[K * d:]
        out = design.run(U, b, want_grad=True)
        Wr = U * s
        value = float(out.loss.mean()) + 0.5 * l2 * float(np.vdot(Wr, Wr))
        grad = np.concatenate([(out.grad_W / n + l2 * Wr * s).ravel(), out.grad_b / n])
        return value, grad

    W0, b0 = init if init is not None else (np.zeros((K, d)), np.zeros(K))
    start = np.concatenate([((np.asarray(W0, dtype=np.float64) @ V) / s).ravel(),
                            np.asarray(b0, dtype=np.float64)])
    # One BLAS thread: the products are small, and two threads made the Fashion-MNIST
    # path 2.8x slower (59 s against 21 s), besides taking the core a viewer's training needs.
    with threadpool_limits(1):
        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "gtol": gtol, "ftol": 0.0})
    U, b = result.x[: K * d].reshape(K, d), result.x[K * d:]
    return (U * s) @ V.T, b.copy()


def margins(x: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, model: str) -> np.ndarray:
    """Each example's functional margin (n,) under (W, b).

    Softmax (multiclass): ``z_y - max_{k != y} z_k``. One-vs-rest: the smallest of
    ``s_k z_k`` over the classes, ``s_k = +1`` for the true class and -1 otherwise.
    """
    z = np.asarray(x, dtype=np.float64) @ np.asarray(W, dtype=np.float64).T + b
    rows = np.arange(len(y))
    if model == "softmax":
        true = z[rows, y].copy()
        z[rows, y] = -np.inf
        return true - z.max(axis=1)
    signs = -np.ones_like(z)
    signs[rows, y] = 1.0
    return (signs * z).min(axis=1)


def hard_margin(x: np.ndarray, y: np.ndarray, n_classes: int, model: str, *,
                C: float = HARD_C, tol: float = 1e-4,
                max_iter: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """The hard-margin SVM on ``[x, 1]``: softmax -> Crammer-Singer, ovr -> K binary SVMs.

    scikit-learn's ``LinearSVC`` (liblinear, dual coordinate descent) with a large
    ``C``. Where the data are separable this is the max-margin solution; where they
    are not, a soft-margin one (check with :func:`margins`).

    Returns
    -------
    W : (K, d), b : (K,)
    """
    from sklearn.svm import LinearSVC

    x = np.asarray(x, dtype=np.float64)
    K = n_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: shown as "not separable"
        if model == "softmax":
            svc = LinearSVC(multi_class="crammer_singer", intercept_scaling=1.0, C=C, tol=tol,
                            max_iter=max_iter)
            svc.fit(x, y)
            W, b = svc.coef_, svc.intercept_
            if W.shape[0] != K:  # a class missing from y: fill it with zeros
                full_W, full_b = np.zeros((K, x.shape[1])), np.zeros(K)
                full_W[svc.classes_], full_b[svc.classes_] = W, b
                W, b = full_W, full_b
            return np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
        W, b = np.zeros((K, x.shape[1])), np.zeros(K)
        for k in range(K):
            target = np.where(y == k, 1, -1)
            if len(np.unique(target)) < 2:
                continue
            svc = LinearSVC(loss="hinge", intercept_scaling=1.0, C=C, tol=tol,
                            max_iter=max_iter, dual=True)
            svc.fit(x, target)
            W[k], b[k] = svc.coef_[0], svc.intercept_[0]
        return W, b


class SolveTimeout(Exception):
    """A solve in a separate process took longer than it was allowed."""


def hard_margin_within(x: np.ndarray, y: np.ndarray, n_classes: int, model: str,
                       seconds: float, check=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hard_margin` in a child process that is killed after ``seconds``, or as
    soon as ``check()`` (called about twice a second) raises: the exception propagates.

    liblinear cannot be interrupted from Python, and a thread cannot be stopped;
    a process can.

    Raises
    ------
    SolveTimeout
    RuntimeError
        If the child failed (its error output is in the message).
    """
    buf = io.BytesIO()
    np.savez(buf, x=np.asarray(x, dtype=np.float64), y=np.asarray(y, dtype=np.int64),
             meta=np.array([n_classes, 1 if model == "softmax" else 0]))
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-m", "core.solvers"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root)
    # communicate() runs on a thread of its own: the loop below can then stop the child
    # (a retried communicate() with a timeout stops feeding stdin, so it cannot do this).
    answer: list[tuple[bytes, bytes]] = []
    talker = threading.Thread(target=lambda: answer.append(child.communicate(buf.getvalue())),
                              daemon=True)
    talker.start()
    deadline = time.monotonic() + seconds
    try:
        while talker.is_alive():
            talker.join(min(0.5, max(deadline - time.monotonic(), 0.0)))
            if not talker.is_alive():
                break
            if time.monotonic() >= deadline:
                raise SolveTimeout(f"the solve took longer than {seconds:g} s")
            if check is not None:
                check()
    finally:
        if child.poll() is None:
            child.kill()
            talker.join()
    stdout, stderr = answer[0]
    if child.returncode != 0:
        raise RuntimeError(stderr.decode(errors="replace")[-2000:])
    with np.load(io.BytesIO(stdout), allow_pickle=False) as out:
        return out["W"], out["b"]


def _main() -> None:
    with np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False) as args:
        K, softmax = (int(v) for v in args["meta"])
        W, b = hard_margin(args["x"], args["y"], K, "softmax" if softmax else "ovr")
    out = io.BytesIO()
    np.savez(out, W=W, b=b)
    sys.stdout.buffer.write(out.getvalue())


if __name__ == "__main__":
    _main()
