"""Real-browser end-to-end test: a real Streamlit server and headless Chromium.

AppTest (tests/test_app.py) runs the page scripts without a browser, so it cannot
see what only a browser does: deep links on a fresh server (each must run inside the
frame, app.py, and show the shared sidebar), the address bar rewritten by the app and
its history (one Back undoes one action), the sidebar's widgets showing the settings
from the link, the pictures actually arriving, and a page switch through the sidebar.

The test starts ``streamlit run app.py`` once per module on a free loopback port
with a private run cache, opens every page by a deep link with non-default
settings (the first page load goes to a page other than home, the case the
Streamlit facts warn about), checks it, saves a full-length screenshot to
``artifacts/browser/<page>.png``, and finally switches page through the sidebar.

Needs Debian's ``chromium`` and the ``playwright`` Python package (never run
``playwright install``). Skips without them, or fails instead when
``WEIGHTSCOPE_REQUIRE_BROWSER=1``. ``WEIGHTSCOPE_CHROMIUM`` overrides the browser
path (default ``/usr/bin/chromium``). Uses the real Fashion-MNIST (``fashion_dir``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from ui.draw import FILL_MIN_WIDTH

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path(os.environ.get("WEIGHTSCOPE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT = 60.0  # seconds for the server to answer its health check
RUN_TIMEOUT = 120.0  # seconds for one page's script (training included) to finish
MAX_SHOT_HEIGHT = 12_000
WIDTH = 1400

#: Non-default settings every deep link carries (defaults: n 1000, T 3000, l2 0, seed 0).
SETTINGS = {"ds": "fashion-mnist", "n": "400", "T": "300", "lr": "auto", "l2": "0.001",
            "seed": "2"}


@dataclass(frozen=True)
class Case:
    """One page opened by a deep link: its URL path, extra parameters, and what it must show."""

    name: str  # screenshot file name and test id
    path: str  # URL path of the page
    title: str  # the page's st.title
    params: dict[str, str] = field(default_factory=dict)  # model and view parameters
    #: Main-area widgets (by label) and the text they must show for the view parameters.
    view_inputs: dict[str, str] = field(default_factory=dict)  # text/select inputs: value
    view_radios: dict[str, str] = field(default_factory=dict)  # radio groups: checked option
    view_sliders: dict[str, str] = field(default_factory=dict)  # select sliders: thumb text
    #: Exact text of an element that appears once the page's background analysis has been
    #: drawn ("" for none); a substring would match the explanation above it.
    ready: str = ""


#: In this order: the very first page load on the fresh server is a deep link to a
#: page other than home (with a pages/ folder, Streamlit would run it without app.py).
CASES = [
    Case("First_step", "/First_step", "The first gradient step is an average image",
         {"cls": "3"}, view_inputs={"Class": "Dress"}),
    Case("Trajectory", "/Trajectory", "From templates to noise",
         {"model": "ovr", "t": "100"}, view_sliders={"Gradient step (stored snapshots": "100"}),
    Case("Overfitting", "/Overfitting", "The noise comes first; overfitting is where it stops paying",
         {"show": "its best validation step"},
         view_radios={"Show each run at": "its best validation step"}),
    Case("Hardest_examples", "/Hardest_examples", "Which examples still carry loss",
         {"t": "50", "split": "val", "order": "easiest", "ex": "2"},
         view_radios={"Split": "validation", "Show": "easiest"},
         view_sliders={"Gradient step": "50"}),
    Case("Spectrum", "/Spectrum", "Why the noise: ever finer directions",
         {"t": "100", "k": "50"}, view_sliders={"Step (stored": "100", "Directions kept": "50"},
         ready="Cosine at that strength"),
    Case("Limit", "/Limit", "Where it heads: the max-margin limit", {"t": "100"},
         view_sliders={"Step (stored": "100"}, ready="Support vectors"),
    Case("Compare", "/Compare", "Compare two settings",
         {"b.ds": "fashion-mnist", "b.n": "1000", "b.l2": "0.01", "t": "100"},
         view_sliders={"Step shown on both sides": "100"}),
    Case("Home", "/", "Weightscope"),
]

#: Sidebar widget label -> URL parameter, and how the widget displays the URL value.
SIDEBAR_INPUTS = {"Training images": "n", "Gradient steps": "T", "Learning rate": "lr",
                  "L2 penalty": "l2", "Seed": "seed"}
DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "digits": "Digits (8 x 8, bundled)"}
MODEL_LABELS = {"softmax": "softmax", "ovr": "one-vs-rest"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The Chromium binary, once the playwright package is importable too.

    Skips when either is missing, or fails instead when
    ``WEIGHTSCOPE_REQUIRE_BROWSER=1``, so a run meant to use the browser cannot
    pass by skipping.
    """
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install playwright; "
                       "do not run `playwright install`)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("WEIGHTSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (WEIGHTSCOPE_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


class Server:
    """A ``streamlit run app.py`` child process in its own process group."""

    def __init__(self, tmp: Path):
        self.log_path = tmp / "streamlit.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ,
                   WEIGHTSCOPE_RUN_CACHE=str(tmp / "runs"),
                   WEIGHTSCOPE_OFFLINE="1",
                   WEIGHTSCOPE_CACHE_DIR=str(tmp / "cache"),
                   PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {self.proc.returncode} before it "
                            f"was healthy:\n{self.log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        return
            except OSError:
                pass
            # A starting server offers nothing to wait on but its health endpoint: poll it.
            # The interval only sets how soon after start-up we notice; the deadline decides.
            time.sleep(0.25)
        pytest.fail(f"streamlit did not answer /_stcore/health with 'ok' within {timeout:.0f} s:"
                    f"\n{self.log_tail()}", pytrace=False)

    def __enter__(self) -> "Server":
        self.wait_healthy(START_TIMEOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def server(chromium, fashion_dir, tmp_path_factory):
    """A fresh Streamlit server for this module, always stopped afterwards."""
    with Server(tmp_path_factory.mktemp("browser")) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


#: Counts the app's finished script runs in ``window.__wsRuns`` (each change of stApp's
#: script state from "running" to "notRunning"), so a test waits for the run an action
#: started instead of sleeping.
COUNT_RUNS = """
window.__wsRuns = 0;
new MutationObserver((changes) => {
  for (const c of changes) {
    if (c.oldValue === "running" &&
        c.target.getAttribute("data-test-script-state") === "notRunning") window.__wsRuns++;
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""


def new_page(browser, width: int = WIDTH):
    """A page in a fresh browser context (its own Streamlit session) that counts runs."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    context.add_init_script(COUNT_RUNS)
    pg = context.new_page()
    pg.set_default_timeout(RUN_TIMEOUT * 1000)
    return pg


@pytest.fixture
def page(browser):
    pg = new_page(browser)
    try:
        yield pg
    finally:
        pg.context.close()


# --------------------------------------------------------------------------- helpers

_IDLE_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app) return "no stApp";
  if (app.getAttribute("data-test-script-state") !== "notRunning")
    return "script " + app.getAttribute("data-test-script-state");
  if (app.getAttribute("data-test-connection-state") !== "CONNECTED")
    return "connection " + app.getAttribute("data-test-connection-state");
  const busy = document.querySelectorAll(
    "[data-testid='stProgress'], [data-testid='stSpinner'], [data-stale='true']");
  if (busy.length) return busy.length + " progress/spinner/stale elements";
  if (!document.querySelector("[data-testid='stMain'] h1")) return "no title yet";
  return "";
}"""


def runs(pg) -> int:
    """Script runs this page has seen finish (see COUNT_RUNS)."""
    return pg.evaluate("() => window.__wsRuns ?? 0")


def wait_idle(pg, after: int | None = None, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until the app is idle: its script finished, connected, no progress bar,
    spinner or stale element, and a title drawn. With ``after`` (a :func:`runs` count
    taken before an action), also until a run has finished since then: the run that the
    action started, not the idle page before it. If the action loaded a new document
    (``window.__wsMark``, set by :func:`act`, is gone), the counter started again from
    zero there, and its first finished run is the one."""
    condition = f"""() => {{
        const why = ({_IDLE_JS})();
        if (why) return false;
        if ({'true' if after is None else 'false'}) return true;
        const n = window.__wsRuns ?? 0;
        return window.__wsMark === undefined ? n >= 1 : n > {after if after is not None else 0};
    }}"""
    try:
        pg.wait_for_function(condition, timeout=timeout * 1000, polling=100)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError, with the reason
        why = pg.evaluate(_IDLE_JS) or f"no new run after {after}, now {runs(pg)}"
        raise AssertionError(f"{pg.url}: page still busy after {timeout:.0f} s ({why})") from exc


