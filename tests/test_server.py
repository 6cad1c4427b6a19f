"""Live-server tests: security settings, many users at once, memory after many runs.

Each server test starts ``streamlit run app.py`` from the repository root (so Streamlit
reads the repository's ``.streamlit/config.toml``) with the :class:`Server` helper of
``tests/test_browser.py``: a free loopback port, a private run cache, offline.

1. Security settings (``test_config_*``, ``test_health_*``, ``test_static_*``,
   ``test_upload_*``): the configured values, and what the live server does with them.
   The upload endpoint of Streamlit 1.67 (Starlette server,
   ``streamlit/web/server/starlette/starlette_routes.py``) is
   ``PUT /_stcore/upload_file/{session_id}/{file_id}`` with a multipart body holding one
   file. In this order it (a) refuses with 403 unless the ``X-Xsrftoken`` header and the
   ``_streamlit_xsrf`` cookie decode to the same token (double submit; the cookie is set
   by ``GET /_stcore/health``, which the frontend calls first), (b) refuses with 400
   unless ``session_id`` is a connected session, (c) refuses with 413 when
   ``Content-Length`` exceeds ``server.maxUploadSize`` MB, when the streamed body exceeds
   it by more than 1 MB of multipart framing, or when the parsed file exceeds it, and
   (d) answers 204. POST is not routed (405).
2. Many users at once (``test_many_sessions_*``): four browser contexts open one deep
   link together; the config is trained once and every session shows it; other
   sessions' settings do not leak.
3. Memory after 50 distinct configs (``test_run_store_memory_*``): in-process
   :class:`core.runs.RunStore` under a byte budget.

Browser tests need Debian's ``chromium`` and the ``playwright`` package (never run
``playwright install``); they skip without them, or fail under
``WEIGHTSCOPE_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import gc
import http.client
import json
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.test_browser import (  # noqa: F401 - chromium and browser are fixtures
    CHROMIUM_ARGS, WIDTH, Server, assert_images_loaded, assert_no_errors,
    browser, chromium, input_value, texts, url_params, wait_idle)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".streamlit" / "config.toml"
MB = 1 << 20
XSRF_COOKIE = "_streamlit_xsrf"
UPLOAD = "/_stcore/upload_file"


# --------------------------------------------------------------------------- helpers


def repo_config() -> dict:
    with CONFIG.open("rb") as fh:
        return tomllib.load(fh)


def upload_limit_bytes() -> int:
    return int(repo_config()["server"]["maxUploadSize"]) * MB


def request(server: Server, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def xsrf_token(server: Server) -> str:
    """A fresh XSRF token, taken from the cookie Streamlit sets on ``/_stcore/health``."""
    status, headers, _ = request(server, "GET", "/_stcore/health")
    assert status == 200
    cookie = headers.get("set-cookie", "")
    match = re.match(rf"{XSRF_COOKIE}=([^;]+)", cookie)
    assert match, f"/_stcore/health set no {XSRF_COOKIE} cookie: {cookie!r}"
    return match.group(1)


def xsrf_headers(cookie_token: str | None, header_token: str | None) -> dict[str, str]:
    headers = {}
    if cookie_token is not None:
        headers["Cookie"] = f"{XSRF_COOKIE}={cookie_token}"
    if header_token is not None:
        headers["X-Xsrftoken"] = header_token
    return headers


def multipart(size: int, name: str = "data.npz") -> tuple[bytes, str]:
    """A multipart/form-data body carrying one file of ``size`` zero bytes."""
    boundary = "weightscope-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + bytes(size) + tail, f"multipart/form-data; boundary={boundary}"


def put_upload(server: Server, session_id: str, file_id: str, size: int,
               headers: dict[str, str], chunked: bool = False) -> tuple[int, bytes]:
    """PUT a file of ``size`` bytes to the upload endpoint; returns status and body.

    With ``chunked`` the body goes with ``Transfer-Encoding: chunked`` and no
    ``Content-Length``, so the server can only judge the size by counting what arrives.
    The server may answer (and stop reading) before the whole body is sent: a failed
    send is tolerated and the response read anyway.
    """
    body, content_type = multipart(size)
    lines = [f"PUT {UPLOAD}/{session_id}/{file_id} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            view, step = memoryview(body), 1 << 18
            for i in range(0, len(body), step):
                part = view[i:i + step]
                sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n" if chunked else part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused mid-body; the answer is already on its way
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()
    finally:
        sock.close()


def session_id_of(frames: list) -> str | None:
    """The Streamlit session id from the websocket frames a page received (NewSession)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    for payload in frames:
        if not isinstance(payload, bytes):
            continue
        msg = ForwardMsg()
        try:
            msg.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg
            continue
        if msg.WhichOneof("type") == "new_session":
            return msg.new_session.initialize.session_id
    return None


