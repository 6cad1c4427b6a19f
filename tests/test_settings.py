"""The settings table, TrainConfig built on it, the URL round trip, and link addresses."""

from __future__ import annotations

import math
from dataclasses import fields
from urllib.parse import parse_qsl, urlsplit

import pytest

from core.settings import (DEFAULT, LINK_VERSION, PRESETS, Settings, from_params, has_settings,
                           to_params)
from core.config import BY_NAME, SETTINGS, TrainConfig, format_number
from ui.url import absolute_url

PATHS = {"First_step", "Trajectory", "Overfitting", "Hardest_examples"}


def test_every_trainer_setting_is_a_row_of_the_table_with_the_same_default():
    config_fields = {f.name: f.default for f in fields(TrainConfig)}
    rows = {s.name: s.default for s in SETTINGS if s.name != "dataset"}
    assert set(rows) <= set(config_fields)
    assert set(config_fields) - set(rows) == {"dtype", "n_val"}, "only these are not controls"
    for name, default in rows.items():
        assert config_fields[name] == default, name
    assert Settings().config() == TrainConfig()
    assert len({s.key for s in SETTINGS}) == len(SETTINGS), "URL keys are distinct"


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_each_setting_reads_back_what_it_writes(setting):
    assert setting.parse(setting.format(setting.default)) == setting.default
    assert setting.problem(setting.default) is None