def act(pg, action, timeout: float = RUN_TIMEOUT) -> None:
    """Do ``action`` (a callable) and wait for the run it starts to finish (also when it
    loads a new document: once in CI a page-link click did)."""
    before = runs(pg)
    pg.evaluate("window.__wsMark = 1")
    action()
    wait_idle(pg, after=before, timeout=timeout)


def url_params(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    return {k: v[-1] for k, v in query.items()}


def texts(pg, selector: str) -> list[str]:
    return [t.strip() for t in pg.locator(selector).all_inner_texts()]


def assert_no_errors(pg, server: Server) -> None:
    exceptions = texts(pg, "[data-testid='stException']")
    assert not exceptions, (f"{pg.url}: exception shown: {exceptions}\n"
                            f"server log:\n{server.log_tail()}")
    # st.error renders stAlertContentError; st.warning is where the app reports link
    # parameters it ignored, so neither may appear on a page opened by a valid link.
    errors = texts(pg, "[data-testid='stAlertContentError']")
    assert not errors, f"{pg.url}: error shown: {errors}"
    warnings = texts(pg, "[data-testid='stAlertContentWarning']")
    assert not warnings, f"{pg.url}: warning shown: {warnings}"


def input_value(scope, label: str) -> str:
    box = scope.locator(f"input[aria-label='{label}']")
    # A widget's code loads on first use in a browser context: the run can finish before
    # the widget is in the page, so wait for it (it is there, or the wait fails).
    box.first.wait_for(state="attached")
    assert box.count() == 1, f"expected one input labelled {label!r}, found {box.count()}"
    return box.input_value()


def checked_option(scope, label: str) -> str:
    group = scope.locator(f"[data-testid='stRadioGroup'][aria-label='{label}']")
    group.first.wait_for(state="attached")
    assert group.count() == 1, f"expected one radio group {label!r}, found {group.count()}"
    checked = group.locator("[data-testid='stRadioOption']:has(input:checked)")
    assert checked.count() == 1, f"radio {label!r}: {checked.count()} options checked"
    return checked.inner_text().strip()


def slider_value(scope, label_start: str) -> str:
    slider = scope.locator("[data-testid='stSlider']").filter(
        has=scope.page.locator("[data-testid='stWidgetLabel']", has_text=label_start))
    slider.first.wait_for(state="attached")
    assert slider.count() == 1, f"expected one slider {label_start!r}, found {slider.count()}"
    return slider.locator("[data-testid='stSliderThumbValue']").inner_text().strip()


def assert_sidebar_shows(pg, expected: dict[str, str]) -> None:
    """The sidebar widgets display the settings of URL parameters ``expected``."""
    sidebar = pg.locator("[data-testid='stSidebar']")
    shown = {"ds": input_value(sidebar, "Data set"), "model": checked_option(sidebar, "Model")}
    want = {"ds": DATASET_LABELS[expected["ds"]], "model": MODEL_LABELS[expected["model"]]}
    for label, key in SIDEBAR_INPUTS.items():
        shown[key] = input_value(sidebar, label)
        want[key] = expected[key]
    assert shown == want, f"{pg.url}: the sidebar shows {shown}, the link says {want}"


def assert_images_loaded(pg) -> int:
    """At least one st.image in the main area, and every one of them decoded."""
    imgs = pg.locator("[data-testid='stMain'] [data-testid='stImage'] img")
    assert imgs.count() >= 1, f"{pg.url}: no st.image picture on the page"
    pg.wait_for_function(
        """() => Array.from(document.querySelectorAll(
              "[data-testid='stMain'] [data-testid='stImage'] img"))
            .every(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)""",
        timeout=30_000)
    # A picture wider than its column must be shrunk to fit, not run off the page.
    overflow = pg.evaluate("""() => {
        const main = document.querySelector("[data-testid='stMainBlockContainer']")
                     .getBoundingClientRect();
        return Array.from(document.querySelectorAll(
              "[data-testid='stMain'] [data-testid='stImage'] img"))
          .filter(i => i.getBoundingClientRect().right > main.right + 1)
          .map(i => i.naturalWidth + " px wide, right edge " +
                    Math.round(i.getBoundingClientRect().right));
    }""")
    assert not overflow, f"{pg.url}: pictures run off the page ({main_right(pg)}): {overflow}"
    return imgs.count()


def main_right(pg) -> str:
    right = pg.evaluate("() => document.querySelector("
                        "\"[data-testid='stMainBlockContainer']\").getBoundingClientRect().right")
    return f"the main column ends at {right:.0f} px"


def full_screenshot(pg, name: str) -> Path:
    """Screenshot the whole page: Streamlit scrolls inside stMain, so grow the viewport."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = 1000
    for _ in range(3):  # the layout may reflow (charts re-measure) when the viewport grows
        wanted = pg.evaluate(
            "() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
        wanted = max(600, min(int(wanted), MAX_SHOT_HEIGHT))
        if wanted == height:
            break
        height = wanted
        pg.set_viewport_size({"width": WIDTH, "height": height})
        # Charts re-measure after a resize: let the browser lay out two frames.
        pg.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                    "requestAnimationFrame(() => r(true))))")
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path))
    return path


def open_deep_link(pg, server: Server, path: str, params: dict[str, str]) -> None:
    """Open a link in ``pg`` and wait until its first script run has finished."""
    pg.goto(f"{server.url}{path}?{urlencode(params)}", wait_until="domcontentloaded")
    wait_idle(pg, after=0)  # the new document counts its runs from zero


# --------------------------------------------------------------------------- tests

_seen_fingerprints: set[str] = set()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_deep_link_renders_and_shows_its_settings(case: Case, server: Server, page):
    params = {**SETTINGS, **case.params}
    open_deep_link(page, server, case.path, params)
    if case.ready:
        # The page drew everything else and polls its background analysis; its result
        # arrives with a rerun of the whole page.
        page.get_by_text(case.ready, exact=True).first.wait_for(timeout=RUN_TIMEOUT * 1000)
        wait_idle(page)

    # The right page ran (a deep link runs the page file itself), without errors.
    titles = texts(page, "[data-testid='stMain'] h1")
    assert titles and titles[0] == case.title, f"{page.url}: titles {titles}"
    assert_no_errors(page, server)

    # The app rewrote the address with every setting, keeping each one of the link's.
    got = url_params(page.url)
    assert urlsplit(page.url).path == case.path
    assert got.get("v") == "1", got
    assert re.fullmatch(r"[0-9a-f]{8}", got.get("data", "")), got
    _seen_fingerprints.add(got["data"])
    assert len(_seen_fingerprints) == 1, f"data fingerprint changed: {_seen_fingerprints}"
    for key in ("ds", "model", "n", "T", "lr", "l2", "l1", "seed"):
        assert key in got, f"{page.url}: setting {key!r} missing from the rewritten URL"
    for key, value in params.items():
        assert got.get(key) == value, f"{page.url}: {key}={got.get(key)!r}, link had {value!r}"

    # The settings are displayed: sidebar and this page's view widgets.
    assert_sidebar_shows(page, {**params, "model": params.get("model", "softmax")})
    main = page.locator("[data-testid='stMain']")
    for label, value in case.view_inputs.items():
        assert input_value(main, label) == value, f"{page.url}: {label!r}"
    for label, value in case.view_radios.items():
        assert checked_option(main, label) == value, f"{page.url}: {label!r}"
    for label, value in case.view_sliders.items():
        assert slider_value(main, label) == value, f"{page.url}: {label!r}"
    if case.name == "Hardest_examples":
        assert input_value(main, "Example").startswith("#3:"), "ex=2 is the third example"

    # The weight images arrived, then keep a picture of the whole page.
    assert_images_loaded(page)
    full_screenshot(page, case.name)
    assert_no_errors(page, server)


def test_sidebar_page_switch_keeps_settings(server: Server, page):
    """Clicking another page in the sidebar keeps the link's settings (Streamlit clears
    query parameters on a page change; the frame's links carry them). The sidebar lists the
    pages by name, home included, each link carrying the settings."""
    open_deep_link(page, server, "/First_step", SETTINGS)
    assert url_params(page.url)["n"] == "400"

    nav = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink'] a")
    nav.nth(4).wait_for()
    # A material icon is a ligature: its name is part of the text, on its own line.
    labels = [t.splitlines()[-1] for t in texts(page, "[data-testid='stSidebar'] "
                                                      "[data-testid='stPageLink'] a")]
    assert labels == [
        "Home", "First step", "Trajectory", "Overfitting and regularization",
        "Hardest examples", "Why the noise", "Where it heads", "Compare two settings"], \
        "the sidebar names every page, home as Home (not 'app')"
    assert page.locator("[data-testid='stSidebarNav']").count() == 0, \
        "Streamlit's own page list (which calls home 'app') is switched off"
    for i in range(nav.count()):
        href = nav.nth(i).get_attribute("href")
        assert url_params(href).get("n") == "400", f"nav link {href} lost the settings"
    act(page, lambda: nav.filter(has_text="Trajectory").click())
    page.wait_for_url(re.compile(r"/Trajectory(\?|$)"))
    page.locator("[data-testid='stMain'] h1", has_text="From templates to noise").wait_for()

    assert_no_errors(page, server)
    assert_sidebar_shows(page, {**SETTINGS, "model": "softmax"})
    got = url_params(page.url)
    assert urlsplit(page.url).path == "/Trajectory"
    for key, value in SETTINGS.items():
        assert got.get(key) == value, f"after the switch {page.url}: {key}={got.get(key)!r}"
    assert_images_loaded(page)


def test_copied_link_opens_the_same_view_in_a_new_browser(server: Server, browser, page):
    """The sidebar's "Copy link to this view" box holds an absolute URL that, opened in a
    fresh browser context, shows the same settings and the same selected step."""
    open_deep_link(page, server, "/Trajectory", {**SETTINGS, "t": "50"})
    page.locator("[data-testid='stSidebar'] summary", has_text="Copy link to this view").click()
    link = page.locator("[data-testid='stSidebar'] [data-testid='stCode'] code").inner_text().strip()
    assert link.startswith(server.url + "/Trajectory?"), link
    assert url_params(link)["t"] == "50" and url_params(link)["n"] == "400"

    other = new_page(browser)
    try:
        other.goto(link, wait_until="domcontentloaded")
        wait_idle(other, after=0)
        assert_no_errors(other, server)
        assert url_params(other.url) == url_params(link)
        main = other.locator("[data-testid='stMain']")
        assert slider_value(main, "Gradient step") == "50"
        assert_sidebar_shows(other, {**SETTINGS, "model": "softmax"})
    finally:
        other.context.close()


def test_preset_link_on_home_opens_its_page_with_its_settings(server: Server, page):
    open_deep_link(page, server, "/", {**SETTINGS})
    act(page, lambda: page.locator("[data-testid='stMain'] a",
                                   has_text="One-vs-rest as in the derivation").click())
    page.wait_for_url(re.compile(r"/First_step\?"))
    page.locator("[data-testid='stMain'] h1", has_text="average image").wait_for()
    assert_no_errors(page, server)
    got = url_params(page.url)
    assert got["model"] == "ovr" and got["n"] == "1000" and got["T"] == "10000"
    assert checked_option(page.locator("[data-testid='stSidebar']"), "Model") == "one-vs-rest"


def _type_learning_rate(pg, text: str) -> None:
    box = pg.locator("[data-testid='stSidebar'] [data-testid='stTextInput']",
                     has_text="Learning rate").locator("input")
    box.fill(text)
    act(pg, lambda: box.press("Enter"))


def test_step_slider_survives_a_diverged_run(server: Server, page):
    """A learning rate that diverges at once stops the page before the step slider; going
    back to "auto" must show the slider at the step the page uses (it used to come back
    at step 1 while the page showed step 4, and the next change wrote t=1)."""
    open_deep_link(page, server, "/Trajectory", {**SETTINGS, "t": "4"})
    main = page.locator("[data-testid='stMain']")
    assert slider_value(main, "Gradient step (stored snapshots") == "4"
    _type_learning_rate(page, "1000")
    assert any("Diverged" in t for t in texts(page, "[data-testid='stAlertContentError']"))
    for lr in ("auto", "1e-9"):
        _type_learning_rate(page, lr)
        assert_no_errors(page, server)
        assert slider_value(main, "Gradient step (stored snapshots") == "4", lr
        assert main.locator("h3", has_text="Weight images at step 4").count() == 1, lr
        assert url_params(page.url)["t"] == "4", lr


def test_one_click_is_one_history_entry(server: Server, page):
    """Changing "Show" on Hardest examples is one URL change, however many view values it
    moves: one Back returns to the view before the click."""
    open_deep_link(page, server, "/Hardest_examples",
                   {**SETTINGS, "cls": "6", "split": "val", "ex": "1"})
    before = url_params(page.url)
    assert before["ex"] == "1"
    act(page, lambda: page.locator("[data-testid='stMain'] [data-testid='stRadio']",
                                   has_text="Show").locator("label", has_text="easiest").click())
    after = url_params(page.url)
    assert after["order"] == "easiest" and before.get("order", "hardest") == "hardest"
    act(page, page.go_back)
    assert url_params(page.url) == before, "one Back should undo one click"


# --------------------------------------------------------------------------- history


def history_length(pg) -> int:
    return pg.evaluate("() => window.history.length")


#: How many st.metric each page draws (Home: accuracies, steps, time; Trajectory: five).
METRICS = {"/": 4, "/Trajectory": 5}


def metric_values(pg) -> list[str]:
    """The main area's st.metric values, once the page has drawn all of them (a metric with
    a help tooltip can arrive after the others: its code loads on first use)."""
    count = METRICS[urlsplit(pg.url).path]
    selector = "[data-testid='stMain'] [data-testid='stMetricValue']"
    pg.wait_for_function(f"() => document.querySelectorAll({selector!r}).length >= {count}")
    values = texts(pg, selector)
    assert len(values) == count, values
    return values


def step_view(pg) -> dict[str, str]:
    """What the Trajectory page shows: the slider, the step in the heading, the metrics."""
    main = pg.locator("[data-testid='stMain']")
    heading = main.locator("h3", has_text="Weight images at step").inner_text()
    return {"slider": slider_value(main, "Gradient step"),
            "heading": heading.rsplit(" ", 1)[-1],
            "metrics": " | ".join(metric_values(pg))}


def test_each_slider_notch_is_one_history_entry_and_back_restores_it(server: Server, page):
    """Three notches of the Trajectory step slider add three history entries; each Back
    then shows the step before, with the slider, the heading, the numbers and the address
    bar agreeing (the first version showed step 3,000 with the slider at 2,129)."""
    open_deep_link(page, server, "/Trajectory", SETTINGS)
    thumb = page.locator("[data-testid='stMain'] [data-testid='stSlider'] input[type='range']")
    seen = [(step_view(page), url_params(page.url).get("t"))]
    for _ in range(3):
        length = history_length(page)
        act(page, lambda: thumb.press("ArrowLeft"))
        assert history_length(page) == length + 1, "one notch, one history entry"
        view = step_view(page)
        assert view["slider"] == view["heading"], view
        assert url_params(page.url)["t"] == view["slider"].replace(",", "")
        seen.append((view, url_params(page.url).get("t")))
    assert len({v["slider"] for v, _ in seen}) == 4, "every notch moved the step"
    for view, t in reversed(seen[:-1]):
        act(page, page.go_back)
        assert step_view(page) == view, "Back shows the step before, controls included"
        assert url_params(page.url).get("t") == t
        assert_no_errors(page, server)


@pytest.mark.parametrize("path,view", [("/", {}), ("/Trajectory", {"t": "50"})])
def test_a_sidebar_change_is_one_history_entry_and_back_restores_it(server: Server, page,
                                                                    path, view):
    """Changing a setting in the sidebar adds one history entry; Back returns to the old
    setting in the address bar, the sidebar and the page's numbers; Forward redoes it."""
    open_deep_link(page, server, path, {**SETTINGS, **view})
    sidebar = page.locator("[data-testid='stSidebar']")
    before = {"url": url_params(page.url), "seed": input_value(sidebar, "Seed"),
              "main": metric_values(page)}
    length = history_length(page)
    box = sidebar.locator("input[aria-label='Seed']")
    box.fill("5")
    act(page, lambda: box.press("Enter"))
    assert history_length(page) == length + 1, "one change, one history entry"
    after = {"url": url_params(page.url), "seed": input_value(sidebar, "Seed"),
             "main": metric_values(page)}
    assert after["url"]["seed"] == "5" and after["seed"] == "5"
    act(page, page.go_back)
    now = {"url": url_params(page.url), "seed": input_value(sidebar, "Seed"),
           "main": metric_values(page)}
    assert now["url"] == before["url"] and now["seed"] == before["seed"] == "2"
    # Training time differs between runs; accuracy and steps are the run's own.
    assert now["main"][:3] == before["main"][:3]
    act(page, page.go_forward)
    assert url_params(page.url)["seed"] == "5" and input_value(sidebar, "Seed") == "5"
    assert_no_errors(page, server)


