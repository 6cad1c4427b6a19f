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
