"""Retake the README's screenshots: every page with the "Reproduce the answer" preset.

Run from the project root with the test environment (it needs Debian's ``chromium``, the
``playwright`` package and Fashion-MNIST)::

    .venv/bin/python -m docs.screenshots [page names, default all]

It starts its own ``streamlit run app.py`` on a free loopback port with a throw-away run cache,
so the first page trains the preset (about 15 s), the Overfitting page its three penalised
runs (about a minute), and two pages wait for their background analyses (about 20 s each).
Compare shows the preset beside L2 0.01; "Presentation" is Trajectory's presentation view
at step 50 on a 1,920 x 1,080 screen. Pictures go to ``docs/screenshots/<page>.png``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from core.settings import PRESETS, to_params
from tests import test_browser as tb

OUT = Path(__file__).resolve().parent / "screenshots"
PAGES = {"Home": "/", "First_step": "/First_step", "Trajectory": "/Trajectory",
         "Overfitting": "/Overfitting", "Hardest_examples": "/Hardest_examples",
         "Spectrum": "/Spectrum", "Limit": "/Limit", "Compare": "/Compare",
         "Presentation": "/Trajectory"}
#: View values beyond the preset's settings: Compare puts the preset (no penalty) beside
#: L2 0.01, and the presentation view shows step 50 on a 1,920 x 1,080 screen.
EXTRA = {"Compare": {"b.l2": "0.01"}, "Presentation": {"present": "1", "t": "50"}}
SCREEN = {"Presentation": (1920, 1080)}
#: Exact text of an element that appears when a page's background analysis is drawn.
READY = {case.name: case.ready for case in tb.CASES if case.ready}


def main() -> int:
    from playwright.sync_api import sync_playwright

    preset = next(p for p in PRESETS if p.title == "Reproduce the answer")
    params = to_params(preset.settings, "")
    params.pop("data")  # the server's own data set; a link without it is never refused
    tb.SHOTS = OUT
    with tempfile.TemporaryDirectory() as tmp:
        with tb.Server(Path(tmp)) as server:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(tb.CHROMIUM),
                                            args=tb.CHROMIUM_ARGS)
                wanted = sys.argv[1:] or list(PAGES)  # e.g. "Spectrum Limit": only those
                for name, path in PAGES.items():
                    if name not in wanted:
                        continue
                    width, height = SCREEN.get(name, (tb.WIDTH, None))
                    page = tb.new_page(browser, width=width)
                    if height:
                        page.set_viewport_size({"width": width, "height": height})
                    page.set_default_timeout(600_000)
                    query = urlencode({**params, **EXTRA.get(name, {})})
                    page.goto(f"{server.url}{path}?{query}", wait_until="domcontentloaded")
                    tb.wait_idle(page, after=0, timeout=600)
                    # Pages that train several runs or solve in the background draw their
                    # pictures late: wait for them, then for the page to settle.
                    ready = page.get_by_text(READY[name], exact=True).first if READY.get(name) else \
                        page.locator("[data-testid='stMain'] [data-testid='stImage'] img").first
                    ready.wait_for(timeout=600_000)
                    tb.wait_idle(page, timeout=600)
                    errors = tb.texts(page, "[data-testid='stException'], "
                                            "[data-testid='stAlertContentError']")
                    if errors:
                        print(f"{name}: the page shows errors, no screenshot: {errors}",
                              file=sys.stderr)
                        return 1
                    tb.assert_images_loaded(page)
                    if height:  # the screen as the audience sees it, not the whole page
                        OUT.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(OUT / f"{name}.png"))
                        print(OUT / f"{name}.png")
                    else:
                        print(tb.full_screenshot(page, name))
                    page.context.close()
                browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
