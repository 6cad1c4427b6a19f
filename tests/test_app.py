"""Headless app tests (Streamlit's AppTest): every page, interactions, URLs, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "views").glob("*.py"))
HOME = "views/home.py"
SMALL = {"ds": "digits", "n": "300", "T": "60"}
#: Pictures and charts each page must draw, at least.
EXPECTED = {
    "views/home.py": (1, 0),
    "views/first_step.py": (4, 0),
    "views/trajectory.py": (5, 5),
    "views/overfitting.py": (1, 3),
    "views/hardest_examples.py": (3, 1),
    "views/spectrum.py": (6, 6),
    "views/limit.py": (4, 3),
    "views/compare.py": (2, 2),
}


@pytest.fixture(autouse=True)
def fresh_streamlit(monkeypatch, tmp_path):
    """No disk cache, no network, and no cache shared with the previous test."""
    monkeypatch.setenv("WEIGHTSCOPE_RUN_CACHE", "off")
    monkeypatch.setenv("WEIGHTSCOPE_OFFLINE", "1")
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def app_test(path: str, timeout: float = 120) -> AppTest:
    """An AppTest of the app (app.py, the frame) whose next run shows page ``path``.

    AppTest finds a page with its own URL path only after a first run has registered the
    pages (st.navigation). That first run shows home, which trains its run: TINY makes it
    the smallest there is, and its parameters are cleared before the page's run."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    if path != HOME:
        for k, v in TINY.items():
            at.query_params[k] = v
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        at.query_params.clear()
        at.switch_page(path)
    return at


#: The first run of app_test, before a page is chosen: as small as a run gets.
TINY = {"ds": "digits", "n": "20", "T": "2"}


def open_page(path: str, **params) -> AppTest:
    """Page ``path`` opened by a link with ``params``, as a browser opens a deep link."""
    at = app_test(path)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    return settle(at)


def settle(at: AppTest, timeout: float = 300) -> AppTest:
    """Run ``at`` once more after the background analyses it started have finished (a
    browser's page reruns by itself then; AppTest does not)."""
    from ui.resources import task_store
    store = task_store()
    if any(not task.finished for task in store._tasks.values()):
        assert store.wait_all(timeout), "a background analysis did not finish"
        at.run()
    return at


def url(at: AppTest) -> dict[str, str]:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]


def test_every_page_is_tested():
    assert set(PAGES) == set(EXPECTED), "add the new page to EXPECTED with what it must draw"


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_its_pictures_and_charts(path):
    at = open_page(path, **SMALL)
    assert_clean(at)
    images, charts = EXPECTED[path]
    assert len(at.get("image")) >= images
    assert len(at.get("vega_lite_chart")) >= charts
    assert url(at)["n"] == "300" and url(at)["T"] == "60"


@pytest.mark.realdata
@pytest.mark.parametrize("path", PAGES)
def test_page_renders_on_real_fashion_mnist(path, fashion_dir):
    at = open_page(path, ds="fashion-mnist", n=200, T=30)
    assert_clean(at)
    assert not at.info or all("digits" not in i.value for i in at.info)
    assert len(at.get("image")) >= EXPECTED[path][0]


def test_first_step_page_prints_the_numerical_proof():
    at = open_page("views/first_step.py", **SMALL)
    assert_clean(at)
    proof = next(m.value for m in at.markdown if "Largest absolute difference" in m.value)
    numbers = [float(v) for v in re.findall(r"\*\*([0-9.]+e[-+][0-9]+)\*\*", proof)]
    assert len(numbers) == 2, proof
    run_diff, float64_diff = numbers
    assert run_diff < 1e-5 and float64_diff < 1e-12


def test_a_link_reproduces_settings_and_view():
    params = dict(ds="digits", model="ovr", n=250, T=40, lr=0.05, l2=0.001, l1=0, seed=3, t=20)
    at = open_page("views/trajectory.py", **params)
    assert_clean(at)
    sb = at.sidebar
    assert sb.radio(key="ws_w_model").value == "ovr"
    assert sb.number_input(key="ws_w_n_train").value == 250
    assert sb.number_input(key="ws_w_iterations").value == 40
    assert sb.text_input(key="ws_w_learning_rate").value == "0.05"
    assert sb.number_input(key="ws_w_l2").value == pytest.approx(0.001)
    assert sb.number_input(key="ws_w_seed").value == 3
    assert at.select_slider[0].value == 20
    written = url(at)
    for k, v in params.items():
        assert written[k] == str(v), k
    assert written["v"] == "1" and len(written["data"]) == 8


def test_settings_survive_a_page_switch():
    at = open_page(HOME, **SMALL)
    at.sidebar.number_input(key="ws_w_n_train").set_value(350).run()
    at.sidebar.text_input(key="ws_w_learning_rate").set_value("0.2").run()
    assert_clean(at)
    assert url(at)["n"] == "350"
    at.switch_page("views/trajectory.py").run()
    assert_clean(at)
    assert at.sidebar.number_input(key="ws_w_n_train").value == 350
    assert at.sidebar.text_input(key="ws_w_learning_rate").value == "0.2"
    assert url(at)["n"] == "350" and url(at)["lr"] == "0.2"
    at.switch_page("views/hardest_examples.py").run()
    assert at.sidebar.number_input(key="ws_w_n_train").value == 350


def test_moving_the_iteration_changes_every_panel_and_the_url():
    at = open_page("views/trajectory.py", **SMALL)
    before = [m.value for m in at.metric]
    at.select_slider[0].set_value(5).run()
    assert_clean(at)
    assert url(at)["t"] == "5"
    after = [m.value for m in at.metric]
    assert after != before
    assert any("step 5" in s.value for s in at.subheader)


def test_picking_an_example_shows_its_history_and_is_in_the_url():
    at = open_page("views/hardest_examples.py", **SMALL)
    assert_clean(at)
    at.selectbox(key="ws_v/Hardest_examples/ex").set_value(3).run()
    assert_clean(at)
    assert url(at)["ex"] == "3"
    assert any("forgotten" in m.value for m in at.markdown)
    at.radio(key="ws_v/Hardest_examples/order").set_value("easiest").run()
    assert url(at)["order"] == "easiest"
    assert_clean(at)


@pytest.mark.parametrize("bad", [
    {"n": "abc"}, {"T": "-5"}, {"T": "0"}, {"lr": "nan"}, {"lr": "inf"}, {"l2": "-1"},
    {"l1": "NaN"}, {"model": "svm"}, {"seed": "1.5"}, {"opt": "adam"}, {"ds": "../etc"},
])
def test_malformed_link_values_are_ignored_with_a_notice(bad):
    at = open_page(HOME, **{**SMALL, **bad})
    assert not at.exception
    key = next(iter(bad))
    assert any(f"Ignored {key}=" in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.get("image")) >= 1  # the page still shows a run with the default used


def test_link_to_other_data_says_so_instead_of_showing_it():
    at = open_page("views/trajectory.py", **SMALL, data="deadbeef")
    assert not at.exception
    assert any("fingerprint" in e.value for e in at.error)
    assert len(at.get("image")) == 0
    at.button[0].click().run()
    assert_clean(at)
    assert len(at.get("image")) >= 5