_STARTED = re.compile(r"weightscope: training ([0-9a-f]+) started: TrainConfig\((.*)\)\s*$")
_FINISHED = re.compile(r"weightscope: training ([0-9a-f]+) finished")


def trainings_started(server: Server) -> list[tuple[str, dict[str, str]]]:
    """(key, config fields) of every "training <key> started" line in the server log."""
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        match = _STARTED.search(line)
        if match:
            fields = dict(re.findall(r"(\w+)=('[^']*'|[^,]+)", match.group(2)))
            out.append((match.group(1), {k: v.strip("'") for k, v in fields.items()}))
    return out


def started_for(server: Server, **want: str) -> list[str]:
    """Keys of the started lines whose config has every field in ``want``."""
    return [key for key, cfg in trainings_started(server)
            if all(cfg.get(k) == v for k, v in want.items())]


def finished_keys(server: Server) -> list[str]:
    return [m.group(1) for line in server.log_path.read_text(errors="replace").splitlines()
            if (m := _FINISHED.search(line))]


def vm_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """``streamlit run app.py`` with the repository's config (no browser needed)."""
    with Server(tmp_path_factory.mktemp("live")) as srv:
        yield srv


@pytest.fixture
def fresh_server(chromium, fashion_dir, tmp_path):
    """A server started for one test: empty run cache, nothing trained yet."""
    with Server(tmp_path) as srv:
        yield srv


# --------------------------------------------------------------------------- 1. security


def test_config_file_security_settings():
    """The repository's config file: XSRF on, no static files, an upload cap, no tracebacks."""
    cfg = repo_config()
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["server"]["enableStaticServing"] is False
    limit = cfg["server"].get("maxUploadSize")
    assert isinstance(limit, int) and 1 <= limit <= 200, f"maxUploadSize = {limit!r}"
    assert cfg["client"]["showErrorDetails"] == "none"


def test_config_effective_for_streamlit_run_from_the_repo():
    """What Streamlit itself resolves when started from the repository root (this file,
    ~/.streamlit/config.toml and STREAMLIT_* variables together): the repository's values."""
    out = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    # The listing is TOML after a free-text preamble; unset options are commented out.
    effective = tomllib.loads(out[out.index("\n[") + 1:])
    cfg = repo_config()
    for section, option in [("server", "enableXsrfProtection"), ("server", "enableStaticServing"),
                            ("server", "maxUploadSize"), ("client", "showErrorDetails")]:
        assert effective[section].get(option) == cfg[section][option], \
            f"{section}.{option}: Streamlit uses {effective[section].get(option)!r}, " \
            f"the repository's config says {cfg[section][option]!r}"


def test_health_answers_ok(live_server):
    status, headers, body = request(live_server, "GET", "/_stcore/health")
    assert (status, body) == (200, b"ok")
    assert headers.get("set-cookie", "").startswith(f"{XSRF_COOKIE}=2|"), \
        "with XSRF protection on, the health check hands out the XSRF cookie"


