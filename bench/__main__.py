"""Weightscope's benchmark: the trainer against this machine's limits and its peers.

Run ``python -m bench`` (full, several minutes) or ``python -m bench --quick``
(small sizes, for CI). Every figure is a median of repetitions with its range,
measured in this one process, so ratios compare like with like. Writes
``bench.json`` and ``bench.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import kernels  # noqa: E402
from core.data import load_dataset, stratified_split  # noqa: E402
from core.settings import PRESETS  # noqa: E402
from core.config import BY_NAME as SETTINGS_BY_NAME  # noqa: E402
from core.config import VALIDATION_SEED, TrainConfig, n_train_range  # noqa: E402
from core.trainer import train  # noqa: E402

K, D = 10, 784


def timed(fn, reps: int) -> dict:
    """Median, min and max seconds of ``reps`` calls of ``fn`` (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "reps": reps}


def scaled(stat: dict, factor: float) -> dict:
    return {k: (v * factor if k != "reps" else v) for k, v in stat.items()}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.date.today().isoformat(), "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "numpy": np.__version__,
        "numba": getattr(sys.modules.get("numba"), "__version__", "not installed"),
        "kernel_threads": kernels.threads(),
    }


def sgemm_rate(reps: int, size: int = 2048) -> dict:
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    stat = timed(lambda: a @ b, reps)
    flops = 2.0 * size**3
    return {"gflops": flops / stat["median"] / 1e9, "seconds": stat}