def test_invalid_sidebar_input_is_refused_next_to_the_control():
    at = open_page(HOME, **SMALL)
    at.sidebar.text_input(key="ws_w_learning_rate").set_value("fast").run()
    assert not at.exception
    assert any("Learning rate 'fast'" in e.value for e in at.sidebar.error)
    assert url(at)["lr"] == "auto"  # the last good value is kept
    assert len(at.get("image")) >= 1


def test_work_cap_refuses_runs_that_would_hold_the_server(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_MAX_WORK", "6000")
    at = open_page(HOME, **SMALL)
    assert not at.exception
    assert any("cap of 6,000" in e.value for e in at.sidebar.error)
    assert int(url(at)["T"]) * int(url(at)["n"]) <= 6000


def test_diverging_learning_rate_shows_where_and_suggests_auto():
    at = open_page("views/trajectory.py", **SMALL, lr=20)  # survives 2 steps on digits
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "Diverged at iteration 3" in message and "auto" in message
    assert len(at.get("image")) >= 3


def test_a_page_stopped_by_a_diverged_run_still_writes_its_link_and_can_be_left():
    """A link whose learning rate diverges at once stops the page; the address bar and the
    copy-link box still show the view, and typing "auto" trains the good run (the link's
    rate used to be read back from the unwritten address on every change)."""
    at = open_page("views/trajectory.py", **SMALL, lr=5000, t=20)
    assert not at.exception
    assert any("Diverged at iteration 1" in e.value for e in at.error)
    assert url(at)["lr"] == "5000" and url(at)["t"] == "20"
    assert "lr=5000" in next(c.value for c in at.sidebar.code)
    at.sidebar.text_input(key="ws_w_learning_rate").set_value("auto").run()
    assert_clean(at)
    assert url(at)["lr"] == "auto" and url(at)["t"] == "20"
    assert at.sidebar.text_input(key="ws_w_learning_rate").value == "auto"
    assert at.select_slider[0].value == 20
    assert len(at.get("image")) >= 5


def test_learning_rate_that_explodes_at_once_stops_the_page_with_the_reason():
    at = open_page("views/hardest_examples.py", **SMALL, lr=5000)
    assert not at.exception
    assert any("Diverged at iteration 1" in e.value for e in at.error)
    assert len(at.get("image")) == 0


def test_lbfgs_runs_every_page_and_says_the_learning_rate_does_not_apply():
    for path in PAGES:
        at = open_page(path, **{**SMALL, "T": "30"}, opt="lbfgs")
        assert_clean(at)
        assert at.sidebar.radio(key="ws_w_optimizer").value == "lbfgs"
        assert at.sidebar.text_input(key="ws_w_learning_rate").disabled
        assert url(at)["opt"] == "lbfgs"
    first = open_page("views/first_step.py", **{**SMALL, "T": "30"}, opt="lbfgs")
    text = " ".join(m.value for m in first.markdown)
    assert "line-search step" in text


def test_lbfgs_refuses_l1_next_to_the_control():
    at = open_page(HOME, **SMALL, opt="lbfgs", l1=0.001)
    assert not at.exception
    assert any("L1 needs gradient descent" in e.value for e in at.sidebar.error)
    assert url(at)["l1"] == "0"


#: Colour legends per page: the only pictures without a download of their own.
LEGENDS = {HOME: 1, "views/first_step.py": 1, "views/trajectory.py": 2,
           "views/overfitting.py": 1, "views/hardest_examples.py": 0, "views/spectrum.py": 3,
           "views/limit.py": 1, "views/compare.py": 1}
TABLES = {HOME: 1, "views/first_step.py": 0, "views/trajectory.py": 2,
          "views/overfitting.py": 1, "views/hardest_examples.py": 1, "views/spectrum.py": 2,
          "views/limit.py": 1, "views/compare.py": 1}


@pytest.mark.parametrize("path", PAGES)
def test_every_picture_chart_and_table_can_be_downloaded(path):
    at = open_page(path, **SMALL)
    assert_clean(at)
    labels = [d.proto.label for d in at.get("download_button")]
    charts_drawn = len(at.get("vega_lite_chart"))
    # every chart offers PNG and SVG; every picture but the legends a PNG (or the GIF)
    assert labels.count("SVG") == charts_drawn
    pictures = labels.count("PNG") + labels.count("GIF") - charts_drawn
    assert pictures == len(at.get("image")) - LEGENDS[path]
    assert len(labels) - labels.count("PNG") - labels.count("SVG") - labels.count("GIF") \
        == TABLES[path]


def test_copied_link_reproduces_the_view():
    at = open_page("views/hardest_examples.py", **SMALL, t=20, split="val", order="easiest")
    at.selectbox(key="ws_v/Hardest_examples/ex").set_value(4).run()
    link = next(c.value for c in at.sidebar.code)
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(link)
    assert parts.path.endswith("Hardest_examples")
    params = dict(parse_qsl(parts.query))
    assert params["ex"] == "4" and params["t"] == "20" and params["split"] == "val"
    st.cache_data.clear()
    again = open_page("views/hardest_examples.py", **params)
    assert_clean(again)
    assert again.selectbox(key="ws_v/Hardest_examples/ex").value == 4
    assert again.radio(key="ws_v/Hardest_examples/order").value == "easiest"
    assert [m.value for m in again.markdown] == [m.value for m in at.markdown]


@pytest.mark.parametrize("n,clamped_to", [("5", "low"), ("1000000", "high")])
def test_training_set_size_outside_the_data_is_refused_next_to_the_control(n, clamped_to):
    """A size below one image per class goes up to the data set's least, one above what it
    holds down to its most, and the message beside the control names the range and both
    numbers."""
    from core.config import n_train_range
    from core.data import load_digits_dataset

    low, high = n_train_range(load_digits_dataset())
    at = open_page(HOME, **{**SMALL, "n": n})
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    expected = low if clamped_to == "low" else high
    assert f"Training images must be between {low} (one per class) and {high:,}" in errors
    assert f"{int(n):,} was changed to {expected:,}" in errors
    assert url(at)["n"] == str(expected)
    assert at.sidebar.number_input(key="ws_w_n_train").value == expected
    assert len(at.get("image")) >= 1


HOSTILE = ["[click](javascript:alert(1))", "<img src=x onerror=alert(2)>", "**loud**"]


def hostile_upload():
    """An upload whose file and class names are Markdown and HTML."""
    import io

    import numpy as np

    from core import uploads

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.integers(0, 256, (300, 8, 8), dtype=np.uint8),
             y_train=np.repeat(np.arange(3), 100), class_names=np.array(HOSTILE))
    return uploads.load_upload([("<b>[x](http://evil)</b>.npz", buf.getvalue())])


@pytest.mark.parametrize("path,view", [
    (HOME, {}), ("views/first_step.py", {"cls": "0"}),
    ("views/hardest_examples.py", {"cls": "1"}),
])
def test_file_and_class_names_are_never_rendered_as_markdown_or_html(path, view):
    upload = hostile_upload()
    at = app_test(path)
    at.session_state["ws_upload"] = upload
    for k, v in {"ds": "upload", "n": "150", "T": "20", **view}.items():
        at.query_params[k] = v
    at.run()
    assert_clean(at)
    assert url(at)["ds"] == "upload"
    bodies = " ".join(m.value for m in at.markdown)
    for raw in HOSTILE + ["[x](http://evil)", "<b>"]:
        assert raw not in bodies  # every occurrence is escaped (or, for paths, cut)
    if view.get("cls"):
        assert any(escaped(h) in bodies for h in HOSTILE), "the class name is shown, escaped"