def test_a_page_switch_is_one_history_entry_and_back_returns(server: Server, page):
    """A click on a page link adds one history entry, and Back returns to the page before
    with its settings and view."""
    open_deep_link(page, server, "/Trajectory", {**SETTINGS, "t": "50"})
    length = history_length(page)
    nav = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink'] a")
    nav.filter(has_text="Hardest examples").click()
    # A page switch can replace the element whose script state the run counter watches
    # (act() once saw no new run in CI): wait for the new page's title, then for idle.
    page.locator("[data-testid='stMain'] h1", has_text="Which examples").wait_for()
    wait_idle(page)
    assert history_length(page) == length + 1, "one page switch, one history entry"
    act(page, page.go_back)
    page.locator("[data-testid='stMain'] h1", has_text="From templates to noise").wait_for()
    assert urlsplit(page.url).path == "/Trajectory" and url_params(page.url)["t"] == "50"
    assert step_view(page)["slider"] == "50"
    assert_no_errors(page, server)


def test_back_after_picking_an_example_shows_the_example_the_picker_names(server: Server,
                                                                           page):
    """On Hardest examples, picking example #9 and going Back shows example #3 again in
    the picker and in the panel below it (the first version showed one and named the
    other)."""
    open_deep_link(page, server, "/Hardest_examples", {**SETTINGS, "ex": "2"})
    main = page.locator("[data-testid='stMain']")

    def shown():
        return {"picker": input_value(main, "Example"),
                "panel": main.locator("li", has_text="p(true) at step").inner_text()}

    first = shown()
    assert first["picker"].startswith("#3:")
    length = history_length(page)
    picker = main.locator("input[aria-label='Example']")
    # A click opens the list, typing brings #9 to its top (the list shows a few options
    # at a time) and focuses it, and Enter picks it: a click on the option failed in CI
    # when the list opened below the window's edge, under a picture.
    picker.click()
    picker.fill("#9")
    page.locator("[role='option'][data-focused='true']", has_text="#9:").wait_for()
    act(page, lambda: picker.press("Enter"))
    assert history_length(page) == length + 1
    ninth = shown()
    assert ninth["picker"].startswith("#9:") and ninth["panel"] != first["panel"]
    assert url_params(page.url)["ex"] == "8"
    act(page, page.go_back)
    assert shown() == first and url_params(page.url)["ex"] == "2"
    assert_no_errors(page, server)