@pytest.mark.parametrize("name,text,reason", [
    ("n_train", "abc", "not a number"), ("n_train", "2.5", "not a whole number"),
    ("iterations", "0", "outside 1 to 100,000"), ("iterations", "1e309", "not a whole number"),
    ("learning_rate", "fast", 'not "auto" or a number'),
    ("learning_rate", "-1", "not a positive number"), ("learning_rate", "nan", "not a positive"),
    ("l2", "-0.1", "at least 0"), ("l1", "inf", "at least 0"),
    ("model", "svm", "not one of softmax, ovr"), ("optimizer", "adam", "not one of gd, lbfgs"),
    ("dataset", "../etc", "folder:<name>"), ("seed", "-1", "outside 0 to"),
])
def test_a_bad_value_is_refused_with_its_reason(name, text, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        BY_NAME[name].parse(text)


@pytest.mark.parametrize("name,value", [
    ("n_train", 2.5), ("iterations", 0), ("iterations", 100_001), ("learning_rate", -1.0),
    ("learning_rate", math.nan), ("learning_rate", "fast"), ("l2", -0.1), ("l1", math.inf),
    ("model", "svm"), ("optimizer", "adam"), ("seed", -1), ("seed", True),
])
def test_train_config_problems_come_from_the_table(name, value):
    problems = TrainConfig().replace(**{name: value}).problems()
    assert set(problems) == {name}, problems
    assert problems[name] == BY_NAME[name].problem(value)


def test_folder_names_and_uploads_are_data_sets_but_paths_are_not():
    ds = BY_NAME["dataset"]
    assert ds.parse("folder:my_letters-2") == "folder:my_letters-2"
    assert ds.parse("upload") == "upload"
    for bad in ("folder:", "folder:a/b", "/etc/passwd", "folder:" + "x" * 41):
        with pytest.raises(ValueError):
            ds.parse(bad)


@pytest.mark.parametrize("settings", [
    DEFAULT,
    Settings(dataset="digits", model="ovr", n_train=250, iterations=40, learning_rate=0.05,
             l2=0.001, l1=1e-5, seed=3),
    Settings(optimizer="lbfgs", learning_rate=0.1 + 0.2, l2=1 / 3, iterations=300),
    Settings(dataset="folder:letters", n_train=123_456, seed=2**31 - 1),
] + [p.settings for p in PRESETS])
def test_settings_survive_a_round_trip_through_the_url(settings):
    params = to_params(settings, "abcdef0123456789")
    assert params["v"] == LINK_VERSION and params["data"] == "abcdef01"
    assert set(params) == {"v", "data"} | {s.key for s in SETTINGS}
    back, notices = from_params(params)
    assert notices == []
    assert back == settings
    assert to_params(back, "abcdef0123456789") == params


def test_a_link_keeps_what_it_does_not_mention_and_reports_what_it_ignores():
    base = Settings(n_train=500, seed=7)
    got, notices = from_params({"T": "20", "lr": "fast", "v": "0"}, base)
    assert got == base.replace(iterations=20)
    assert len(notices) == 2
    assert "another version of Weightscope (v=0)" in notices[0]
    assert notices[1] == "Ignored lr='fast' in the link (not \"auto\" or a number); using auto."
    assert not has_settings({"t": "5", "v": "1"}) and has_settings({"seed": "1"})


def test_two_sets_of_settings_share_one_url_under_prefixes():
    """A side-by-side view keeps two full sets of settings in one address."""
    left = Settings(n_train=1000)
    right = Settings(n_train=50_000, iterations=2000, l2=0.01)
    params = {**to_params(left, "ff468147", prefix="a."),
              **to_params(right, "ff468147", prefix="b.")}
    assert params["a.n"] == "1000" and params["b.n"] == "50000"
    assert from_params(params, prefix="a.") == (left, [])
    assert from_params(params, prefix="b.") == (right, [])
    assert not has_settings(params) and has_settings(params, prefix="b.")
    _, notices = from_params({**params, "b.T": "soon"}, prefix="b.")
    assert notices == ["Ignored b.T='soon' in the link (not a number); using 3000."]


def test_settings_are_immutable_and_refuse_unknown_names():
    s = Settings(seed=1)
    with pytest.raises(AttributeError):
        s.seed = 2
    with pytest.raises(TypeError, match="unknown settings: speed"):
        Settings(speed=3)
    assert s.replace(seed=2).seed == 2 and s.seed == 1
    assert hash(s) == hash(Settings(seed=1)) and s != Settings(seed=2)


def test_lbfgs_settings_give_float64_and_ignore_the_learning_rate():
    a = Settings(optimizer="lbfgs", learning_rate=0.3).config()
    assert a == Settings(optimizer="lbfgs").config() and a.dtype == "float64"
    assert Settings(learning_rate=0.3).config().learning_rate == 0.3


@pytest.mark.parametrize("value,text", [
    (1000, "1000"), (1000.0, "1000"), (0.001, "0.001"), (0.1 + 0.2, "0.30000000000000004"),
    (1e-5, "1e-05"), ("auto", "auto"), (2.0**60, "1.152921504606847e+18"),
])
def test_numbers_are_written_as_the_shortest_text_that_reads_back(value, text):
    assert format_number(value) == text
    if not isinstance(value, str):
        assert float(text) == value


@pytest.mark.parametrize("here,page,expected", [
    ("", "Trajectory", "./Trajectory?t=5"),
    ("", "", "./?t=5"),
    ("http://host:8501/", "Trajectory", "http://host:8501/Trajectory?t=5"),
    ("http://host:8501/Hardest_examples?ex=2", "Trajectory", "http://host:8501/Trajectory?t=5"),
    ("http://host:8501/Trajectory?t=1", "", "http://host:8501/?t=5"),
    ("https://h.org/ws/", "Trajectory", "https://h.org/ws/Trajectory?t=5"),
    ("https://h.org/ws", "Trajectory", "https://h.org/ws/Trajectory?t=5"),
    ("https://h.org/ws/Trajectory", "Trajectory", "https://h.org/ws/Trajectory?t=5"),
    ("https://h.org/ws/First_step?cls=1", "", "https://h.org/ws/?t=5"),
    ("https://h.org/a/b/Overfitting", "Overfitting", "https://h.org/a/b/Overfitting?t=5"),
])
def test_a_copied_link_keeps_the_servers_base_path(here, page, expected):
    assert absolute_url(here, page, {"t": "5"}, PATHS) == expected


def test_a_copied_link_encodes_what_a_url_cannot_hold():
    link = absolute_url("http://h/", "Hardest_examples", {"ds": "folder:a b&c", "x": "é"}, PATHS)
    assert dict(parse_qsl(urlsplit(link).query)) == {"ds": "folder:a b&c", "x": "é"}


def test_a_bounded_float_names_its_range():
    from core.config import Setting

    share = Setting("momentum", "mom", "float", 0.0, "Momentum", high=0.99)
    assert share.parse("0.5") == 0.5
    with pytest.raises(ValueError, match="outside 0 to 0.99"):
        share.parse("2")
    assert share.problem(2.0) == "Momentum is outside 0 to 0.99."


def test_the_learning_rate_help_says_1_over_L_is_safe_not_the_largest_step():
    """Any step below 2/L decreases the loss, so 1/L is not "the largest step that never
    increases the loss": a step of 1.9/L decreases it at every step too."""
    import numpy as np

    from core.data import load_digits_dataset
    from core.trainer import train

    text = BY_NAME["learning_rate"].help
    assert "largest" not in text and "2/L" in text and "1/L" in text
    ds = load_digits_dataset()
    cfg = TrainConfig(n_train=300, iterations=60, n_val=50, dtype="float64")
    L = train(ds, cfg.replace(iterations=1)).smoothness
    run = train(ds, cfg.replace(learning_rate=1.9 / L))
    assert not run.diverged
    assert np.all(np.diff(run.history["objective"]) < 0)


@pytest.mark.realdata
def test_the_overfitting_presets_say_what_their_runs_show(answer_run):
    """The blurbs' numbers come from the runs they open: the validation minimum of
    "Reproduce the answer" (near step 6,000, after most of the roughness rise), and the
    roughness of "Regularization fixes it" against no penalty, whose validation loss is
    still falling at the end."""
    import re

    from core import metrics
    from core.data import load_dataset
    from core.trainer import train

    ds, base = answer_run
    answer, l2 = PRESETS[0], PRESETS[1]
    assert answer.title == "Reproduce the answer" and l2.settings.l2 > 0
    smooth = train(ds, l2.settings.config())
    rise = metrics.roughness_rise(base)
    near = int(re.search(r"turns up near step ([\d,]+)", answer.blurb).group(1).replace(",", ""))
    assert abs(rise["best"] - near) <= 0.1 * near and rise["overfits"]
    assert rise["share"] > 0.5, "most of the noise comes before the validation minimum"
    with_l2, without = re.search(r"roughness ([\d.]+) against ([\d.]+) without", l2.blurb).groups()
    assert float(with_l2) == round(metrics.roughness_rise(smooth)["at_last"], 2)
    assert float(without) == round(rise["at_last"], 2)
    assert not metrics.roughness_rise(smooth)["overfits"]  # "the validation loss keeps falling"
    assert "is overfitting" not in " ".join(p.blurb for p in PRESETS)


# --------------------------------------------------------------------------- the environment


@pytest.mark.parametrize("raw,expected", [
    ("5000", 5000), ("5_000", 5000), ("5e3", 5000), ("2.5E3", 2500), (" 5000 ", 5000),
    ("1", 1), ("1e12", 10**12),
])
def test_max_work_reads_a_whole_number_in_every_form(monkeypatch, server_log, raw, expected):
    from core.settings import max_work

    monkeypatch.setenv("WEIGHTSCOPE_MAX_WORK", raw)
    assert max_work() == expected
    assert not server_log()


@pytest.mark.parametrize("raw", ["inf", "1e309", "nan", "-5", "0", "1.5", "12abc", "0x10",
                                 "1e13", "5__000", "1e999999999999"])
def test_a_bad_max_work_keeps_the_default_and_says_so_once_in_the_server_log(
        monkeypatch, server_log, raw):
    from core.settings import max_work

    monkeypatch.setenv("WEIGHTSCOPE_MAX_WORK", raw)
    assert [max_work() for _ in range(3)] == [200_000_000] * 3  # read on every rerun
    assert len(server_log("WEIGHTSCOPE_MAX_WORK", repr(raw), "200,000,000")) == 1


def test_every_numeric_variable_reads_one_syntax_with_its_own_range(server_log):
    from decimal import Decimal

    from core import env

    names = {n.name for n in env.NUMBERS}
    assert names == {"WEIGHTSCOPE_MAX_WORK", "WEIGHTSCOPE_CACHE_MB", "WEIGHTSCOPE_DISK_MB",
                     "WEIGHTSCOPE_MAX_JOBS"}
    for number in env.NUMBERS:
        top, name = number.high, number.name
        for form in (str(top), f"{top:_}", f"{Decimal(top):E}"):
            assert number.value({name: form}) == top, form
        assert number.value({name: str(number.low)}) == number.low
        assert number.value({}) == number.value({name: "  "}) == number.default
        for bad in (str(top + 1), str(number.low - 1), "inf", f"{number.low}.5", "many"):
            assert number.value({name: bad}) == number.default, bad
            assert len(server_log(name, repr(bad), f"{number.default:,}")) == 1, bad


def test_the_readme_lists_every_numeric_variable_with_its_default_and_range():
    from pathlib import Path

    from core import env

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
            if line.startswith("| `WEIGHTSCOPE_")}
    for number in env.NUMBERS:
        row = rows[number.name]
        assert f"{number.default:,}" in row and f"{number.low:,} to {number.high:,}" in row, row