def escaped(text):
    from ui.draw import md

    return md(text)


def test_an_operator_folder_is_offered_by_name_and_trains(monkeypatch, tmp_path):
    import numpy as np

    rng = np.random.default_rng(2)
    folder = tmp_path / "letters"
    folder.mkdir()
    np.savez(folder / "letters.npz", x_train=rng.integers(0, 256, (300, 10, 10), dtype=np.uint8),
             y_train=np.repeat(np.arange(3), 100), class_names=np.array(["a", "b", "c"]))
    monkeypatch.setenv("WEIGHTSCOPE_FOLDERS", f"letters={folder};broken=/nonexistent/path")
    at = open_page("views/trajectory.py", ds="folder:letters", n=150, T=30)
    assert_clean(at)
    choices = at.sidebar.selectbox(key="ws_w_dataset").options
    assert "Folder: letters" in choices and not any("broken" in c for c in choices)
    assert url(at)["ds"] == "folder:letters"
    assert len(at.get("image")) >= 5


def _x_domains(at: AppTest) -> list[list[float]]:
    import json

    return [json.loads(c.proto.spec)["layer"][0]["encoding"]["x"]["scale"]["domain"]
            for c in at.get("vega_lite_chart")]


def test_overfitting_curves_start_where_the_runs_part_and_links_keep_it():
    """The curves start near the early-stopping step by default (the runs look alike
    before), the control moves every chart's axis, and the choice travels in the URL."""
    at = open_page("views/overfitting.py", **SMALL)
    assert_clean(at)
    # The note that said what was about to be trained says, once trained, that it was.
    assert not [c for c in at.caption if "to train" in c.value], "a stale first-visit note"
    trained = [c.value for c in at.caption if c.value.startswith("Trained ")]
    assert len(trained) == 1 and trained[0].startswith(
        "Trained 4 run(s) for this page (no penalty, L2 0.001, L2 0.01, L1 0.0003)"), trained
    table = at.dataframe[0].value
    best = int(table.loc[table["run"] == "no penalty", "best at"].iloc[0])
    start = at.select_slider(key="ws_v/Overfitting/from").value
    assert 1 <= start <= max(1, best // 5) and start * 10 > max(1, best // 5)
    # The address bar leaves out view values at their default (arriving on a page is then
    # one history entry); the copied link spells every one out.
    assert "from" not in url(at)
    assert f"from={start}" in next(c.value for c in at.sidebar.code)
    assert all(d[0] == start for d in _x_domains(at)) and len(_x_domains(at)) == 3

    at.select_slider(key="ws_v/Overfitting/from").set_value(1).run()
    assert_clean(at)
    assert not [c for c in at.caption if "run(s)" in c.value], "all trained before this visit"
    assert url(at)["from"] == "1"
    assert all(d[0] == 1 for d in _x_domains(at))

    again = open_page("views/overfitting.py", **SMALL, **{"from": 2})
    assert again.select_slider(key="ws_v/Overfitting/from").value == 2
    assert all(d[0] == 2 for d in _x_domains(again))
    bad = open_page("views/overfitting.py", **SMALL, **{"from": "soon"})
    assert not bad.exception
    assert any("from='soon'" in w.value for w in bad.warning)
    assert bad.select_slider(key="ws_v/Overfitting/from").value == start


def test_a_learning_rate_past_the_stability_limit_is_flagged_before_it_diverges():
    at = open_page(HOME, **SMALL)
    assert_clean(at)
    assert not at.warning
    caption = next(c.value for c in at.caption if "stability limit 2/L" in c.value)
    limit = float(re.search(r"stability limit 2/L = ([0-9.e+-]+)", caption).group(1).rstrip("."))
    at.sidebar.text_input(key="ws_w_learning_rate").set_value(f"{1.5 * limit:.6g}").run()
    assert not at.exception and not at.error, "1.5x the limit still descends here"
    warned = [w.value for w in at.warning if "stability limit" in w.value]
    assert len(warned) == 1 and "1.5x" in warned[0], warned
    at.sidebar.text_input(key="ws_w_learning_rate").set_value(f"{0.9 * limit:.6g}").run()
    assert not [w for w in at.warning if "stability limit" in w.value]


def test_a_link_below_one_image_per_class_is_clamped_with_the_data_sets_range():
    """n=1 in a link meets the same rule and message as n=1 typed in the sidebar."""
    at = open_page("views/trajectory.py", **{**SMALL, "n": 1})
    assert not at.exception
    messages = [e.value for e in at.sidebar.error]
    assert any("between 10 (one per class)" in m and "1 was changed to 10" in m
               for m in messages), messages
    assert url(at)["n"] == "10"
    assert not [w for w in at.warning if "n='1'" in w.value]


def test_steps_read_as_steps_everywhere_and_lbfgs_counts_iterations():
    """The regularization table writes its steps as the rest of the app does (30,000, not
    30000), and the progress bar counts L-BFGS iterations, as its sidebar control says."""
    import json

    from core.config import TrainConfig
    from ui.training import progress_text

    at = open_page("views/overfitting.py", **SMALL)
    assert_clean(at)
    config = json.loads(at.dataframe[0].proto.columns)
    formats = {c: config.get(c, {}).get("type_config", {}).get("format") for c in
               ("step", "best at", "val acc")}
    assert formats == {"step": "localized", "best at": "localized", "val acc": "%.3f"}, formats
    gd = progress_text("the run", TrainConfig(), 1500, 30_000, 3.2, 60.4)
    assert gd == "Training the run: 1,500 of 30,000 steps, 3 s, about 60 s left"
    lbfgs = progress_text("the run", TrainConfig(optimizer="lbfgs", dtype="float64"), 12, 300,
                          1.0, None)
    assert lbfgs == "Training the run: 12 of 300 iterations, 1 s"


def page_text(at: AppTest) -> str:
    """Every title, text, caption, notice and metric help of the main area, as one string."""
    parts = [e.value for kind in ("title", "markdown", "caption", "info", "warning")
             for e in getattr(at.main, kind)]
    parts += [m.proto.help for m in at.main.metric]
    return "\n".join(parts)


def same_run(**settings):
    """The run a page shows for these settings, trained here (training is deterministic)."""
    from core.settings import Settings
    from core.trainer import train
    from ui.resources import dataset

    s = Settings(**settings)
    return train(dataset(s.dataset), s.config())


#: Overfits within its 1,000 steps (validation minimum near step 600) and trains in seconds.
OVERFITS = {"ds": "digits", "n": "10", "T": "1000"}


def test_overfitting_page_says_how_much_of_the_noise_came_before_the_validation_minimum():
    from core import metrics, report

    at = open_page("views/overfitting.py", **OVERFITS)
    assert_clean(at)
    text = page_text(at)
    assert "Noise is overfitting" not in text and "noise is overfitting" not in text
    base = same_run(dataset="digits", n_train=10, iterations=1000)
    rise = metrics.roughness_rise(base)
    assert rise["overfits"] and 0 < rise["share"] < 1
    assert (f"**{report.percent(rise['share'])} of the roughness rise** (from "
            f"{rise['at_first']:.2f} at step 1 to {rise['at_last']:.2f} at step 1,000) happened "
            f"before the validation minimum at step {rise['best']:,}") in text
    assert "Nothing overfits yet" not in text

    # L1 is read by its zeros: no roughness in the table, and the caption says why.
    table = at.dataframe[0].value
    l1 = table[table["run"] == "L1 0.0003"].iloc[0]
    assert np.isnan(l1["roughness"]) and l1["zeros"] > 0
    assert table.loc[table["run"] != "L1 0.0003", "roughness"].notna().all()
    assert (f"L1 0.0003 has no roughness: {report.percent(l1['zeros'])} of its weights are "
            "exactly zero") in text and "sparsity as noise" in text

    # Each L2 run is given the stopping step it acts like, t = 1 / (a l2).
    a = base.learning_rate
    for label, l2 in (("L2 0.001", 0.001), ("L2 0.01", 0.01)):
        step = round(1 / (a * l2))
        assert table.loc[table["run"] == label, "like stopping at"].iloc[0] == step
        assert f"{label} ≈ stopping at step {step:,}" in text
    assert table.loc[table["run"] == "no penalty", "like stopping at"].isna().all()


def test_overfitting_page_says_when_nothing_overfits_yet_and_links_the_preset_that_does():
    from urllib.parse import parse_qsl

    from core import metrics
    from core.settings import PRESETS

    at = open_page("views/overfitting.py", **SMALL)
    assert_clean(at)
    base = same_run(dataset="digits", n_train=300, iterations=60)
    rise = metrics.roughness_rise(base)
    assert rise["best"] == rise["last"] == 60, "this configuration must not overfit"
    text = page_text(at)
    assert "Nothing overfits yet at these settings: validation loss is still falling at the " \
           "last step (60)" in text
    assert "of the roughness rise**" not in text
    preset = next(p for p in PRESETS if p.title == "Reproduce the answer")
    links = [link.proto for link in at.main.page_link]
    from core.data import load_dataset
    if not load_dataset(preset.settings.dataset).is_fallback:
        assert len(links) == 1 and links[0].page.endswith("Overfitting"), links
        params = dict(parse_qsl(links[0].query_string))
        assert params["n"] == str(preset.settings.n_train)
        assert params["T"] == str(preset.settings.iterations)
        assert params["ds"] == preset.settings.dataset


def test_overfitting_page_on_lbfgs_has_no_equivalent_stopping_step():
    at = open_page("views/overfitting.py", **{**SMALL, "T": "30"}, opt="lbfgs")
    assert_clean(at)
    assert "like stopping at" not in at.dataframe[0].value.columns
    assert "L-BFGS has no step size" in page_text(at)


def test_trajectory_quotes_the_step_zero_baseline_and_no_typicality():
    from core import metrics, report

    at = open_page("views/trajectory.py", **SMALL)
    assert_clean(at)
    text = page_text(at)
    assert "typicality" not in text.lower() and "pulls equally" not in text
    assert "equal pulls" not in text
    run = same_run(dataset="digits", n_train=300, iterations=60)
    step0 = metrics.gradient_concentration(run.grad_norms(0))
    help_text = next(m.proto.help for m in at.metric if m.label.startswith("Top-10 %"))
    assert f"the share there, {report.percent(step0)}, comes from image norms alone" in help_text
    norms = run.grad_norms(60)
    share = metrics.top_share(norms, 20)
    baseline = metrics.top_share(run.grad_norms(0), 20)
    assert (f"These 20 of 300 training images (6.7% of them) carry **{report.percent(share)}** "
            "of the summed gradient norm.") in text
    assert f"only the image norms differ, the 20 largest carry {report.percent(baseline)}" in text
    assert 'The page "Where it heads" shows which examples stop pulling' in text
    import json

    pull = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")
            if "Who pulls" in c.proto.spec]
    assert len(pull) == 1 and "typicality" not in json.dumps(pull[0])


