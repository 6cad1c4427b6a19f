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