def test_static_serving_is_off(live_server, tmp_path, monkeypatch):
    """No route serves files under /app/static.

    In Streamlit 1.67 a path no route claims falls through to the frontend's page
    shell (index.html, 200: client-side routing), so "off" looks like: the page shell,
    byte for byte the one at "/", and OPTIONS refused (405). With static serving on,
    the static route answers instead: 404 for a file that is not there, and 204 to
    OPTIONS. A control server with ``STREAMLIT_SERVER_ENABLE_STATIC_SERVING=true``
    shows that this probe tells the two apart.
    """
    def probe(srv: Server) -> tuple[int, bytes, int]:
        status, _, body = request(srv, "GET", "/app/static/weightscope-probe.txt")
        options, _, _ = request(srv, "OPTIONS", "/app/static/weightscope-probe.txt")
        return status, body, options

    _, _, shell = request(live_server, "GET", "/")
    status, body, options = probe(live_server)
    assert status == 200 and body == shell, (status, body[:200])
    assert options == 405

    monkeypatch.setenv("STREAMLIT_SERVER_ENABLE_STATIC_SERVING", "true")
    with Server(tmp_path) as control:
        status, body, options = probe(control)
    assert (status, options) == (404, 204), \
        f"control server with static serving on: GET {status}, OPTIONS {options}"


def test_upload_without_xsrf_token_is_refused(live_server):
    """No browser: an unknown session id, so a request that gets past the XSRF check
    is refused with 400 (unknown session) instead of 403; only the token differs."""
    body, content_type = multipart(1024)
    token, other = xsrf_token(live_server), xsrf_token(live_server)
    assert token.split("|")[2] != other.split("|")[2], "two cookies, two different tokens"

    def put(headers: dict[str, str], method: str = "PUT") -> int:
        status, _, _ = request(live_server, method, f"{UPLOAD}/no-such-session/file-1",
                               body=body, headers={"Content-Type": content_type, **headers})
        return status

    refused = {"nothing": put({}),
               "cookie only": put(xsrf_headers(token, None)),
               "header only": put(xsrf_headers(None, token)),
               "cookie and header of different tokens": put(xsrf_headers(token, other)),
               "forged token": put(xsrf_headers("2|00|00|0", "2|00|00|0"))}
    print(f"\nupload without a valid XSRF pair: {refused}")
    assert set(refused.values()) == {403}, refused
    with_token = put(xsrf_headers(token, token))
    print(f"the same upload with cookie and header of one token: {with_token}")
    assert with_token == 400, "with the token, the next check (session id) must answer"
    assert put({}, method="POST") == 405