def test_the_run_store_reads_its_budgets_with_the_same_syntax(monkeypatch, server_log):
    from ui.resources import run_store

    monkeypatch.setenv("WEIGHTSCOPE_RUN_CACHE", "off")
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_MB", "1e3")
    monkeypatch.setenv("WEIGHTSCOPE_DISK_MB", "2.5e3")
    monkeypatch.setenv("WEIGHTSCOPE_MAX_JOBS", "0")
    run_store.clear()
    try:
        store = run_store()
        assert (store.max_bytes, store.max_disk_bytes) == (1000 << 20, 2500 << 20)
        assert server_log("WEIGHTSCOPE_MAX_JOBS", "'0'", "outside 1 to 64",
                      "default 1")
    finally:
        run_store.clear()


def test_malformed_operator_folders_are_reported_once_in_the_server_log(monkeypatch, server_log):
    from core.settings import operator_folders

    monkeypatch.setenv("WEIGHTSCOPE_FOLDERS", " good = /srv/a ;/srv/nameless;=/srv/b;"
                                              "bad name=/srv/c;good=/srv/d;;empty=; ")
    assert operator_folders() == operator_folders() == {"folder:good": "/srv/a"}
    for words in (["'/srv/nameless'", "no '='"], ["'=/srv/b'", "no name"],
                  ["'bad name=/srv/c'", "letters, digits"],
                  ["'good=/srv/d'", "repeats the name 'good'", "'/srv/a', is used"],
                  ["'empty='", "no folder"]):
        assert len(server_log("WEIGHTSCOPE_FOLDERS", *words)) == 1, words
    assert len(server_log()) == 5