def test_cancel_keeps_the_page_and_offers_a_retry(server: Server, page):
    """Cancel during a real training leaves the page standing: its title, a "cancelled"
    message and a Retry button, and no error in the browser console (the page used to go
    blank: "'setIn' cannot be called on an ElementNode")."""
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    # 30,000 steps on 1,000 images: long enough to click Cancel while it trains.
    page.goto(f"{server.url}/Trajectory?"
              + urlencode({**SETTINGS, "n": "1000", "T": "30000", "seed": "11"}),
              wait_until="domcontentloaded")
    cancel = page.locator("[data-testid='stMain'] button", has_text="Cancel training")
    cancel.wait_for()
    act(page, cancel.click)
    main = page.locator("[data-testid='stMain']")
    # Wait for the message and the button themselves: a run can finish before an element
    # whose code loads on first use is drawn.
    main.get_by_text("Training was cancelled").wait_for()
    main.locator("button", has_text="Retry").wait_for()
    assert texts(page, "[data-testid='stMain'] h1") == ["From templates to noise"]
    assert main.locator("button", has_text="Retry").count() == 1
    assert page.locator("[data-testid='stProgress']").count() == 0
    assert not [e for e in console_errors if "setIn" in e or "ElementNode" in e], console_errors
    assert_no_errors(page, server)