def test_trajectory_on_lbfgs_never_prints_a_share_of_zero():
    at = open_page("views/trajectory.py", **{**SMALL, "T": "30"}, opt="lbfgs")
    assert_clean(at)
    text = page_text(at)
    assert "These 20 of 300" in text
    assert not re.search(r"(?<![\d.])0(\.0+)?\s?%", text), text


def test_hardest_examples_count_never_learned_as_forgotten_infinitely_often():
    from core import metrics, report

    at = open_page("views/hardest_examples.py", **SMALL)
    assert_clean(at)
    run = same_run(dataset="digits", n_train=300, iterations=60)
    never = metrics.never_learned(run.learned_at, run.forgetting_events)
    zero = int(((run.forgetting_events == 0) & ~never).sum())
    assert never.sum() > 0 and zero > 0
    text = page_text(at)
    assert (f"Full-batch training rarely forgets: {zero:,} of 300 training images were never "
            f"forgotten once learned (0 events), {int(never.sum()):,} were never learned") in text
    shown = report.hardest(run, 60, 30)
    position = next(r for r, i in enumerate(shown) if never[i])
    at.selectbox(key="ws_v/Hardest_examples/ex").set_value(position).run()
    assert_clean(at)
    assert any("**∞**" in m.value for m in at.markdown)
    learned = next(r for r, i in enumerate(shown) if not never[i])
    at.selectbox(key="ws_v/Hardest_examples/ex").set_value(learned).run()
    count = int(run.forgetting_events[shown[learned]])
    assert any(f"**{count}** times" in m.value for m in at.markdown)
    assert not any("∞" in m.value for m in at.markdown if m.value.startswith("- "))


def test_one_vs_rest_first_step_says_it_is_minus_the_mean_image_and_shows_the_contrasts():
    from core import metrics
    from ui.resources import dataset

    at = open_page("views/first_step.py", **SMALL, model="ovr")
    assert_clean(at)
    text = page_text(at)
    assert at.title[0].value.startswith("The first one-vs-rest step is minus the average image")
    run = same_run(dataset="digits", n_train=300, iterations=60, model="ovr")
    ds = dataset("digits")
    x = ds.x_train[run.train_indices].reshape(300, -1) / 255.0
    y = ds.y_train[run.train_indices]
    W1, _ = metrics.first_step_closed_form(x, y, 10, 1.0, "ovr")
    to_mean = metrics.similarity(W1, np.broadcast_to(-x.mean(axis=0), W1.shape))
    to_class = metrics.similarity(W1, metrics.class_means(x, y, 10))
    assert to_class.max() < 0 < to_mean.min()
    assert (f"Each step-1 image correlates {to_mean.min():.2f} to {to_mean.max():.2f} with minus "
            f"the mean image, and {to_class.min():.2f} to {to_class.max():.2f} with its own class "
            "mean") in text
    captions = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert any("Row 3: each class mean minus the mean of all images" in c for c in captions)
    softmax = open_page("views/first_step.py", **SMALL)
    assert softmax.title[0].value == "The first gradient step is an average image"
    assert "minus the mean image" not in page_text(softmax)


def test_home_says_the_noise_comes_before_the_overfitting():
    at = open_page(HOME, **SMALL)
    assert_clean(at)
    text = page_text(at)
    assert "noise is overfitting" not in text
    assert "overfitting begins only where that stops paying" in text