#: Run in a fresh interpreter beside a copy of core/kernels.py: one gradient pass at zero
#: weights, checked against its closed form sum_i (1/K - e_{y_i}) x_i. Arguments: "cached"
#: (only check that the disk cache is in use: compiling costs seconds) or a folder to lose
#: after the kernels were set up.
KERNEL_PROBE = """
import shutil, sys
import numpy as np
import kernels
if sys.argv[1:] == ["cached"]:
    assert kernels.CACHED
    sys.exit(0)
if sys.argv[1:]:
    shutil.rmtree(sys.argv[1])
    open(sys.argv[1], "w").close()
X = np.random.default_rng(0).integers(0, 256, (100, 16), dtype=np.uint8)
y = np.arange(100) % 3
g, gb = kernels.Pass(X, y, 3, np.float32, "softmax").run(np.zeros((3, 16), np.float32),
                                                          np.zeros(3, np.float32))
residual = np.full((100, 3), 1 / 3) - np.eye(3)[y]
assert np.allclose(g, residual.T @ (X / 255.0), atol=1e-4), "wrong gradient"
assert kernels.AVAILABLE and not kernels.CACHED
"""


@pytest.mark.parametrize("case", ["NUMBA_CACHE_DIR unwritable", "no folder writable",
                                  "cache folder lost"])
def test_the_kernel_trains_without_a_disk_cache_and_the_log_says_why(tmp_path, case):
    """Numba caches compiled code in NUMBA_CACHE_DIR, else beside the module, else in
    ~/.cache; "cannot cache function" used to stop the app from starting when none was
    writable. Folders are blocked by a plain file in their path, which stops root too."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("numba")
    root = Path(__file__).resolve().parent.parent
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(root / "core" / "kernels.py", pkg)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cache = blocker / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(pkg), str(root)])}
    env.pop("WEIGHTSCOPE_KERNEL", None)
    args = ["cached"]  # beside the module, where Numba went instead
    if case == "no folder writable":
        args = []
        (pkg / "__pycache__").write_text("")  # the package folder is read-only
        env["XDG_CACHE_HOME"] = str(blocker / "xdg")  # and so is the user's cache
    if case == "cache folder lost":
        cache = tmp_path / "numba"
        env["NUMBA_CACHE_DIR"] = str(cache)
        args = [str(cache)]
    result = subprocess.run([sys.executable, "-c", KERNEL_PROBE, *args], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [line for line in result.stderr.splitlines() if "weightscope:" in line]
    assert len(log) == 1 and str(cache) in log[0], result.stderr[-3000:]
    if case != "NUMBA_CACHE_DIR unwritable":
        assert "without a disk cache" in log[0]