@pytest.mark.parametrize("width, least", [(1920, 1300), (900, 0)])
def test_weight_grids_fill_the_column_with_sharp_pixels(server: Server, browser, width, least):
    """On a projector-sized window a grid of ten classes spans the content width, and the
    browser enlarges it with nearest-neighbour sampling (no blur); on a narrow window it
    still fits the column."""
    pg = new_page(browser, width=width)
    try:
        open_deep_link(pg, server, "/Trajectory", SETTINGS)
        # The grid is the first picture at least FILL_MIN_WIDTH pixels wide. Streamlit adds a
        # stretched picture to the page only once it has measured its column, so for a
        # moment the colour bar below it can be the page's first picture (that failed once
        # in CI): wait for the grid itself, laid out and decoded.
        find_grid = """least => {
                const img = [...document.querySelectorAll(
                    "[data-testid='stMain'] [data-testid='stImage'] img")]
                  .find(i => i.complete && i.naturalWidth >= least
                             && i.getBoundingClientRect().width > 0);
                if (!img) return null;
                const r = img.getBoundingClientRect();
                return {x: r.x, width: r.width,
                        style: getComputedStyle(img).imageRendering};
            }"""
        pg.wait_for_function(find_grid, arg=FILL_MIN_WIDTH, polling=100)
        wait_idle(pg)
        assert_images_loaded(pg)
        box = pg.evaluate(find_grid, FILL_MIN_WIDTH)
        assert box["style"] == "pixelated", box["style"]
        # The title is a block across the content column (the block container has padding).
        column = pg.locator("[data-testid='stMain'] h1").first.bounding_box()
        assert box["width"] >= least, f"weight grid {box['width']:.0f} px wide at {width} px"
        assert box["width"] >= 0.9 * column["width"], "the grid fills the column"
        assert box["x"] + box["width"] <= column["x"] + column["width"] + 1, "runs off the column"
        assert_no_errors(pg, server)
    finally:
        pg.context.close()


