"""What a viewer waits for, measured in a real browser on a live server (issue 11).

Each measurement starts ``streamlit run app.py`` from a checkout (this one, and with
``--before`` an older one, so both sets of figures come from one run on one machine),
drives Chromium with Playwright, and reads the server's own timing lines where the app
writes them (``WEIGHTSCOPE_LOG_RUNS=1``: "run of <page>: full|part <name>, N ms").

- ``fresh``: empty run cache and empty Numba cache; seconds from the server answering its
  health check until Home is idle, then until First step is idle.
- ``notches``: the "Reproduce the answer" preset on Trajectory, trained first (untimed);
  then N notches of the step slider, each from the key press until the page is idle again
  and shows the new step; the server's time per run from its log.
- ``cached``: reloading that page with its run cached (a full run), N times.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent


def _median(xs):
    return float(statistics.median(xs)) if xs else None


def _server_times(log: str, page: str, kind: str) -> list[float]:
    return [float(m) / 1000 for m in re.findall(rf"run of {page}: {kind}, (\d+) ms", log)]


def _open(pg, url: str, wait_idle) -> float:
    t0 = time.perf_counter()
    pg.goto(url, wait_until="domcontentloaded")
    wait_idle(pg, after=0, timeout=900)
    return time.perf_counter() - t0


def measure(root: Path, notches: int = 20, reloads: int = 5, env: dict | None = None) -> dict:
    """Every figure above for the checkout at ``root``."""
    from playwright.sync_api import sync_playwright

    from core.settings import PRESETS, to_params
    from core.data import load_dataset
    from tests.test_browser import CHROMIUM_ARGS, Server, act, new_page, wait_idle

    preset = PRESETS[0]
    ds = load_dataset(preset.settings.dataset)
    params = to_params(preset.settings, ds.fingerprint)
    out: dict = {"root": str(root)}
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"NUMBA_CACHE_DIR": str(Path(tmp) / "numba"),
                           "WEIGHTSCOPE_WARM": "off", **(env or {})})
        try:
            with Server(Path(tmp), root=root) as server, sync_playwright() as p:
                healthy = time.perf_counter()
                browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                            args=CHROMIUM_ARGS)
                pg = new_page(browser)
                pg.goto(server.url, wait_until="domcontentloaded")
                wait_idle(pg, after=0, timeout=900)
                out["home_after_healthy_s"] = time.perf_counter() - healthy
                out["first_step_s"] = _open(pg, f"{server.url}/First_step", wait_idle)
                out["preset_first_open_s"] = _open(
                    pg, f"{server.url}/Trajectory?{urlencode(params)}", wait_idle)
                main = pg.locator("[data-testid='stMain']")
                thumb = main.locator("[data-testid='stSlider'] input[type='range']").first
                heading = main.locator("h3", has_text="Weight images at step")
                full_before = len(_server_times(server.log_tail(1 << 24), "Trajectory", "full"))
                times = []
                for _ in range(notches):
                    before = heading.inner_text()
                    t0 = time.perf_counter()
                    act(pg, lambda: thumb.press("ArrowLeft"), timeout=120)
                    heading.filter(has_not_text=before).wait_for()
                    times.append(time.perf_counter() - t0)
                log = server.log_tail(1 << 24)
                part = _server_times(log, "Trajectory", "part t")
                full = _server_times(log, "Trajectory", "full")
                out["notch_s"] = {"median": _median(times), "max": max(times), "n": len(times)}
                # No timing lines from a checkout that does not write them (before).
                out["notch_server_s"] = _median(part[-notches:])
                out["full_runs_per_notch"] = ((len(full) - full_before) / notches
                                              if full or part else None)
                reload_times = []
                for _ in range(reloads):
                    t0 = time.perf_counter()
                    pg.reload(wait_until="domcontentloaded")
                    wait_idle(pg, after=0, timeout=120)
                    reload_times.append(time.perf_counter() - t0)
                full2 = _server_times(server.log_tail(1 << 24), "Trajectory", "full")
                out["cached_reload_s"] = _median(reload_times)
                out["cached_reload_server_s"] = _median(full2[len(full):])
                browser.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return out


def markdown(result: dict) -> str:
    """The live figures as a table, before and after side by side."""
    def cell(side: dict | None, key: str, sub: str | None = None) -> str:
        if not side:
            return "n/a"
        value = side.get(key)
        if isinstance(value, dict):
            value = value.get(sub or "median")
        return "n/a" if value is None else f"{value:.2f}"

    before, after = result.get("before"), result.get("after")
    rows = [("Home on a fresh server, s after healthy (target 5)", "home_after_healthy_s", None),
            ("First step next, s (target 2)", "first_step_s", None),
            ("Preset 'Reproduce the answer' on Trajectory, first open, s", "preset_first_open_s",
             None),
            ("Step notch to idle in the browser, median s (target 0.3)", "notch_s", "median"),
            ("Step notch to idle, slowest s", "notch_s", "max"),
            ("Step notch, server time of the part, median s (target 0.1)", "notch_server_s",
             None),
            ("Full runs per notch (target 0)", "full_runs_per_notch", None),
            ("Reload with the run cached, s", "cached_reload_s", None),
            ("Reload with the run cached, server time, s (target 0.3)",
             "cached_reload_server_s", None)]
    lines = ["| what the viewer does | before | after |", "|---|---|---|"]
    for label, key, sub in rows:
        lines.append(f"| {label} | {cell(before, key, sub)} | {cell(after, key, sub)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of the version to compare with (git worktree add ...)")
    ap.add_argument("--notches", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    result = {"notches": args.notches}
    if args.before is not None:
        result["before"] = measure(args.before.resolve(), notches=args.notches)
    result["after"] = measure(ROOT, notches=args.notches)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "live.json").write_text(json.dumps(result, indent=2))
    (args.out / "live.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
