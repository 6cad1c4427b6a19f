"""Everything a user can take away is a real, readable file of the expected shape."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import analysis, charts, render, report
from core.data import load_digits_dataset
from core.config import TrainConfig
from core.trainer import train


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def run(digits):
    return train(digits, TrainConfig(n_train=300, iterations=200, n_val=100))


@pytest.fixture(scope="module")
def traj(run, digits):
    return analysis.trajectory(run, digits)


def test_weight_grid_png_has_the_expected_size_and_colours(run):
    img = render.weight_grid(run.weights(200), scale=4, col_labels=[str(k) for k in range(10)])
    png = Image.open(io.BytesIO(render.to_png(img)))
    assert png.format == "PNG" and png.mode == "RGB"
    # ten 8 x 8 tiles at 4x with a 1-pixel frame and 4-pixel gaps, plus the label band
    assert png.width == 10 * (8 * 4 + 2 + 4) + 4
    colours = np.asarray(png).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 50  # a real diverging picture, not a flat fill


def test_evolution_gif_has_one_frame_per_snapshot(run):
    frames = [render.weight_grid(run.weights(int(t)), scale=2) for t in run.snapshot_iterations[1:]]
    gif = Image.open(io.BytesIO(render.animated_gif(frames)))
    assert gif.format == "GIF"
    assert gif.n_frames == len(run.snapshot_iterations) - 1
    assert gif.size == frames[0].size


@pytest.mark.skipif(not charts.export_formats(), reason="vl-convert-python is not installed")
def test_chart_exports_are_a_png_and_a_well_formed_svg(run):
    chart = charts.curves(charts.frame(charts.train_val_series(run, "loss")), y_title="loss", selected=50,
                          title="Loss")
    png = Image.open(io.BytesIO(charts.to_png(chart, width=400, scale=1)))
    assert png.format == "PNG" and png.width >= 400
    svg = ET.fromstring(charts.to_svg(chart))
    assert svg.tag.endswith("svg")
    assert "Loss" in charts.to_svg(chart)


def test_history_csv_has_a_row_per_iteration_and_snapshot_columns(run, traj):
    table = pd.read_csv(io.StringIO(report.history_table(run, traj).to_csv(index=False)))
    assert list(table.columns) == list(report.HISTORY_COLUMNS)
    assert len(table) == run.iterations_done + 1
    assert table["train_loss"].notna().all()
    assert table["val_loss"].notna().sum() == len(run.snapshot_iterations)
    assert table.loc[200, "val_acc"] == pytest.approx(run.snapshot_history["val_acc"][-1])


@pytest.mark.parametrize("split,rows", [("train", 300), ("val", 100)])
def test_examples_csv_ranks_every_example_by_loss(run, digits, split, rows):
    table = pd.read_csv(io.StringIO(report.examples_table(run, digits, 100, split).to_csv(index=False)))
    assert len(table) == rows
    assert table["neg_log_p_true"].is_monotonic_decreasing
    assert {"index", "label", "class", "predicted", "loss", "p_true"} <= set(table.columns)
    assert ("learned_at" in table.columns) == (split == "train")
    assert (digits.y_train[table["index"]] == table["label"]).all()


def test_summary_is_one_self_contained_html_page(run, digits, traj):
    page = report.summary_html(run, digits, traj, link="http://localhost:8501/?n=300")
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert page.count("data:image/png;base64,") >= 2 + (3 if charts.export_formats() else 0)
    assert "Largest |trained step-1 weight - closed form|" in page
    assert "http://localhost:8501/?n=300" in page
    assert "src=\"http" not in page  # nothing fetched from elsewhere


def test_regularization_row_reports_the_run_at_the_step_asked(run):
    final = report.regularization_row("no penalty", run, run.iterations_done)
    assert final["step"] == 200 and final["val acc"] == pytest.approx(
        run.snapshot_history["val_acc"][-1])
    assert final["best at"] == run.best_iteration()
    assert final["gap"] == pytest.approx(final["train acc"] - final["val acc"])
    stop = report.regularization_row("early stopping", run, run.best_iteration())
    assert stop["step"] == stop["best at"] == run.best_iteration()
    assert stop["val loss"] == stop["best val loss"] <= final["val loss"]


@pytest.mark.parametrize("model", ["softmax", "ovr"])
def test_summary_and_table_rank_the_hardest_examples_the_same_way(digits, model):
    """The summary's hardest examples are the table's (and the page's) first rows: ranked by
    -log p(true). For one-vs-rest the objective's own per-example loss ranks differently,
    which is the mistake this guards against."""
    r = train(digits, TrainConfig(model=model, n_train=300, iterations=60, seed=2))
    t = r.iterations_done
    table = report.examples_table(r, digits, t, "train")
    k = 25
    top = report.hardest(r, t, k)
    assert list(top) == list(table.index[:k])
    remaining = r.neg_log_p_true(t)
    assert np.all(np.diff(remaining[top]) <= 0)
    if model == "ovr":
        by_objective = np.argsort(-r.example_losses(t), kind="stable")[:k]
        assert list(by_objective) != list(top), "ovr's objective loss ranks differently"


def test_column_labels_wrap_instead_of_losing_their_end():
    """A class name wider than its tile goes onto a second line; only what still does not
    fit in two lines is shortened, and no line is wider than the tile."""
    font = render._font(12)
    width = int(font.getlength("Ankle boot")) - 5
    assert render._wrap("Ankle boot", font, width) == ["Ankle", "boot"]
    assert render._wrap("Bag", font, width) == ["Bag"]
    long = render._wrap("a class name much too long for two lines", font, width)
    assert len(long) == 2 and long[-1].endswith("…")
    assert " ".join(long).startswith("a class")
    single = render._wrap("Supercalifragilisticexpialidocious", font, width)
    assert len(single) == 1 and single[0].endswith("…")
    for lines in (long, single):
        assert all(font.getlength(line) <= width for line in lines)

    side = width - 2  # a column is the tile plus its one-pixel frame: ``width`` pixels
    tiles = np.zeros((1, 3, side, side, 3), dtype=np.uint8)
    one_line = render.tile_grid(tiles, scale=1, col_labels=["a", "b", "c"])
    two_lines = render.tile_grid(tiles, scale=1, col_labels=["a", "Ankle boot", "c"])
    assert two_lines.height > one_line.height
    assert two_lines.width == one_line.width


def test_tiny_probabilities_are_not_printed_as_zero():
    from ui.draw import probability

    assert probability(0.5) == "0.500" and probability(0.0) == "0.000"
    assert probability(2.16e-4) == "2.2e-04"
    assert float(probability(3e-9)) == pytest.approx(3e-9)


def test_history_csv_has_no_typicality_column(run, traj):
    """'Typicality of what pulls' moved too little to show anything (0.52 -> 0.45 -> 0.46 on
    the answer's run): it is gone from the history table."""
    table = report.history_table(run, traj)
    assert not [c for c in table.columns if "typical" in c]
    assert table.loc[run.snapshot_iterations, "top10_gradient_share"].tolist() == pytest.approx(
        traj["concentration"].tolist(), nan_ok=True)


def test_examples_csv_marks_the_never_learned_beside_the_integer_forgetting_count(run, digits):
    from core import metrics

    t = run.iterations_done
    table = pd.read_csv(io.StringIO(report.examples_table(run, digits, t, "train")
                                    .to_csv(index=False)))
    assert table["forgetting_events"].dtype.kind == "i"
    assert table["never_learned"].dtype == bool
    by_position = pd.Series(np.arange(len(run.train_indices)), index=run.train_indices)
    pos = by_position[table["index"]].to_numpy()
    never = metrics.never_learned(run.learned_at, run.forgetting_events)
    assert np.array_equal(table["never_learned"], never[pos])
    # Never learned: wrong at the end and never right before (no right-to-wrong event).
    assert (table.loc[table["never_learned"], "learned_at"] == -1).all()
    assert (table.loc[table["never_learned"], "forgetting_events"] == 0).all()
    assert 0 < table["never_learned"].sum() < len(table)


def test_the_l1_run_is_read_by_its_zeros_not_its_roughness(digits):
    l1 = train(digits, TrainConfig(n_train=300, iterations=200, n_val=100, l1=0.003))
    row = report.regularization_row("L1", l1, l1.iterations_done)
    assert np.isnan(row["roughness"])
    assert row["zeros"] == pytest.approx((l1.weights(l1.iterations_done) == 0).mean())
    assert row["zeros"] > 0.1


def test_each_l2_run_gets_the_stopping_step_it_acts_like(run, digits):
    a = run.learning_rate
    l2 = train(digits, TrainConfig(n_train=300, iterations=200, n_val=100, l2=0.01))
    row = report.regularization_row("L2 0.01", l2, l2.iterations_done, step_size=a)
    assert row["like stopping at"] == round(1 / (a * 0.01))
    assert report.equivalent_stopping_step(1 / 54.75, 0.01) == pytest.approx(5475)
    # No penalty, or no step size (L-BFGS): no equivalent step.
    assert np.isnan(report.regularization_row("none", run, 200, step_size=a)["like stopping at"])
    assert np.isnan(report.regularization_row("L2", l2, 200)["like stopping at"])
    assert np.isnan(report.equivalent_stopping_step(float("nan"), 0.01))


@pytest.mark.parametrize("share,text", [
    (20 / 50_000, "0.04%"), (0.00123, "0.12%"), (0.096, "9.6%"), (0.153, "15%"), (1.0, "100%"),
    (0.0, "0%"),
])
def test_a_small_share_never_reads_as_zero(share, text):
    assert report.percent(share) == text


def test_no_positive_share_prints_as_zero_percent():
    for share in np.geomspace(1e-7, 1, 200):
        assert report.percent(share).rstrip("%").strip("0.") != ""