@pytest.mark.browser
def test_upload_refusals_on_a_live_session(live_server, browser):
    """The limits on a real session, so that only the checked property differs.

    A headless Chromium opens a page; its session id is read from the NewSession
    message on the page's websocket. Uploads then go straight to the endpoint, as the
    frontend's file uploader sends them, so the server's own checks are exercised (the
    frontend's size check of st.file_uploader is bypassed on purpose):

    * 1 MB without the XSRF pair -> 403; the same with it -> 204 (stored).
    * ``maxUploadSize`` - 1 MB -> 204: the limit is not lower than configured.
    * ``maxUploadSize`` + 1 MB with ``Content-Length`` -> 413 (the declared size).
    * ``maxUploadSize`` + 1 byte, chunked with no ``Content-Length`` -> 413: the server
      counted the bytes (streaming cap and parsed-file check).
    * ``maxUploadSize`` + 2 MB chunked -> 413, cut off while streaming (the log says so).
    """
    limit = upload_limit_bytes()
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
    try:
        page = context.new_page()
        frames: list = []
        page.on("websocket",
                lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
        page.goto(f"{live_server.url}/Trajectory?"
                  + urlencode({"ds": "digits", "n": "200", "T": "50", "seed": "1"}),
                  wait_until="domcontentloaded")
        # The server sends NewSession before the script's first element: once the page shows
        # its title, the message has been received (and handed to the listener above).
        page.locator("[data-testid='stMain'] h1").first.wait_for(timeout=60_000)
        session = session_id_of(frames)
        assert session, "no NewSession message on the page's websocket"

        token = xsrf_token(live_server)
        good = xsrf_headers(token, token)
        seen = {
            "1 MB, no XSRF": put_upload(live_server, session, "f1", MB, {})[0],
            "1 MB, XSRF": put_upload(live_server, session, "f1", MB, good)[0],
            "limit - 1 MB": put_upload(live_server, session, "f2", limit - MB, good)[0],
            "limit + 1 MB, Content-Length": put_upload(live_server, session, "f3",
                                                       limit + MB, good)[0],
            "limit + 1 byte, chunked": put_upload(live_server, session, "f4", limit + 1, good,
                                                  chunked=True)[0],
            "limit + 2 MB, chunked": put_upload(live_server, session, "f5", limit + 2 * MB,
                                                good, chunked=True)[0],
        }
        print(f"\nuploads to live session {session} (maxUploadSize {limit // MB} MB): {seen}")
        for file_id in ("f1", "f2"):  # leave nothing behind in the server's memory
            request(live_server, "DELETE", f"{UPLOAD}/{session}/{file_id}", headers=good)
        assert seen == {"1 MB, no XSRF": 403, "1 MB, XSRF": 204, "limit - 1 MB": 204,
                        "limit + 1 MB, Content-Length": 413, "limit + 1 byte, chunked": 413,
                        "limit + 2 MB, chunked": 413}, seen
        assert "exceeded the size limit while streaming" in live_server.log_tail(20_000)
    finally:
        context.close()


#: True once the sidebar's data-set picker shows this session's upload.
UPLOAD_SHOWN = """() => {
  const box = document.querySelector("[data-testid='stSidebar'] input[aria-label='Data set']");
  return !!box && box.value.startsWith("Your upload");
}"""


def open_home_on_digits(browser, server):
    """A new browser context showing the home page on small digits runs, ready to upload."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{server.url}/?" + urlencode({"ds": "digits", "n": "200", "T": "50"}),
              wait_until="domcontentloaded")
    wait_idle(page)
    # A widget's code loads on its first use in a browser context: wait for the uploader.
    page.locator("[data-testid='stFileUploader']").first.wait_for(state="attached")
    return context, page


@pytest.mark.browser
def test_upload_through_the_home_page_uploader_passes_xsrf(live_server, browser, tmp_path):
    """The other side of the XSRF check: the app's own uploader ("Your own data", key
    ws_uploader) sends its file with the token, the server stores it (204), and the upload
    becomes the session's data set without an exception. The file is a small valid .npz of
    8 x 8 images."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8),
             y_train=np.repeat(np.arange(4), 50))
    context, page = open_home_on_digits(browser, live_server)
    try:
        uploader = page.locator("[data-testid='stFileUploader']")
        assert uploader.count() == 1, "the home page has one file uploader"
        with page.expect_response(lambda r: UPLOAD in r.url and r.request.method == "PUT",
                                  timeout=60_000) as info:
            uploader.locator("input[type='file']").set_input_files(str(path))
        response = info.value
        token = response.request.headers.get("x-xsrftoken", "")
        print(f"\nthe uploader's PUT: {response.status}, X-Xsrftoken sent: {bool(token)}")
        assert token and response.status == 204
        try:
            page.wait_for_function(UPLOAD_SHOWN, timeout=60_000)
        except Exception:  # noqa: BLE001 - the assertion below says what is shown instead
            pass
        wait_idle(page)
        assert not texts(page, "[data-testid='stException']"), live_server.log_tail()
        shown = input_value(page.locator("[data-testid='stSidebar']"), "Data set")
        assert shown.startswith("Your upload"), f"the upload did not become the data set: {shown}"
    finally:
        context.close()


# --------------------------------------------------------------------------- 2. many users