EXPLAINER = "What am I looking at?"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_says_what_it_shows_in_plain_words(path):
    """Each page opens with a box saying, without the thread's jargon, what it shows and
    what to look for: open on the analysis pages, closed on Home (whose first paragraph
    already lists what each page shows; the box there gives the background)."""
    at = open_page(path, **SMALL)
    assert_clean(at)
    boxes = [e for e in at.main.expander if e.label == EXPLAINER]
    assert len(boxes) == 1, f"{path} needs one st.expander({EXPLAINER!r}) under its title"
    words = " ".join(m.value for m in boxes[0].markdown).split()
    assert len(words) >= 40, words
    assert boxes[0].proto.expanded == (path != HOME)
    # Under the title, before anything the page draws to look at.
    order = [getattr(node, "type", "") for node in at.main]
    box = next(i for i, node in enumerate(at.main) if node is boxes[0])
    drawn = [order.index(kind) for kind in ("image", "vega_lite_chart") if kind in order]
    assert drawn and order.index("title") < box < min(drawn), order


#: Jargon a page may show, with words that must define it where it is shown: in the text or
#: the tooltip of the element that shows it. Charts have no tooltip: a term on a chart's
#: axis must be defined in the page's text.
JARGON = {
    r"\bnats\b": ("natural-log units", "uniform guess"),
    r"2/L": ("curvature", "below 2/L", "1/L is a safe"),
    r"(?i)\bsmoothness\b": ("curvature",),
    r"(?i)\bfootnote\b": ("CrossValidated",),
}
#: Terms that also appear in preset names and blurbs: the page must say what they are.
ON_THE_PAGE = {r"\bthe (question|answer)\b": ("CrossValidated", "483072")}


def shown_with_tooltips(at: AppTest) -> list[tuple[str, str]]:
    """(text, tooltip) of every text, notice, metric and choice in the main area."""
    shown = [(e.value, getattr(e.proto, "help", ""))
             for kind in ("title", "markdown", "caption", "latex", "info", "warning")
             for e in getattr(at.main, kind)]
    shown += [(f"{m.label} {m.value}", m.proto.help) for m in at.main.metric]
    shown += [(w.label, w.help or "") for kind in ("select_slider", "radio", "selectbox")
              for w in getattr(at.main, kind)]
    return shown


@pytest.mark.parametrize("path,extra", [pytest.param(p, {}, id=p) for p in PAGES]
                         + [pytest.param(HOME, {"opt": "lbfgs"}, id=f"{HOME}-lbfgs")])
def test_jargon_shown_on_a_page_is_defined_where_it_is_shown(path, extra):
    at = open_page(path, **SMALL, **extra)
    assert_clean(at)
    shown = shown_with_tooltips(at)
    text = "\n".join(f"{value}\n{tip}" for value, tip in shown)
    axes = " ".join(c.proto.spec for c in at.get("vega_lite_chart"))
    seen = set()
    for term, definition in JARGON.items():
        for value, tip in shown:
            if re.search(term, value):
                seen.add(term)
                missing = [d for d in definition if d not in value + tip]
                assert not missing, f"{path}: {value!r} shows {term} without {missing}"
        if re.search(term, axes):
            seen.add(term)
            assert all(d in text for d in definition), f"{path}: a chart shows {term} undefined"
    for term, definition in ON_THE_PAGE.items():
        if re.search(term, text):
            seen.add(term)
            assert all(d in text for d in definition), f"{path} shows {term} undefined"
    assert not re.search(r"1/L[^.]*\blargest\b", text), "1/L is not the largest safe step"
    if path == HOME:
        assert seen >= {r"(?i)\bsmoothness\b", *ON_THE_PAGE} | (set() if extra else {"2/L"}), seen
    elif path == "views/first_step.py":
        assert r"(?i)\bfootnote\b" in seen
    elif path in ("views/trajectory.py", "views/overfitting.py", "views/hardest_examples.py"):
        assert r"\bnats\b" in seen


def test_spectrum_page_says_how_much_of_the_noise_came_before_the_minimum():
    """A run that overfits (10 digits, 1,000 steps): the sentence quotes the share of the
    roughness rise before the validation minimum, computed from the same run."""
    from core import metrics, report
    from core.data import load_digits_dataset
    from core.settings import Settings
    from core.trainer import train

    at = open_page("views/spectrum.py", ds="digits", n="10", T="1000")
    assert_clean(at)
    text = " ".join(m.value for m in at.markdown if "validation minimum" in m.value)
    run = train(load_digits_dataset(), Settings(dataset="digits", n_train=10,
                                                iterations=1000).config())
    rise = metrics.roughness_rise(run)
    assert rise["overfits"]
    assert f"(step {rise['best']:,})" in text
    assert f"{report.percent(rise['share'])} of the roughness rise came before the minimum" in text


#: Markdown and HTML a crafted link could carry: a link, an image from another host, a
#: heading on its own line (ATX and setext), raw HTML, an autolink, a code span to close.
PAYLOAD = ("x`](y) [Session expired: sign in again](https://evil.example/login) "
           "![i](https://evil.example/p.png)\n# Fake heading\nUnderlined\n===\n"
           "<img src=https://evil.example/q.png><a href=https://evil.example>a</a> "
           "www.evil.example **loud**")
#: Parts of the payload that must never reach a page unescaped, whatever the parameter.
MARKERS = ("](y)", "](https", "![i]", "<img", "<a href", "\n# Fake", "\n===", "evil.example",
           "www.evil", "**loud**")


def strings_of(message, out: list[str]) -> list[str]:
    """Every string field of a protobuf message, recursively (bodies, labels, help,
    captions, options, placeholders: whatever the front end may render)."""
    for field, value in message.ListFields():
        repeated = not isinstance(value, (str, bytes)) and not hasattr(value, "ListFields") \
            and hasattr(value, "__iter__")
        values = value if repeated else [value]
        for v in values:
            if isinstance(v, str):
                out.append(v)
            elif hasattr(v, "ListFields"):
                strings_of(v, out)
    return out


def rendered_strings(at: AppTest) -> list[str]:
    out: list[str] = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ListFields"):
            strings_of(proto, out)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def unescaped(text: str) -> str:
    """``text`` with every backslash-escaped character removed: what is left is what
    Markdown may interpret."""
    return re.sub(r"\\.", "", text, flags=re.S)


def renders_payload(text: str) -> bool:
    """Whether Markdown would make markup of the payload in ``text``: its syntax where it
    is not escaped, or a web address anywhere (GFM links "https://x" and "www.x" even
    when their characters are escaped)."""
    literal = re.sub(r"\\(.)", r"\1", text, flags=re.S)
    return any(m in unescaped(text) for m in MARKERS) or \
        any(m in literal for m in ("://evil", "www.evil"))


@pytest.mark.parametrize("path", PAGES)
def test_no_link_value_is_rendered_as_markdown_or_html(path):
    """Every parameter of the page's links (settings, view values, the link version, the
    data fingerprint and an unknown one) carries the payload: no string the page sends
    to the browser holds it in a form Markdown would render."""
    from ui.frame import PAGES as SPECS

    spec = next(s for s in SPECS if s.file == path)
    at = app_test(path)
    for k, v in SMALL.items():
        at.query_params[k] = v
    at.query_params["v"] = PAYLOAD
    at.query_params["data"] = PAYLOAD
    at.query_params["evil"] = PAYLOAD
    for key in spec.views:
        at.query_params[key] = PAYLOAD
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    shown = rendered_strings(at)
    assert any("Session expired" in s for s in shown), "the payload was not shown at all"
    bad = [s for s in shown if renders_payload(s)]
    assert not bad, bad