#: Markdown and HTML in every parameter of a link (see tests/test_app.py's PAYLOAD).
HOSTILE_VALUE = ("x`](y) [Session expired: sign in again](https://evil.example/login) "
                 "![i](https://evil.example/p.png)\n# Fake heading\nUnderlined\n===\n"
                 "<img src=https://evil.example/q.png><a href=https://evil.example>a</a> "
                 "www.evil.example")


@pytest.mark.parametrize("path,views", [("Trajectory", ("t", "cls")),
                                        ("Hardest_examples", ("t", "split", "cls", "ex"))])
def test_a_crafted_link_draws_no_link_image_or_heading_and_fetches_nothing_elsewhere(
        server: Server, page, path, views):
    """Every parameter carries the payload: the page quotes it as text, holds no link,
    image or heading made from it, and the browser asks no other host for anything."""
    elsewhere: list[str] = []
    page.on("request", lambda r: elsewhere.append(r.url)
            if not r.url.startswith((server.url, "data:", "blob:")) else None)
    # The data fingerprint stops the page at its mismatch notice, so the view values go
    # in a second link.
    for keys in (("v", "data", "evil"), ("v", "evil", *views)):
        open_deep_link(page, server, f"/{path}",
                       {**SETTINGS, **{k: HOSTILE_VALUE for k in keys}})
        page.get_by_text("Session expired", exact=False).first.wait_for()
        made = page.evaluate("""() => ({
            links: [...document.querySelectorAll('a')].map(a => a.href)
                .filter(h => !h.startsWith(location.origin + '/')),
            images: [...document.querySelectorAll('img')].map(i => i.src)
                .filter(s => s.includes('evil')),
            headings: [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => h.innerText)
                .filter(t => /Fake heading|Underlined|Session expired/.test(t)),
        })""")
        assert made == {"links": [], "images": [], "headings": []}, (keys, made)
    assert elsewhere == [], elsewhere



#: Words a page breaks across two lines (except after a hyphen, dash or slash), and text
#: its box cuts (an ellipsis or hidden overflow), measured in the page; code blocks wrap on
#: purpose, charts draw their own.
BROKEN_TEXT_JS = r"""
    () => {
      const out = [];
      const walker = document.createTreeWalker(document.querySelector("[data-testid='stApp']"), NodeFilter.SHOW_TEXT);
      let node;
      while ((node = walker.nextNode())) {
        const el = node.parentElement;
        if (!el || !el.offsetParent) continue;
        if (el.closest("svg, canvas, code, pre, [data-testid='stCode'], .vega-embed, [data-testid='stTooltipContent']")) continue;
        const text = node.textContent;
        // Word pieces up to a break the browser may take: after a hyphen, dash or slash
        // ("1-10" may wrap as "1-" and "10"; "vali" and "dation" may not).
        const re = /[^\s\-\u2010-\u2014\/]+[\-\u2010-\u2014\/]?/g; let m;
        while ((m = re.exec(text))) {
          const r = document.createRange();
          r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
          const rects = [...r.getClientRects()].filter(x => x.width > 0);
          const tops = new Set(rects.map(x => Math.round(x.top)));
          if (tops.size > 1) out.push(["split", m[0], el.tagName, el.closest("[data-testid]")?.getAttribute("data-testid")]);
        }
      }
      for (const el of document.querySelectorAll("[data-testid='stApp'] *")) {
        if (!el.offsetParent || el.closest("svg, canvas, .vega-embed, [data-testid='stCode'], " +
            "[data-testid='stSkipToContent']")) continue;
        const cs = getComputedStyle(el);
        if (el.children.length === 0 && el.textContent.trim() && el.scrollWidth > el.clientWidth + 1
            && (cs.overflow !== "visible" || cs.textOverflow === "ellipsis"))
          out.push(["cut", el.textContent.trim().slice(0, 40), el.tagName, el.closest("[data-testid]")?.getAttribute("data-testid")]);
      }
      return out;
    }
"""


def test_a_click_on_a_chart_selects_that_step(server: Server, page):
    """A click on the Loss chart of Trajectory picks the stored step nearest to it: the
    slider, the weight images' heading and the address bar all move there."""
    open_deep_link(page, server, "/Trajectory", SETTINGS)
    before = step_view(page)
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    # A third of the way along a log axis from step 1 to 300: about step 7, far from 300.
    act(page, lambda: page.mouse.click(box["x"] + box["width"] * 0.45,
                                       box["y"] + box["height"] * 0.5))
    wait_idle(page)
    after = step_view(page)
    assert after["slider"] != before["slider"], (before, after)
    assert after["slider"] == after["heading"], after
    picked = int(after["slider"].replace(",", ""))
    assert 2 <= picked <= 60, f"the click picked step {picked}, not one near the click"
    assert url_params(page.url)["t"] == str(picked)
    assert_no_errors(page, server)