def stream_rate(reps: int, mbytes: int = 188) -> dict:
    x = np.ones(mbytes * (1 << 20) // 4, dtype=np.float32)
    stat = timed(lambda: x.sum(), reps)
    return {"gbytes_per_s": x.nbytes / stat["median"] / 1e9, "seconds": stat}


def textbook_step(X: np.ndarray, y: np.ndarray, lr: float):
    """The textbook numpy loop: two products, a softmax with temporaries."""
    n = len(y)
    W = np.zeros((K, X.shape[1]), dtype=X.dtype)
    b = np.zeros(K, dtype=X.dtype)
    Y = np.eye(K, dtype=X.dtype)[y]

    def step():
        nonlocal W, b
        Z = X @ W.T + b
        Z = Z - Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        G = (P - Y) / n
        W = W - lr * (G.T @ X)
        b = b - lr * G.sum(axis=0)

    return step


def torch_step(X: np.ndarray, y: np.ndarray, lr: float):
    import torch

    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    W = torch.zeros((K, X.shape[1]), dtype=Xt.dtype)
    b = torch.zeros(K, dtype=Xt.dtype)
    Y = torch.nn.functional.one_hot(yt, K).to(Xt.dtype)

    def step():
        nonlocal W, b
        P = torch.softmax(Xt @ W.T + b, dim=1)
        G = (P - Y) / len(y)
        W = W - lr * (G.T @ Xt)
        b = b - lr * G.sum(0)

    return step


def trainer_rows(ds, sizes, reps, floor_of) -> list[dict]:
    rows = []
    keep, _ = stratified_split(ds.y_train, 10_000, VALIDATION_SEED)
    for n, steps in sizes:
        X = (ds.x_train[keep[:n]].reshape(n, -1) / np.float32(255)).astype(np.float32)
        y = ds.y_train[keep[:n]]
        cfg = TrainConfig(n_train=n, iterations=steps)
        row = {"n": n, "steps": steps, "floor_ms": floor_of(n) * 1e3}
        for backend in ("numba", "numpy") if kernels.AVAILABLE else ("numpy",):
            loops, bare = [], []
            train(ds, cfg.replace(iterations=2), backend=backend)  # compile, warm caches
            primary = backend == ("numba" if kernels.AVAILABLE else "numpy")
            for _ in range(reps):
                loops.append(train(ds, cfg, backend=backend).loop_seconds / steps)
                if primary:
                    bare.append(train(ds, cfg, backend=backend, record=False).loop_seconds / steps)
            row[backend] = {
                "ms_per_step": statistics.median(loops) * 1e3,
                "range_ms": [min(loops) * 1e3, max(loops) * 1e3],
            }
            if primary:
                row[backend]["ms_per_step_no_records"] = statistics.median(bare) * 1e3
                row[backend]["records_overhead"] = \
                    statistics.median(loops) / statistics.median(bare) - 1
        tb = timed(textbook_step(X, y, 0.01), reps * 3 if n <= 10_000 else reps)
        row["textbook_ms"] = tb["median"] * 1e3
        try:
            ts = timed(torch_step(X, y, 0.01), reps)
            row["torch_ms"] = ts["median"] * 1e3
        except ImportError:
            row["torch_ms"] = None
        rows.append(row)
    return rows


def sklearn_rows(ds, n: int, max_iter: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    keep, _ = stratified_split(ds.y_train, 10_000, VALIDATION_SEED)
    idx = keep[:n]
    X = ds.x_train[idx].reshape(len(idx), -1) / 255.0
    Xt = ds.x_test.reshape(len(ds.y_test), -1) / 255.0
    clf = LogisticRegression(max_iter=max_iter, tol=1e-6)
    t0 = time.perf_counter()
    clf.fit(X, ds.y_train[idx])
    seconds = time.perf_counter() - t0
    iters = int(np.max(clf.n_iter_))
    return {"n": n, "iterations": iters, "seconds": seconds,
            "ms_per_iteration": seconds / iters * 1e3,
            "test_accuracy": float(clf.score(Xt, ds.y_test)), "C": 1.0}


def peak_memory(n: int, steps: int) -> dict:
    """Peak resident memory of a fresh process that loads the data and trains one run.

    Read from /proc/self/status (VmHWM): ``ru_maxrss`` would report the parent's
    size, since Linux carries the high-water mark of a forked process across exec.
    """
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "import core.trainer, core.kernels\n"
        "imports = hwm()\n"
        "from core.data import load_dataset\n"
        "from core.config import TrainConfig\n"
        "from core.trainer import train\n"
        "ds = load_dataset('fashion-mnist')\n"
        "loaded = hwm()\n"
        "run = train(ds, TrainConfig(n_train=%d, iterations=%d))\n"
        "print(imports, loaded, hwm(), run.nbytes)\n" % (str(ROOT), n, steps)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imports, loaded, peak, run_bytes = (int(v) for v in out.stdout.split()[-4:])
    return {"n": n, "steps": steps, "peak_rss_mb": peak / 1024, "after_imports_mb": imports / 1024,
            "after_load_rss_mb": loaded / 1024, "run_record_mb": run_bytes / 2**20}


def memory_budget(ds) -> dict:
    """The largest runs the default memory budget admits, from the estimate made before
    training (:func:`core.run.footprint`, exact for a run that reaches its last iteration).

    The bound per run is the default WEIGHTSCOPE_CACHE_MB shared by the runs of the
    largest page (:func:`ui.resources.run_memory_bound`). Rows: gradient descent and
    L-BFGS on all of ``ds``'s training images, then on the largest upload the app takes
    per image (100 classes of 64 x 64 pixels, 200 images: the issue's case).
    """
    from core import env
    from core.data import Dataset
    from core.run import footprint
    from ui.resources import RUNS_PER_PAGE

    bound = (env.CACHE_MB.default << 20) // RUNS_PER_PAGE
    steps_max = int(SETTINGS_BY_NAME["iterations"].high)
    blank = np.zeros((250, 64, 64), dtype=np.uint8)
    upload = Dataset(name="upload", x_train=blank, y_train=np.arange(250) % 100,
                     x_test=blank[:1], y_test=np.zeros(1, dtype=np.int64),
                     class_names=tuple(f"c{k}" for k in range(100)), source="shape only",
                     fingerprint="0" * 12, is_fallback=False)
    rows = []
    for data, label, n in ((ds, ds.name, n_train_range(ds)[1]), (upload, "100 x 64 x 64", 200)):
        for optimizer, dtype in (("gd", "float32"), ("lbfgs", "float64")):
            cfg = TrainConfig(n_train=n, iterations=steps_max, optimizer=optimizer, dtype=dtype)
            T = cfg.largest_fitting(data, bound)["iterations"]
            most = cfg.replace(iterations=T) if T else None
            # Up to 100 steps every step is a snapshot: 100 steps may hold more than T.
            worst = max((cfg.replace(iterations=t) for t in {min(T, 100), T}),
                        key=lambda c: footprint(c, data).total) if T else None
            rows.append({
                "data": label, "optimizer": optimizer, "n": n, "largest_T": T,
                "snapshots": footprint(most, data).snapshots if most else None,
                "largest_mb": footprint(worst, data).total / 2**20 if worst else None,
                "work_cap_T": min(steps_max, env.MAX_WORK.default // n),
            })
    return {"bound_mb": bound / 2**20, "budget_mb": env.CACHE_MB.default,
            "runs_per_page": RUNS_PER_PAGE, "steps_max": steps_max, "rows": rows}


def lbfgs_sweep(ds, n: int, T: int) -> dict:
    """The question's curves two ways: T refits with max_iter = 1..T, or one recorded run.

    Both sides produce the coefficients and train and validation accuracy at every k.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    cfg = TrainConfig(n_train=n, iterations=T, optimizer="lbfgs", dtype="float64")
    train(ds, cfg.replace(iterations=2))  # compile the float64 kernel outside the timing
    t0 = time.perf_counter()
    run = train(ds, cfg)
    recorded = time.perf_counter() - t0
    idx, vidx = run.train_indices, run.val_indices
    x, y = ds.x_train[idx].reshape(len(idx), -1) / 255.0, ds.y_train[idx]
    xv, yv = ds.x_train[vidx].reshape(len(vidx), -1) / 255.0, ds.y_train[vidx]
    worst, at = 0.0, {}
    t0 = time.perf_counter()
    for k in range(1, run.iterations_done + 1):
        clf = LogisticRegression(C=np.inf, max_iter=k, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        clf.score(x, y), clf.score(xv, yv)
        err = float(np.abs(run.weights(k).reshape(len(clf.coef_), -1) - clf.coef_).max()
                    / np.abs(clf.coef_).max())
        worst = max(worst, err)
        if k in (1, 2, 5, 10, 20, 50, 100, T):
            at[k] = err
    refits = time.perf_counter() - t0
    return {"n": n, "T": run.iterations_done, "refits_s": refits, "recorded_s": recorded,
            "speedup": refits / recorded, "max_rel_diff": worst, "rel_diff_at": at}


def page_times(presets, reps: int) -> list[dict]:
    """First render of every page per preset (training included) and a cached rerun."""
    import streamlit as st

    from tests.test_app import app_test, settle

    os.environ["WEIGHTSCOPE_RUN_CACHE"] = "off"
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "views").glob("*.py"))
    rows = []
    for title, params in presets:
        st.cache_data.clear()
        st.cache_resource.clear()
        for page in pages:
            # As a deep link opens it (after an untimed tiny run that registers the pages).
            at = app_test(page, timeout=900)
            for k, v in params.items():
                at.query_params[k] = v
            t0 = time.perf_counter()
            at.run()
            first = time.perf_counter() - t0
            settle(at, timeout=900)  # background analyses (Why the noise, Where it heads)
            complete = time.perf_counter() - t0
            ok = not at.exception and not at.error
            reruns = []
            for _ in range(reps):
                t0 = time.perf_counter()
                at.run()
                reruns.append(time.perf_counter() - t0)
            rows.append({"preset": title, "page": page, "first_s": first,
                         "complete_s": complete,
                         "rerun_s": statistics.median(reruns), "ok": bool(ok)})
    return rows


def claims_times(ds, n: int, T: int) -> dict:
    """Cold and cached times of the analyses behind claims 2 and 3 on one run.

    Cold: computed from the run. Cached: what a page pays once they are kept (the
    spectrum handed its eigenbasis, a finished background task looked up).
    """
    from core import analysis
    from core.config import TrainConfig
    from core.tasks import TaskStore
    from core.trainer import train

    run = train(ds, TrainConfig(n_train=n, iterations=T))
    out = {"n": n, "T": T}

    def clock(fn):
        t0 = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - t0

    basis, out["eigen_basis_s"] = clock(lambda: analysis.eigen_basis(run, ds))
    sp, out["spectrum_cold_s"] = clock(lambda: analysis.spectrum(run, ds))
    _, out["spectrum_cached_s"] = clock(lambda: analysis.spectrum(run, ds, basis=basis))
    S, K = run.snapshot_weights.shape[:2]
    _, out["roughness_estimate_all_snapshots_s"] = clock(
        lambda: sp.roughness_estimate(run.snapshot_weights.reshape(S * K, -1)))
    _, out["equivalent_l2_last_step_s"] = clock(
        lambda: analysis.equivalent_l2(run, ds, run.iterations_done, basis=basis))
    store = TaskStore()
    path, out["l2_path_s"] = clock(lambda: analysis.l2_path(run, ds))
    out["l2_path_steps"] = len(path)
    mm, out["max_margin_s"] = clock(lambda: analysis.max_margin(run, ds))
    out["max_margin_determined"] = mm.determined
    task = store.get("mm", lambda task: mm)
    task.wait()
    _, out["cached_lookup_s"] = clock(lambda: store.get("mm", lambda task: None).result)
    if mm.determined:
        shares, out["pull_shares_s"] = clock(lambda: analysis.pull_shares(run, mm.support))
        out["support_vectors"] = int(mm.support.sum())
        out["pull_shares"] = [float(v) for v in shares]
        cos = analysis.direction_cosines(run, mm)
        out["cosine_to_limit_at_end"] = float(cos[-1])
    last = path[max(path)]
    out["l2_cosine_at_end"] = last.predicted_cosine
    out["l2_best_over_predicted"] = last.strength / last.predicted_strength
    return out


def preset_params(preset) -> dict[str, str]:
    from core.settings import to_params

    params = to_params(preset.settings, "")
    params.pop("data")
    return params


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Benchmark of {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']} ({m['kernel_threads']} kernel threads)"
        f"{' [quick mode]' if result['quick'] else ''}.",
        "",
        f"Machine: SGEMM {result['sgemm']['gflops']:.0f} GFLOP/s, streaming read "
        f"{result['stream']['gbytes_per_s']:.1f} GB/s. Floor per step = max(4 n d K / SGEMM, "
        "bytes of float32 X / read rate).",
        "",
        "| images | floor ms | Weightscope ms/step (range) | x floor | steps/s | records overhead "
        "| numpy backend ms | textbook numpy ms | PyTorch ms | speed-up vs textbook |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["trainer"]:
        best = r.get("numba") or r["numpy"]
        torch = f"{r['torch_ms']:.2f}" if r["torch_ms"] else "not importable"
        lines.append(
            f"| {r['n']:,} | {r['floor_ms']:.2f} | {best['ms_per_step']:.3f} "
            f"({best['range_ms'][0]:.3f} to {best['range_ms'][1]:.3f}) | "
            f"{best['ms_per_step'] / r['floor_ms']:.2f} | {1e3 / best['ms_per_step']:,.0f} | "
            f"{best['records_overhead']:+.0%} | {r['numpy']['ms_per_step']:.3f} | "
            f"{r['textbook_ms']:.3f} | {torch} | {r['textbook_ms'] / best['ms_per_step']:.1f}x |")
    sk = result.get("sklearn")
    if sk:
        lines += ["", f"scikit-learn lbfgs on {sk['n']:,} images (float64, C = 1): "
                      f"{sk['ms_per_iteration']:.0f} ms per iteration, {sk['iterations']} iterations, "
                      f"test accuracy {sk['test_accuracy']:.4f} (Fashion-MNIST benchmark: 0.836 to "
                      "0.842)."]
    sw = result.get("sweep")
    if sw:
        lines += ["", f"The question's curves for k = 1..{sw['T']} on {sw['n']:,} images: "
                      f"{sw['T']} scikit-learn refits (max_iter = k) took {sw['refits_s']:.1f} s, "
                      f"one recorded L-BFGS run {sw['recorded_s']:.2f} s: {sw['speedup']:.0f}x. "
                      f"Largest relative coefficient difference over all k: "
                      f"{sw['max_rel_diff']:.1e}."]
    cl = result.get("claims")
    if cl:
        lines += ["", f"Claims' analyses on {cl['n']:,} images, {cl['T']:,} steps (cold = computed "
                      "from the run, cached = kept by the app): "
                      f"eigenbasis {cl['eigen_basis_s']:.2f} s, spectrum {cl['spectrum_cold_s']:.2f} s "
                      f"cold / {cl['spectrum_cached_s']:.3f} s cached, roughness estimate at every "
                      f"snapshot {cl['roughness_estimate_all_snapshots_s']:.3f} s; early stopping vs "
                      f"L2 at the last step {cl['equivalent_l2_last_step_s']:.1f} s, the whole path "
                      f"({cl['l2_path_steps']} steps) {cl['l2_path_s']:.1f} s; max-margin limit "
                      f"{cl['max_margin_s']:.1f} s; a finished analysis looked up "
                      f"{cl['cached_lookup_s'] * 1e6:.0f} µs."]
    mem = result["memory"]
    lines += ["", f"Peak memory of a fresh process that loads the data and trains a "
                  f"{mem['n']:,}-image run of {mem['steps']:,} steps with all its records: "
                  f"{mem['peak_rss_mb']:.0f} MB resident ({mem['after_imports_mb']:.0f} MB after "
                  f"imports, {mem['after_load_rss_mb']:.0f} MB after loading the data; the run's "
                  f"records {mem['run_record_mb']:.1f} MB)."]
    if result.get("budget"):
        lines += ["", budget_lines(result["budget"])]
    if result.get("pages"):
        lines += ["", "First render: the page drawn, background analyses still running; "
                      "complete: their results drawn too.", "",
                  "| preset | page | first render s | complete s | cached rerun s | ok |",
                  "|---|---|---|---|---|---|"]
        for p in result["pages"]:
            lines.append(f"| {p['preset']} | {p['page']} | {p['first_s']:.2f} | "
                         f"{p.get('complete_s', p['first_s']):.2f} | {p['rerun_s']:.3f} "
                         f"| {'yes' if p['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def budget_lines(budget: dict) -> str:
    """The largest runs the default memory budget admits, as a Markdown table."""
    lines = [
        f"Largest runs the default memory budget admits: {budget['bound_mb']:.0f} MB per run "
        f"(WEIGHTSCOPE_CACHE_MB = {budget['budget_mb']:,} shared by the "
        f"{budget['runs_per_page']} runs of the Overfitting page), from the estimate made "
        f"before training (steps can be set up to {budget['steps_max']:,}; the work cap "
        "allows the steps in the last column). Largest run: the most memory any admitted "
        "step count takes (up to 100 steps every step is a snapshot).", "",
        "| data | optimizer | images | most steps admitted | snapshots | largest run MB "
        "| steps under the work cap |",
        "|---|---|---|---|---|---|---|"]
    for r in budget["rows"]:
        def num(v):
            return "none" if v is None else f"{v:,}"
        mb = "none" if r["largest_mb"] is None else f"{r['largest_mb']:.0f}"
        lines.append(f"| {r['data']} | {r['optimizer']} | {r['n']:,} | {num(r['largest_T'])} "
                     f"| {num(r['snapshots'])} | {mb} | {r['work_cap_T']:,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", choices=("memory", "sweep", "claims", "budget"), default=None,
                    help="measure one part only and print it")
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    if args.only == "memory":
        print(json.dumps(peak_memory(*((2000, 100) if args.quick else (50_000, 1000)))))
        return 0
    ds = load_dataset("fashion-mnist")
    if args.only == "budget":
        result = {"budget": memory_budget(ds)}
        print(json.dumps(result["budget"]))
        print(budget_lines(result["budget"]))
        return 0
    if args.only == "claims":
        print(json.dumps(claims_times(ds, *((300, 1000) if args.quick else (1000, 30_000)))))
        return 0
    if args.only == "sweep":
        print(json.dumps(lbfgs_sweep(ds, *((500, 10) if args.quick else (2000, 100)))))
        return 0
    result = {"quick": args.quick, "machine": machine(), "data": ds.source}
    print("machine:", result["machine"], flush=True)
    result["sgemm"] = sgemm_rate(reps)
    result["stream"] = stream_rate(reps)
    sgemm = result["sgemm"]["gflops"] * 1e9
    stream = result["stream"]["gbytes_per_s"] * 1e9

    def floor_of(n: int) -> float:
        return max(4.0 * n * D * K / sgemm, n * D * 4 / stream)

    # Steps per size: long enough that the ~75 snapshots are spread as in real use.
    sizes = [(1000, 2000), (2000, 500)] if args.quick else \
        [(1000, 10_000), (10_000, 1000), (50_000, 300)]
    if ds.is_fallback:
        sizes = [(1000, 100)]
    result["trainer"] = trainer_rows(ds, sizes, min(reps, 3), floor_of)
    print(json.dumps(result["trainer"], indent=1), flush=True)
    if not ds.is_fallback:
        result["sklearn"] = sklearn_rows(ds, 2000 if args.quick else 50_000,
                                         20 if args.quick else 2000)
        print("sklearn:", result["sklearn"], flush=True)
    result["sweep"] = lbfgs_sweep(ds, *((500, 10) if args.quick or ds.is_fallback
                                        else (2000, 100)))
    print("sweep:", result["sweep"], flush=True)
    if not ds.is_fallback:
        result["claims"] = claims_times(ds, *((300, 1000) if args.quick else (1000, 30_000)))
        print("claims:", result["claims"], flush=True)
    result["budget"] = memory_budget(ds)
    print("budget:", result["budget"], flush=True)
    result["memory"] = peak_memory(*((2000, 100) if args.quick or ds.is_fallback else (50_000, 1000)))
    print("memory:", result["memory"], flush=True)
    if args.quick:
        presets = [("quick digits", {"ds": "digits", "n": "300", "T": "100"})]
    else:
        presets = [(p.title, preset_params(p)) for p in PRESETS]
    result["pages"] = page_times(presets, reps=3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "bench.md").write_text(table)
    print(table)
    failed = [p for p in result["pages"] if not p["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