@pytest.mark.parametrize("key", [s.key for s in __import__("core.config").config.SETTINGS])
def test_no_setting_in_a_link_is_rendered_as_markdown_or_html(key):
    """The payload in one setting at a time (the rest of the link valid): the frame reads
    settings the same way for every page, so Home stands for all."""
    at = open_page(HOME, **{**SMALL, key: PAYLOAD})
    assert not at.exception, [e.message for e in at.exception]
    shown = rendered_strings(at)
    assert any("Session expired" in s for s in shown), "the ignored value was not quoted"
    bad = [t for t in shown if renders_payload(t)]
    assert not bad, bad


# --------------------------------------------------------------------------- uploads through the uploader


def idx_file(array) -> bytes:
    """``array`` (uint8) as a plain IDX file."""
    import struct

    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def tiny_idx_upload(per_class: int, classes: int = 3, names=("train-images-idx3-ubyte",
                                                              "train-labels-idx1-ubyte")):
    """Plain IDX images and labels (as the uploader takes them: name, bytes, MIME type) of
    ``per_class`` random 6 x 5 images of each class."""
    rng = np.random.default_rng(per_class)
    y = np.repeat(np.arange(classes), per_class)
    x = rng.integers(0, 256, (len(y), 6, 5), dtype=np.uint8)
    return [(names[0], idx_file(x), "application/octet-stream"),
            (names[1], idx_file(y), "application/octet-stream")]


def upload_on_home(files) -> AppTest:
    """The home page (small digits runs) after ``files`` were chosen in its uploader."""
    at = app_test(HOME)
    for k, v in {**TINY, "T": "20"}.items():
        at.query_params[k] = v
    at.run()
    at.file_uploader(key="ws_uploader").set_value(files).run()
    return at


#: What a page that shows validation numbers says when the data have none.
NO_VALIDATION = "too few for a validation hold-out"


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("per_class", [2, 4])
def test_an_upload_too_small_for_validation_trains_on_every_page_and_says_so(path, per_class):
    """2 or 4 training images per class (the smallest accepted, and one short of a
    validation hold-out), uploaded through the home page's uploader: every page trains and
    draws, and a page that shows validation numbers says there are none."""
    at = upload_on_home(tiny_idx_upload(per_class))
    assert_clean(at)
    assert url(at)["ds"] == "upload"
    if path != HOME:
        at.switch_page(path)
        at.run()
        settle(at)
        assert_clean(at)
        assert url(at)["ds"] == "upload"
    assert len(at.get("image")) >= 1
    if path == "views/hardest_examples.py":  # validation images only on the validation split
        at.radio(key="ws_v/Hardest_examples/split").set_value("val").run()
        assert_clean(at)
    text = page_text(at)
    shown = text + " " + " ".join(m.value for m in at.main.metric)
    assert "nan" not in re.findall(r"[a-z]+", shown), "a number is shown as nan"
    if path not in ("views/first_step.py", "views/limit.py"):
        assert NO_VALIDATION in text, text


# --------------------------------------------------------------------------- settings from the environment