def test_compare_side_b_lives_in_the_url_and_back_restores_it(server: Server, page):
    """A compare link shows side B's settings in its box; a change there is one history
    entry carried by the address (b.l2), and Back returns B's control and the address."""
    open_deep_link(page, server, "/Compare",
                   {**SETTINGS, "b.ds": "fashion-mnist", "b.n": "1000", "b.l2": "0.01"})
    main = page.locator("[data-testid='stMain']")
    main.locator("[data-testid='stExpander'] summary", has_text="Settings of B").click()
    assert input_value(main, "Training images") == "1000"
    assert input_value(main, "L2 penalty") == "0.01"
    before = url_params(page.url)
    assert before["b.n"] == "1000" and before["b.l2"] == "0.01" and before["l2"] == "0.001"
    length = history_length(page)
    box = main.locator("input[aria-label='L2 penalty']")
    box.fill("0.1")
    act(page, lambda: box.press("Enter"))
    after = url_params(page.url)
    assert after["b.l2"] == "0.1" and after["l2"] == "0.001", after
    assert history_length(page) == length + 1, "one change, one history entry"
    captions = texts(page, "[data-testid='stMain'] [data-testid='stCaptionContainer']")
    assert any("B: 1,000 images, L2 0.1" in t for t in captions), captions  # B redrawn
    act(page, page.go_back)
    assert url_params(page.url) == before
    assert input_value(main, "L2 penalty") == "0.01"
    assert_no_errors(page, server)



# --------------------------------------------------------------------------- both themes

#: Text that reads too faintly (WCAG 2 contrast of its colour, opacity included, against
#: the backgrounds under it): below 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
#: Charts draw their own text (their legend box is checked in tests/test_render.py).
LOW_CONTRAST_JS = r"""
() => {
  const parse = (s) => {
    const m = s.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  // The colour under an element: its ancestors' backgrounds composed from the root down.
  // An ancestor counts only where its box lies under the text (a slider's value sits
  // above its thumb, outside it).
  const background = (el) => {
    const layers = [];
    const inside = el.closest("[data-testid='stElementContainer'], [data-testid='stLayoutWrapper']")
                   || document.documentElement;
    const r = el.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
    for (let e = el; e; e = e.parentElement) {
      const b = e.getBoundingClientRect();
      if (inside.contains(e) && e !== inside && (x < b.left || x > b.right || y < b.top || y > b.bottom)) continue;
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const opacity = (el) => { let o = 1; for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity); return o; };
  const out = [];
  const seen = new Set();
  const walker = document.createTreeWalker(document.querySelector("[data-testid='stApp']"), NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const el = node.parentElement;
    if (!el || seen.has(el) || !node.textContent.trim()) continue;
    seen.add(el);
    if (el.closest("svg, canvas, .vega-embed, [aria-hidden='true'], [data-testid='stSkipToContent']")) continue;
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1 || cs.visibility !== "visible" || !el.checkVisibility({opacityProperty: true})) continue;
    const bg = background(el);
    const fg = over([...parse(cs.color).slice(0, 3), parse(cs.color)[3] * opacity(el)], bg);
    const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    const need = large ? 3 : 4.5;
    const got = ratio(fg, bg);
    if (got < need) out.push({text: node.textContent.trim().slice(0, 50), ratio: Math.round(got * 100) / 100, need,
      color: cs.color, bg: bg.slice(0, 3).map(Math.round).join(","), testid: el.closest("[data-testid]")?.getAttribute("data-testid")});
  }
  return out;
}
"""


from tests.test_render import _contrast  # noqa: E402 - the one WCAG contrast ratio


def _pictures(pg) -> list:
    """The main area's st.image pictures as PIL images, as the server sent them."""
    from io import BytesIO

    from PIL import Image

    srcs = pg.evaluate("""() => [...document.querySelectorAll(
        "[data-testid='stMain'] [data-testid='stImage'] img")].map(i => i.src)""")
    return [Image.open(BytesIO(pg.context.request.get(src).body())).convert("RGB")
            for src in srcs]


# One walk over every page per theme, each at one of the two widths of the narrow-window
# check (the theme changes no layout): two walks instead of four.
@pytest.mark.parametrize("scheme,width", [("light", 900), ("dark", 1920)])
def test_every_page_reads_in_both_themes_and_cuts_no_text_at_900_or_1920_px(
        server: Server, browser, scheme, width):
    """A browser that prefers ``scheme`` gets that theme (nothing in the config forces
    one), and on every page each visible text reaches 4.5:1 (large text 3:1). Every
    picture is drawn for the theme (st.context.theme): its margin is the page's own
    background, and the colour bars' tick labels reach 4.5:1 on it. At 900 and 1,920 px
    no page breaks a word across lines or cuts text with its box (BROKEN_TEXT_JS)."""
    from core import render
    from ui.frame import PAGES as PAGE_SPECS

    context = browser.new_context(color_scheme=scheme, viewport={"width": width, "height": 1000})
    context.add_init_script(COUNT_RUNS)
    pg = context.new_page()
    pg.set_default_timeout(RUN_TIMEOUT * 1000)
    try:
        faint, broken, pictures, bars = {}, {}, [], 0
        for spec in PAGE_SPECS:
            open_deep_link(pg, server, "/" + spec.path, SETTINGS)
            # The page's style sheet (st.html) arrives with a lazily loaded component.
            pg.wait_for_function("""() => [...document.querySelectorAll("[data-testid='stHtml'] style")]
                                   .some(s => s.textContent.includes("stCaptionContainer"))""")
            page_bg = pg.evaluate("""() => getComputedStyle(document.querySelector(
                "[data-testid='stApp']")).backgroundColor""")
            page_bg = tuple(int(v) for v in re.findall(r"\d+", page_bg)[:3])
            assert page_bg == render.ink(scheme)[0], (spec.title, page_bg)
            if (low := pg.evaluate(LOW_CONTRAST_JS)):
                faint[spec.title] = low
            if (cut := pg.evaluate(BROKEN_TEXT_JS)):
                broken[spec.title] = cut
            for img in _pictures(pg):
                pictures.append((spec.title, img.size, img.getpixel((0, 0))))
                if img.height <= 40 and img.width >= 5 * img.height:  # a colour bar
                    bars += 1
                    strip = img.crop((0, 14 + 2, img.width, img.height))  # below the ramp
                    best = max(_contrast(c, page_bg) for _, c in strip.getcolors(1 << 16))
                    assert best >= 4.5, (spec.title, scheme, best)
        # The viewer's menu offers the switch (a theme forced in the config hides it).
        pg.locator("[data-testid='stMainMenu']").click()
        switch = pg.locator("[data-testid='stThemeSwitcher'] [role='menuitemradio']")
        switch.first.wait_for()
        assert [t.split()[-1] for t in switch.all_inner_texts()] == ["System", "Light", "Dark"]
        assert not faint, faint
        assert not broken, f"text cut or a word broken at {width} px: {broken}"
        assert bars >= 5, f"only {bars} colour bars seen"
        drawn_elsewhere = [p for p in pictures if p[2] != page_bg]
        assert not drawn_elsewhere, f"pictures not drawn on the {scheme} page: {drawn_elsewhere}"
    finally:
        context.close()