#: Records on the page whether it ever showed a training progress bar, and its text.
_WATCH_PROGRESS = """
window.__wsProgress = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll("[data-testid='stProgress']")) {
    const t = el.innerText.trim();
    if (t && !window.__wsProgress.includes(t)) window.__wsProgress.push(t);
  }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""

LINK_A = {"ds": "fashion-mnist", "n": "300", "T": "2000", "lr": "auto", "l2": "0", "l1": "0",
          "seed": "5"}
LINK_B = {**LINK_A, "n": "310"}
CFG_A = {"n_train": "300", "iterations": "2000", "seed": "5", "model": "softmax"}
CFG_B = {**CFG_A, "n_train": "310"}


@pytest.mark.browser
def test_many_sessions_share_one_training_and_keep_their_own_settings(fresh_server, browser):
    server = fresh_server

    def open_all(links: list[dict[str, str]]) -> list:
        """Start every navigation first, then wait for all pages to finish."""
        pages = []
        for params in links:
            ctx = browser.new_context(viewport={"width": WIDTH, "height": 1000})
            ctx.add_init_script(_WATCH_PROGRESS)
            pg = ctx.new_page()
            pg.set_default_timeout(120_000)
            pg.goto(f"{server.url}/Trajectory?{urlencode(params)}", wait_until="commit")
            pages.append(pg)
        for pg in pages:
            wait_idle(pg)
        return pages

    def check(pg, n: str) -> None:
        titles = texts(pg, "[data-testid='stMain'] h1")
        assert titles[:1] == ["From templates to noise"], f"{pg.url}: {titles}"
        assert_no_errors(pg, server)
        assert_images_loaded(pg)
        sidebar = pg.locator("[data-testid='stSidebar']")
        assert input_value(sidebar, "Training images") == n, pg.url
        assert url_params(pg.url)["n"] == n, pg.url

    pages: list = []
    try:
        t0 = time.monotonic()
        pages += open_all([LINK_A] * 4)
        first_four = time.monotonic() - t0
        for pg in pages:
            check(pg, "300")
        keys_a = started_for(server, **CFG_A)
        assert len(keys_a) == 1, f"config A trained {len(keys_a)} times:\n{server.log_tail()}"
        assert len(trainings_started(server)) == 1, server.log_tail()
        # Each of the four waited on that one job: every page showed its progress bar.
        progress = [pg.evaluate("() => window.__wsProgress") for pg in pages]
        print(f"\nfour sessions on one link: {first_four:.1f} s; progress seen: "
              f"{[p[-1] if p else None for p in progress]}")
        assert all(any(t.startswith(("Training", "Waiting")) for t in p) for p in progress), \
            f"a session did not wait for the training: {progress}"

        t0 = time.monotonic()
        pages += open_all([LINK_B, LINK_A])
        print(f"fifth (n=310) and sixth (n=300) sessions: {time.monotonic() - t0:.1f} s")
        check(pages[4], "310")
        check(pages[5], "300")
        assert started_for(server, **CFG_A) == keys_a, "config A was trained again"
        keys_b = started_for(server, **CFG_B)
        assert len(keys_b) == 1 and keys_b != keys_a, trainings_started(server)
        assert len(trainings_started(server)) == 2, server.log_tail()
        assert not pages[5].evaluate("() => window.__wsProgress"), \
            "the sixth session trained or waited although config A was done"
        assert sorted(finished_keys(server)) == sorted(keys_a + keys_b)

        # Rerun the first session (step slider one notch left): its settings come from its
        # own session state, and must still be 300 after another session chose 310.
        main = pages[0].locator("[data-testid='stMain']")
        thumb = main.locator("[data-testid='stSlider'] input[type='range']").first
        before = url_params(pages[0].url).get("t")
        thumb.focus()
        thumb.press("ArrowLeft")
        pages[0].wait_for_function(
            f"() => new URLSearchParams(location.search).get('t') !== {json.dumps(before)}",
            timeout=30_000)
        wait_idle(pages[0])
        for i, pg in enumerate(pages):
            check(pg, "310" if i == 4 else "300")
        assert len(trainings_started(server)) == 2, server.log_tail()
    finally:
        for pg in pages:
            pg.context.close()


# --------------------------------------------------------------------------- 3. memory


def test_run_store_memory_after_50_distinct_configs():
    """50 distinct tiny configs through RunStore.get under an 8 MB budget: the store stays
    under budget (evicting the oldest runs) and the process's resident memory grows by
    less than budget + 64 MB. The first training's one-off costs (kernel compilation)
    are paid in a warm-up on another store before the first measurement."""
    from core.data import load_digits_dataset
    from core.runs import RunStore
    from core.trainer import TrainConfig

    budget = 8 * MB
    slack = 64 * MB
    ds = load_digits_dataset()
    configs = [TrainConfig(n_train=200, iterations=50, n_val=50, seed=s) for s in range(50)]

    warm_before = vm_kib("VmRSS")
    RunStore(max_bytes=budget).get(ds, configs[0].replace(seed=10_000))
    gc.collect()
    rss_before = vm_kib("VmRSS")

    store = RunStore(max_bytes=budget, disk_dir=None)
    t0 = time.monotonic()
    sizes = [store.get(ds, cfg).nbytes for cfg in configs]
    seconds = time.monotonic() - t0
    gc.collect()
    rss_after = vm_kib("VmRSS")
    growth = (rss_after - rss_before) * 1024

    print(f"\n50 configs in {seconds:.1f} s; run size {min(sizes):,}-{max(sizes):,} B, "
          f"{sum(sizes):,} B in all; store keeps {len(store)} runs, "
          f"{store.memory_bytes:,} B (budget {budget:,} B); "
          f"VmRSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB "
          f"(+{growth / MB:.1f} MiB, bound {(budget + slack) / MB:.0f} MiB); "
          f"warm-up +{(rss_before - warm_before) / 1024:.1f} MiB; "
          f"VmHWM {vm_kib('VmHWM') / 1024:.1f} MiB")
    assert store.trainings == 50, "each distinct config is trained exactly once"
    assert store.memory_bytes <= budget
    # The case is built so that the budget binds: the oldest runs went, the newest stayed.
    assert sum(sizes) > budget, "the runs must outgrow the budget for this test to mean it"
    assert len(store) < 50
    assert store.cached(ds, configs[0]) is None
    assert store.cached(ds, configs[-1]) is not None
    assert growth < budget + slack


@pytest.mark.browser
def test_uploaded_data_stays_private_and_a_bad_file_keeps_the_last_good_data(
        live_server, browser, tmp_path):
    """Upload a good .npz, then a broken one: the error is shown and the good data stays in
    use. The view's link, opened in another browser session, asks for the files instead of
    showing the uploaded data."""
    import numpy as np

    rng = np.random.default_rng(1)
    good = tmp_path / "mine.npz"
    np.savez(good, x_train=rng.integers(0, 256, (240, 8, 8), dtype=np.uint8),
             y_train=np.repeat(np.arange(3), 80), class_names=np.array(["ants", "bees", "cats"]))
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not a zip archive at all")
    context, page = open_home_on_digits(browser, live_server)
    other = browser.new_context(viewport={"width": WIDTH, "height": 1000})
    try:
        page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(good))
        page.wait_for_function(UPLOAD_SHOWN, timeout=60_000)
        wait_idle(page)
        assert url_params(page.url)["ds"] == "upload"
        link = page.url
        assert "Uploaded by you: mine.npz" in page.locator("[data-testid='stMain']").inner_text()

        page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(bad))
        page.locator("[data-testid='stAlertContentError']").first.wait_for()
        wait_idle(page)
        message = " ".join(texts(page, "[data-testid='stAlertContentError']"))
        assert "broken.npz" in message and "unchanged" in message
        assert input_value(page.locator("[data-testid='stSidebar']"), "Data set") \
            .startswith("Your upload")
        assert not texts(page, "[data-testid='stException']"), live_server.log_tail()

        stranger = other.new_page()
        stranger.set_default_timeout(120_000)
        stranger.goto(link, wait_until="domcontentloaded")
        stranger.locator("[data-testid='stMain']", has_text="uploaded in another browser "
                                                             "session").wait_for()
        # The uploader is drawn right after the warning, in the same script run; wait for
        # the run to finish before counting what it drew.
        stranger.locator("[data-testid='stFileUploader']").wait_for()
        wait_idle(stranger)
        assert stranger.locator("[data-testid='stFileUploader']").count() == 1
        assert stranger.locator("[data-testid='stMain'] [data-testid='stImage']").count() == 0
        assert "Uploaded by you" not in stranger.locator("[data-testid='stMain']").inner_text()
    finally:
        context.close()
        other.close()


# --------------------------------------------------------------------------- closed tabs

#: Long enough (about 40 s of training here) that only a release can end it early.
LINK_LONG = {"ds": "fashion-mnist", "n": "1000", "T": "100000", "lr": "auto", "l2": "0",
             "l1": "0", "seed": "7"}
_QUEUED = re.compile(r"weightscope: training ([0-9a-f]+) queued: TrainConfig\((.*)\)\s*$")


def queued_key(server: Server, **want: str) -> str | None:
    """The key of the first "training <key> queued" line whose config has ``want``."""
    for line in server.log_path.read_text(errors="replace").splitlines():
        if (m := _QUEUED.search(line)):
            fields = dict(re.findall(r"(\w+)=('[^']*'|[^,]+)", m.group(2)))
            if all(fields.get(k, "").strip("'") == v for k, v in want.items()):
                return m.group(1)
    return None


def wait_for_log(server: Server, needle: str, timeout: float) -> float:
    """Seconds until ``needle`` appears in the server log; fails after ``timeout``."""
    t0 = time.monotonic()
    while needle not in server.log_tail(1 << 20):
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"no {needle!r} in the server log within {timeout:.0f} s:\n"
                        f"{server.log_tail()}", pytrace=False)
        if server.proc.poll() is not None:
            pytest.fail(f"the server exited:\n{server.log_tail()}", pytrace=False)
        # The log is a file another process writes: nothing to wait on but its content.
        time.sleep(0.05)
    return time.monotonic() - t0


def open_training(browser, server: Server, params: dict[str, str], wait_text: str):
    """A new tab on Trajectory for ``params``, once its progress bar says ``wait_text``."""
    ctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(f"{server.url}/Trajectory?{urlencode(params)}", wait_until="commit")
    pg.locator("[data-testid='stProgress']", has_text=wait_text).first.wait_for()
    return pg


@pytest.mark.browser
def test_a_closed_tab_stops_its_training_and_a_closed_queued_tab_never_starts(
        fresh_server, browser):
    """Tabs closed while their run trains or waits for the one training slot
    (WEIGHTSCOPE_MAX_JOBS=1, the default) release it: the running training stops within
    seconds, and the queued one is dropped and never starts, even once the slot frees."""
    server = fresh_server
    a = open_training(browser, server, LINK_LONG, "Training")
    key_a = queued_key(server, n_train="1000", seed="7")
    assert key_a and started_for(server, n_train="1000", seed="7") == [key_a]

    b = open_training(browser, server, {**LINK_LONG, "seed": "8"}, "Waiting for a free")
    key_b = queued_key(server, n_train="1000", seed="8")
    assert key_b and key_b != key_a
    b.context.close()
    released = wait_for_log(server, f"training {key_b} cancelled (no viewers)", 15)
    wait_for_log(server, f"training {key_b} dropped from the queue", 5)
    print(f"\nqueued tab closed: released after {released:.1f} s")

    # The viewer of A cancels: the slot frees, and B (dropped) must not take it.
    a.get_by_role("button", name="Cancel training").click()
    wait_for_log(server, f"training {key_a} stopped at step", 15)
    a.get_by_text("Training was cancelled").wait_for()
    assert started_for(server, n_train="1000", seed="8") == [], server.log_tail()

    # A running training whose only tab closes stops.
    a.reload(wait_until="commit")
    a.locator("[data-testid='stProgress']", has_text="Training").first.wait_for()
    keys = started_for(server, n_train="1000", seed="7")
    assert len(keys) == 2, "the retry after Cancel did not start a training"
    a.context.close()
    released = wait_for_log(server, f"training {key_a} cancelled (no viewers)", 15)
    wait_for_log(server, f"training {key_a} stopped at step", 5)
    print(f"running tab closed: released after {released:.1f} s")
    assert finished_keys(server) == [], "a released training ran to its end"
    assert started_for(server, n_train="1000", seed="8") == [], server.log_tail()


class StallingProxy:
    """A loopback TCP proxy in front of the server that can stall: it stops passing bytes
    either way without closing anything, as a dropped Wi-Fi or a sleeping laptop does."""

    def __init__(self, target_port: int):
        import threading

        self.stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.stalled.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if self.stalled.is_set():
                    return  # dropped, and nothing more is read: both ends keep waiting
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()


@pytest.mark.browser
def test_a_lost_connection_releases_its_training_within_the_ping_timeout(
        chromium, fashion_dir, browser, tmp_path, monkeypatch):
    """The connection stalls (no close from the browser): the server notices when its
    websocket pings go unanswered (2 s interval and timeout here; 30 s by default) and
    releases the run as for a closed tab."""
    monkeypatch.setenv("STREAMLIT_SERVER_WEBSOCKET_PING_INTERVAL", "2")
    with Server(tmp_path) as server:
        proxy = StallingProxy(server.port)
        try:
            ctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
            pg = ctx.new_page()
            pg.set_default_timeout(120_000)
            pg.goto(f"http://127.0.0.1:{proxy.port}/Trajectory?{urlencode(LINK_LONG)}",
                    wait_until="commit")
            pg.locator("[data-testid='stProgress']", has_text="Training").first.wait_for()
            key = queued_key(server, n_train="1000", seed="7")
            assert key and started_for(server, n_train="1000", seed="7") == [key]
            proxy.stalled.set()
            released = wait_for_log(server, f"training {key} cancelled (no viewers)", 30)
            wait_for_log(server, f"training {key} stopped at step", 5)
            print(f"\nstalled connection: released after {released:.1f} s")
            assert finished_keys(server) == []
            ctx.close()
        finally:
            proxy.close()


# --------------------------------------------------------------------------- plain IDX uploads


def write_idx(path: Path, array) -> Path:
    """``array`` (uint8) as a plain, uncompressed IDX file at ``path``."""
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.tobytes())
    return path


@pytest.mark.browser
def test_plain_idx_files_upload_through_the_browsers_file_chooser(live_server, browser, tmp_path):
    """IDX files under their usual names, without a file extension (train-images-idx3-ubyte)
    or with one the uploader did not list (.idx3-ubyte), chosen in the home page's uploader:
    the browser sends them, and they become the session's data set. The uploader's list of
    extensions used to refuse them in the browser ("files are not allowed")."""
    import numpy as np

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 40)
    x = rng.integers(0, 256, (len(y), 7, 6), dtype=np.uint8)
    for images, labels in [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("b-train-images.idx3-ubyte", "b-train-labels.idx1-ubyte")]:
        folder = tmp_path / images
        folder.mkdir()
        files = [str(write_idx(folder / images, x)), str(write_idx(folder / labels, y))]
        # A new session for each pair: the uploader adds files to those it holds.
        context, page = open_home_on_digits(browser, live_server)
        try:
            main = page.locator("[data-testid='stMain']")
            page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(files)
            # The source line names the files once the upload is the data set in use.
            main.get_by_text(f"Uploaded by you: {images}, {labels}").wait_for(timeout=60_000)
            wait_idle(page)
            assert input_value(page.locator("[data-testid='stSidebar']"), "Data set") \
                .startswith("Your upload")
            assert url_params(page.url)["ds"] == "upload"
            assert "96 training images" in main.inner_text() and "7 x 6 pixels" in main.inner_text()
            assert not texts(page, "[data-testid='stFileUploaderFileError']"), images
            assert not texts(page, "[data-testid='stAlertContentError']"), images
            assert not texts(page, "[data-testid='stException']"), live_server.log_tail()
        finally:
            context.close()


# --------------------------------------------------------------------------- memory per run


@pytest.mark.browser
def test_a_link_over_the_memory_bound_is_refused_and_trains_nothing(
        browser, fashion_dir, tmp_path, monkeypatch):
    """WEIGHTSCOPE_CACHE_MB=1 allows a run 0.25 MB (a quarter of the run cache). A deep
    link to 300 digits x 60 steps (0.61 MB of records) shows the refusal with the steps
    that fit, and the server never queues nor starts its training."""
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", "1")
    link = {"ds": "digits", "n": "300", "T": "60"}
    with Server(tmp_path) as server:
        ctx = browser.new_context(viewport={"width": WIDTH, "height": 1000})
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(120_000)
            pg.goto(f"{server.url}/Trajectory?{urlencode(link)}", wait_until="domcontentloaded")
            wait_idle(pg)
            assert not texts(pg, "[data-testid='stException']"), server.log_tail()
            errors = texts(pg, "[data-testid='stMain'] [data-testid='stAlertContentError']")
            print(f"\nrefusal: {errors}")
            assert any("These settings cannot be trained" in e
                       and "over this server's limit of 0.25 MB per run" in e
                       and "Lower Gradient steps to 21." in e for e in errors), errors
            assert pg.locator("[data-testid='stMain'] [data-testid='stImage']").count() == 0
            assert url_params(pg.url)["T"] == "60"  # refused as linked, not changed
            log = server.log_tail(1 << 20)
            assert started_for(server, n_train="300", iterations="60") == [], log
            assert "queued: TrainConfig(model='softmax', n_train=300, iterations=60" not in log
        finally:
            ctx.close()