def test_a_cap_below_one_step_says_that_one_step_is_trained(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_MAX_WORK", "1e2")
    at = open_page(HOME, **SMALL)  # 60 steps on 300 images; one step is 300 image-steps
    assert not at.exception
    [message] = [e.value for e in at.sidebar.error]
    assert "cap of 100 image-steps" in message
    assert "and so is 1 step on 300 images; training 1 step, the smallest run there is" in message
    assert "At most 100 training images would keep within it" in message
    assert url(at)["T"] == "1"


def test_home_names_operator_folders_without_their_paths_and_reports_a_broken_one(
        monkeypatch, tmp_path, server_log):
    from ui.draw import md

    rng = np.random.default_rng(2)
    good, gone = tmp_path / "srv" / "letters", tmp_path / "srv" / "gone"
    good.mkdir(parents=True)
    np.savez(good / "letters.npz", x_train=rng.integers(0, 256, (300, 10, 10), dtype=np.uint8),
             y_train=np.repeat(np.arange(3), 100))
    monkeypatch.setenv("WEIGHTSCOPE_FOLDERS", f"letters={good};broken={gone}")
    at = open_page(HOME, ds="folder:letters", n=150, T=30)
    assert not at.exception
    shown = page_text(at) + "\n".join(e.value for e in at.sidebar.get("caption"))
    for path in (tmp_path, good, gone):
        assert str(path) not in shown and md(path) not in shown
    assert md("From the server's data folder 'letters': letters.npz") in shown
    assert any("The folder 'broken' could not be loaded; the server log says why." in w.value
               for w in at.warning), [w.value for w in at.warning]
    # The operator finds the reason, with the path, in the log: once, however many reruns.
    at.run()
    assert len(server_log("WEIGHTSCOPE_FOLDERS", "'broken'", str(gone))) == 1


def test_a_link_to_a_missing_or_broken_folder_says_so_and_keeps_the_data_in_use(
        monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTSCOPE_FOLDERS", f"broken={tmp_path / 'empty'}")
    (tmp_path / "empty").mkdir()  # holds no data files
    at = open_page(HOME, **SMALL)
    assert_clean(at)
    for name, says in (("nope", "this server has no data folder called 'nope'"),
                       ("broken", "the folder 'broken' could not be loaded; the server log "
                                  "says why")):
        at.query_params["ds"] = f"folder:{name}"
        at.run()
        assert not at.exception
        warnings = [w.value for w in at.warning]
        assert any(says in w and "Showing Digits" in w for w in warnings), warnings
        text = page_text(at)
        assert "apt-get" not in text and "Install" not in text and str(tmp_path) not in text
        assert url(at)["ds"] == "digits"  # the data in use stays
        assert len(at.get("image")) >= 1


def test_an_empty_data_dir_leaves_the_digits_working_and_says_why(monkeypatch, tmp_path,
                                                                   server_log):
    from ui.draw import md

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("WEIGHTSCOPE_DATA_DIR", str(empty))
    at = open_page(HOME, **SMALL)
    assert not at.exception
    assert len(at.get("image")) >= 1
    assert "fashion-mnist" not in at.sidebar.selectbox(key="ws_w_dataset").options
    says = md("Fashion-MNIST could not be loaded from the folder that WEIGHTSCOPE_DATA_DIR names "
              "(the server log says why)")
    assert any(says in i.value for i in at.info), [i.value for i in at.info]
    assert str(empty) not in page_text(at)
    assert server_log("WEIGHTSCOPE_DATA_DIR", str(empty), "lacks train-images")


def npz_upload(name: str = "mine.npz", **arrays) -> tuple[str, bytes, str]:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return name, buf.getvalue(), "application/octet-stream"


@pytest.mark.parametrize("names", [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("a-train-images.idx3-ubyte", "a-train-labels.idx1-ubyte"),
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("train images", "train labels"),
])
def test_the_uploader_takes_every_file_name_the_loader_reads(names):
    """IDX files are read by content whatever their names: the uploader must not refuse
    them by extension (it refused plain IDX names with a StreamlitAPIException)."""
    import gzip

    files = tiny_idx_upload(10, names=names)
    if names[0].endswith(".gz"):
        files = [(n, gzip.compress(data), mime) for n, data, mime in files]
    at = upload_on_home(files)
    assert_clean(at)
    assert url(at)["ds"] == "upload"
    assert at.sidebar.selectbox(key="ws_w_dataset").value == "upload"


@pytest.mark.parametrize("bad, says", [
    (npz_upload("flat.npz", x_train=np.zeros((30, 0, 5), np.uint8), y_train=np.arange(30) % 3),
     "x_train in flat.npz has images of 5 x 0 pixels"),
    (npz_upload("nan.npz", x_train=np.full((30, 4, 4), np.nan), y_train=np.arange(30) % 3),
     "x_train in nan.npz holds values from nan"),
    (npz_upload("one.npz", x_train=np.zeros((30, 4, 4), np.uint8), y_train=np.zeros(30, int)),
     "y_train in one.npz has only one class"),
    (("notes.csv", b"a,b\n1,2\n", "text/csv"), "notes.csv is not a .npz, .zip or IDX file"),
])
def test_a_refused_upload_says_why_and_the_data_in_use_stays(bad, says):
    """After a good upload, a bad file gets its message and the good data stays in use."""
    at = upload_on_home(tiny_idx_upload(10))
    assert_clean(at)
    good = url(at)["data"]
    at.file_uploader(key="ws_uploader").set_value(bad).run()
    assert not at.exception, [e.message for e in at.exception]
    message = " ".join(e.value for e in at.error)
    assert md_plain(says) in message and "The data set in use is unchanged." in message
    assert (url(at)["ds"], url(at)["data"]) == ("upload", good)
    assert len(at.get("image")) >= 1


def md_plain(text: str) -> str:
    """``text`` as ui.draw.md escapes it (the form it takes in a message)."""
    return escaped(text)


def test_upload_notices_name_members_and_classes_escaped():
    """Notices about an upload quote names from inside it (ignored arrays, class labels):
    they are escaped, never rendered as Markdown."""
    link = "[click](https://evil.example)"
    rng = np.random.default_rng(0)
    at = upload_on_home([npz_upload(
        "m.npz", x_train=rng.integers(0, 256, (30, 4, 4), dtype=np.uint8),
        y_train=np.arange(30) % 3, **{link: np.zeros(1)})])
    assert_clean(at)
    notices = [i.value for i in at.main.info]
    assert any(escaped(link) in n for n in notices), notices
    assert not any(link in n for n in notices), notices


# --------------------------------------------------------------------------- memory per run

#: WEIGHTSCOPE_CACHE_MB=1: 0.25 MB per run, over which SMALL (300 digits, 60 steps: about
#: 0.6 MB of records) lies and TINY (app_test's first run) does not.
TINY_BUDGET = "1"
LIMIT = "over this server's limit of 0.25 MB per run"


def trainings() -> int:
    """Trainings the process's run store has started (AppTest runs the app in-process)."""
    from ui.resources import run_store

    return run_store().trainings


def open_refused(path: str, **params) -> tuple[AppTest, int]:
    """Page ``path`` opened by a link with ``params``; the trainings started before it."""
    at = app_test(path)
    before = trainings()
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at, before


def suggested(message: str, label: str) -> int:
    found = re.search(re.escape(label) + r" to ([0-9,]+)", message)
    assert found, f"no {label!r} to a number in: {message}"
    return int(found.group(1).replace(",", ""))


def test_a_link_over_the_memory_bound_is_refused_and_trains_nothing(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", TINY_BUDGET)
    at, before = open_refused("views/trajectory.py", **SMALL)
    message = " ".join(e.value for e in at.main.error)
    assert "These settings cannot be trained" in message and LIMIT in message
    assert any(LIMIT in e.value for e in at.sidebar.error), "the control says so too"
    assert trainings() == before, "a run over the bound was trained"
    assert len(at.get("image")) == 0
    assert url(at)["T"] == "60"  # the link stays as it came, refused, not changed
    # The advice is right: the steps it names fit and train.
    steps = suggested(message, "Gradient steps")
    at.sidebar.number_input(key="ws_w_iterations").set_value(steps).run()
    assert_clean(at)
    assert trainings() == before + 1 and url(at)["T"] == str(steps)
    assert len(at.get("image")) >= 5


def test_steps_typed_over_the_memory_bound_are_refused_next_to_the_control(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", TINY_BUDGET)
    at = open_page(HOME, ds="digits", n=100, T=10)
    assert_clean(at)
    before = trainings()
    at.sidebar.number_input(key="ws_w_iterations").set_value(100).run()
    assert not at.exception
    [message] = [e.value for e in at.sidebar.error]
    assert LIMIT in message and "Keeping 10 steps." in message
    assert trainings() == before and url(at)["T"] == "10"  # the last good run stays
    assert not at.main.error and len(at.get("image")) >= 1


def test_the_overfitting_page_refuses_its_runs_over_the_memory_bound_before_any_trains(
        monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", TINY_BUDGET)
    at, before = open_refused("views/overfitting.py", **SMALL)
    message = " ".join(e.value for e in at.main.error)
    assert LIMIT in message and "Gradient steps to" in message
    assert trainings() == before
    assert not any("to train" in c.value for c in at.caption), "it announced runs to train"


def test_lbfgs_over_the_memory_bound_counts_its_iterates_and_trains_nothing(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", TINY_BUDGET)
    at, before = open_refused("views/trajectory.py", ds="digits", n=100, T=60, opt="lbfgs")
    message = " ".join(e.value for e in at.main.error)
    assert LIMIT in message and "iterates L-BFGS holds while it trains" in message
    iterations = suggested(message, "Iterations (at most)")
    assert trainings() == before
    at.sidebar.number_input(key="ws_w_iterations").set_value(iterations).run()
    assert_clean(at)
    assert trainings() == before + 1


@pytest.mark.parametrize("l2", ["1e39", "1e300"])
def test_a_penalty_too_large_for_the_arithmetic_is_named_as_the_cause_not_the_step(l2):
    """L2 = 1e39 overflows float32 (largest 3.4e38): the run stops at once, and the message
    blames the penalty, not the step (which was 1/L, within the stability limit)."""
    at = open_page("views/trajectory.py", **SMALL, l2=l2)
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "Diverged at iteration 1" in message, message
    assert f"L2 penalty {float(l2):g}" in message and "float32" in message, message
    assert "smaller L2 penalty" in message, message
    assert "learning rate" not in message, message


# --------------------------------------------------------------------------- Compare

COMPARE = "views/compare.py"
#: Side B of a compare link: another size, penalty and model than side A (SMALL).
SIDE_B = {"b.ds": "digits", "b.n": "200", "b.T": "60", "b.l2": "0.01", "b.model": "ovr"}


def side_b(at: AppTest, name: str):
    """Side B's control for setting ``name`` (drawn on the page, not in the sidebar)."""
    from ui.sidebar import widget_key
    key = widget_key(name, "b.")
    for kind in ("number_input", "radio", "text_input", "selectbox"):
        found = [w for w in getattr(at.main, kind) if w.key == key]
        if found:
            return found[0]
    raise AssertionError(f"no control {key} on the page")


def compare_numbers(at: AppTest) -> list[list[str]]:
    """The key-numbers table (A, B, B - A by row) as shown."""
    [table] = [t for t in at.main.table if "Roughness" in t.value.index]
    return table.value.values.tolist()


def test_a_compare_link_reproduces_both_sides_and_the_url_it_writes_round_trips():
    at = open_page(COMPARE, **SMALL, **SIDE_B, t=20)
    assert_clean(at)
    assert at.sidebar.number_input(key="ws_w_n_train").value == 300
    assert at.sidebar.radio(key="ws_w_model").value == "softmax"
    assert side_b(at, "n_train").value == 200 and side_b(at, "model").value == "ovr"
    assert side_b(at, "l2").value == pytest.approx(0.01)
    assert at.select_slider[0].value == 20
    written = url(at)
    for k, v in {**SMALL, **SIDE_B, "t": "20", "l2": "0"}.items():
        assert written[k] == v, k
    numbers = compare_numbers(at)
    assert numbers[0][0] != numbers[0][1], "A and B show the same train accuracy"
    # The copied link, opened in a new session, shows the same view and writes the same URL.
    link = next(c.value for c in at.sidebar.code)
    from urllib.parse import parse_qsl, urlsplit
    again = open_page(COMPARE, **dict(parse_qsl(urlsplit(link).query)))
    assert_clean(again)
    assert url(again) == written
    assert compare_numbers(again) == numbers
    # Changing B's control changes B only, and the address says so.
    at = side_b(at, "l2").set_value(0.1).run()
    assert_clean(at)
    assert url(at)["b.l2"] == "0.1" and url(at)["l2"] == "0" and url(at)["b.n"] == "200"
    assert compare_numbers(at)[0][0] == numbers[0][0]  # A unchanged


def test_a_malformed_side_b_value_gets_the_sidebars_notice_and_the_page_still_draws():
    at = open_page(COMPARE, **SMALL, **{**SIDE_B, "b.n": "abc"})
    assert not at.exception
    shown = [w.value.replace("\\", "") for w in at.warning]  # as read: Markdown escapes gone
    assert any("Ignored b.n='abc' in the link (not a number)" in w for w in shown), shown
    assert side_b(at, "n_train").value == 300  # B's default: A's settings
    assert len(at.get("image")) >= 2


def test_a_side_over_the_work_cap_is_refused_and_the_other_side_still_shows(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_MAX_WORK", "20000")  # A: 300 x 60 fits; B: 300 x 100 not
    at, before = open_refused(COMPARE, **SMALL, **{"b.n": "300", "b.T": "100"})
    message = " ".join(e.value for e in at.main.error)
    assert "B is not trained" in message and "Lower Gradient steps to 66" in message, message
    assert trainings() == before + 1  # A only
    assert url(at)["b.T"] == "100", "the link keeps what it asked for"
    assert len(at.get("image")) >= 2 and len(at.get("vega_lite_chart")) == 2
    assert [row[1] for row in compare_numbers(at)] == ["none"] * 5


def test_the_compare_step_control_offers_only_the_steps_both_runs_kept():
    from core.data import load_dataset  # noqa: F401 - the store's data set below
    from core.settings import Settings
    from core.trainer import one_two_five
    from ui.resources import dataset, run_store

    at = open_page(COMPARE, **{**SMALL, "T": "300"}, **{**SIDE_B, "b.T": "250"})
    assert_clean(at)
    options = [int(o.replace(",", "")) for o in at.select_slider[0].options]
    ds = dataset("digits")
    a = run_store().cached(ds, Settings(dataset="digits", n_train=300, iterations=300).config())
    b = run_store().cached(ds, Settings(dataset="digits", n_train=200, iterations=250, l2=0.01,
                                        model="ovr").config())
    both = set(a.snapshot_iterations.tolist()) & set(b.snapshot_iterations.tolist())
    assert options == sorted(set(one_two_five(300) + one_two_five(250)) & both)
    assert 200 in options and 300 not in options and 250 not in options
    assert len(both - set(options)) > 20, "the control offers steps beyond the 1-2-5 grid"


def test_presentation_link_shows_the_step_and_the_weight_images_only_and_exit_returns():
    """present=1: the step as the page's title, the slider, Play and one picture; no
    explanation, numbers or charts. Exit presentation returns to the whole page at the
    same step, and present leaves the URL; a malformed value is ignored with a notice."""
    at = open_page("views/trajectory.py", **SMALL, t=5, present=1)
    assert_clean(at)
    assert [t.value for t in at.title] == ["Step 5"]
    assert len(at.get("image")) == 1 and not at.get("vega_lite_chart") and not at.metric
    assert url(at)["present"] == "1" and url(at)["t"] == "5"
    at.button(key="ws_present_button").click().run()
    assert_clean(at)
    assert [t.value for t in at.title] == ["From templates to noise"]
    assert len(at.get("vega_lite_chart")) == 5 and len(at.metric) == 5
    assert "present" not in url(at) and url(at)["t"] == "5"
    bad = open_page("views/trajectory.py", **SMALL, present="yes")
    assert any("present" in w.value for w in bad.warning)
    assert [t.value for t in bad.title] == ["From templates to noise"]


def test_play_disables_the_slider_and_pause_hands_it_back_at_the_same_step():
    """Play (a full run that starts the timer) shows the step and a disabled slider that
    follows the play; Pause gives the slider back, and the URL keeps the step."""
    at = open_page("views/trajectory.py", **SMALL, t=5)
    play = "ws_play/Trajectory/t/button"
    assert at.button(key=play).label == "Play" and not at.select_slider[0].disabled
    at.button(key=play).click().run()
    assert_clean(at)
    assert at.button(key=play).label == "Pause" and at.select_slider[0].disabled
    assert at.select_slider[0].value == 5 and any("step 5" in s.value for s in at.subheader)
    at.button(key=play).click().run()
    assert_clean(at)
    assert at.button(key=play).label == "Play" and not at.select_slider[0].disabled
    assert at.select_slider[0].value == 5 and url(at)["t"] == "5"


def test_a_one_click_comparison_sets_both_sides_and_the_address():
    at = open_page(COMPARE, **SMALL)
    [button] = [b for b in at.main.button if b.label == "softmax vs one-vs-rest"]
    at = button.click().run()
    assert_clean(at)
    written = url(at)
    assert (written["model"], written["b.model"]) == ("softmax", "ovr")
    assert written["T"] == written["b.T"] == "3000" and written["n"] == written["b.n"]
    assert at.sidebar.number_input(key="ws_w_iterations").value == 3000
    assert side_b(at, "model").value == "ovr"
    assert any("not on softmax's scale" in c.value for c in at.main.caption)


def test_overfitting_no_longer_says_runs_are_to_train_once_they_are_trained():
    """Issue 13, item 7: the first visit's note said "3 run(s) to train" after they were
    trained; it now says they were trained, and a second visit says nothing of training."""
    at = open_page("views/overfitting.py", **SMALL)
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "to train" not in captions, captions
    assert re.search(r"Trained \d run\(s\) for this page", captions), captions
    at.run()
    assert "run(s)" not in " ".join(c.value for c in at.caption)