# --------------------------------------------------------------------------- play, presentation

#: What Trajectory shows of its step: the weight images' heading, the slider's thumb and
#: each chart's selected-step rule (Vega names the rule's mark after its tooltip).
STEP_SHOWN_JS = """() => {
  const main = document.querySelector("[data-testid='stMain']");
  return {
    heads: [...main.querySelectorAll("h3")].map(h => h.innerText)
      .filter(t => t.startsWith("Weight images at step ")).map(t => t.slice(22)),
    thumbs: [...main.querySelectorAll("[data-testid='stSliderThumbValue']")]
      .map(e => e.innerText.trim()),
    rules: [...main.querySelectorAll(
        "[data-testid='stVegaLiteChart'] [aria-label*='selected step: ']")]
      .map(e => e.getAttribute("aria-label").split("selected step: ")[1]),
  };
}"""


def agreed_step(view: dict) -> str | None:
    """The step that the heading, the slider and all five charts' rules show, if they agree."""
    steps = {*view["heads"], *view["thumbs"], *view["rules"]}
    whole = len(view["heads"]) == len(view["thumbs"]) == 1 and len(view["rules"]) == 5
    return steps.pop() if whole and len(steps) == 1 else None


def test_play_moves_pictures_numbers_and_chart_rules_and_pause_puts_the_step_in_the_link(
        server: Server, page):
    """Play steps through the stored snapshots with the heading, the slider and every
    chart's rule agreeing at each step, and leaves the address bar alone while it plays;
    Pause keeps the step shown, writes it to the URL and adds at most one history entry."""
    open_deep_link(page, server, "/Trajectory", {**SETTINGS, "t": "1"})
    main = page.locator("[data-testid='stMain']")
    length = history_length(page)
    main.locator("button:visible", has_text="Play").click()
    # Steps seen with everything agreeing, collected in the page as it plays; wait until
    # three (1 and two more) have been seen.
    page.wait_for_function(f"""() => {{
        const v = ({STEP_SHOWN_JS})();
        const steps = new Set([...v.heads, ...v.thumbs, ...v.rules]);
        if (v.heads.length === 1 && v.thumbs.length === 1 && v.rules.length === 5
            && steps.size === 1) (window.__wsPlayed ??= new Set()).add([...steps][0]);
        return (window.__wsPlayed?.size ?? 0) >= 3;
    }}""", polling=100, timeout=90_000)
    played = page.evaluate("() => [...window.__wsPlayed]")
    assert url_params(page.url)["t"] == "1", "the address bar changed while playing"
    assert history_length(page) == length, "playing added history entries"
    main.locator("button:visible", has_text="Pause").click()
    main.locator("button:visible", has_text="Play").wait_for()
    wait_idle(page)
    shown = agreed_step(page.evaluate(STEP_SHOWN_JS))
    assert shown is not None and shown != "1", (played, page.evaluate(STEP_SHOWN_JS))
    assert url_params(page.url)["t"] == shown.replace(",", ""), "the link holds the step shown"
    assert history_length(page) <= length + 1
    # Paused: the slider is the viewer's again, one notch is one step and one entry.
    thumb = main.locator("[data-testid='stSlider'] input[type='range']")
    act(page, lambda: thumb.press("ArrowRight"))
    after = agreed_step(page.evaluate(STEP_SHOWN_JS))
    assert after not in (None, shown) and url_params(page.url)["t"] == after.replace(",", "")
    assert_no_errors(page, server)


def test_a_presentation_link_fills_the_screen_with_sharp_pixels_and_exit_returns(
        server: Server, browser):
    """present=1 opens the weight images alone, filling a 1,920 x 1,080 screen without
    scrolling, drawn with nearest-neighbour pixels, the step in big type and no sidebar;
    Exit presentation returns to the whole page at the same step."""
    pg = new_page(browser, width=1920)
    pg.set_viewport_size({"width": 1920, "height": 1080})
    try:
        open_deep_link(pg, server, "/Trajectory", {**SETTINGS, "t": "50", "present": "1"})
        grid = pg.locator("[data-testid='stMain'] [data-testid='stImage'] img")
        grid.first.wait_for()
        wait_idle(pg)
        assert_images_loaded(pg)
        assert grid.count() == 1, "presentation shows the weight images and nothing else"
        assert texts(pg, "[data-testid='stMain'] h1") == ["Step 50"]
        assert pg.locator("[data-testid='stVegaLiteChart']").count() == 0
        assert not pg.locator("[data-testid='stSidebar']").is_visible()
        assert grid.first.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
        box = grid.first.bounding_box()
        assert box["width"] >= 0.8 * 1920, f"grid {box['width']:.0f} px wide of 1,920"
        assert box["height"] >= 0.6 * 1080, f"grid {box['height']:.0f} px high of 1,080"
        assert box["y"] >= 0 and box["y"] + box["height"] <= 1080, "the grid runs off screen"
        pg.locator("[data-testid='stMain'] button:visible", has_text="Play").wait_for()
        act(pg, lambda: pg.locator("[data-testid='stMain'] button:visible",
                                   has_text="Exit presentation").click())
        pg.locator("[data-testid='stMain'] h1", has_text="From templates to noise").wait_for()
        wait_idle(pg)
        assert pg.locator("[data-testid='stSidebar']").is_visible()
        assert "present" not in url_params(pg.url) and url_params(pg.url)["t"] == "50"
        assert step_view(pg)["slider"] == "50"
        # The charts' code loads on first use: wait for the fifth, then count.
        pg.locator("[data-testid='stVegaLiteChart']").nth(4).wait_for()
        assert pg.locator("[data-testid='stVegaLiteChart']").count() == 5
        assert_no_errors(pg, server)
    finally:
        pg.context.close()
