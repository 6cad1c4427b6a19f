"""Shared pytest fixtures for Weightscope's tests."""

import os
from pathlib import Path

import pytest

from core.data import DEBIAN_DIR, FASHION_FILES


# --------------------------------------------------------------------------- real Fashion-MNIST data


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's Fashion-MNIST folder, for tests marked ``realdata``.

    Skips when the four files are missing, or fails instead when
    ``WEIGHTSCOPE_REQUIRE_DATA=1``, so that a run meant to use the real data
    cannot pass by skipping.
    """
    missing = [name for name in FASHION_FILES if not (DEBIAN_DIR / f"{name}.gz").is_file()]
    if missing:
        message = (f"Fashion-MNIST not installed in {DEBIAN_DIR} (missing {', '.join(missing)}); "
                   "apt-get install dataset-fashion-mnist")
        if os.environ.get("WEIGHTSCOPE_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return DEBIAN_DIR


@pytest.fixture(scope="session")
def answer_run(fashion_dir):
    """The "Reproduce the answer" preset's run (softmax, 1,000 images, seed 0, a = 1/L,
    30,000 steps) on real Fashion-MNIST, trained once for every test that checks a claim
    on it; with its data set."""
    from core.data import load_dataset
    from core.settings import PRESETS
    from core.trainer import train

    ds = load_dataset("fashion-mnist", data_dir=fashion_dir)
    return ds, train(ds, PRESETS[0].settings.config())


# --------------------------------------------------------------------------- the server log


@pytest.fixture
def server_log(caplog, monkeypatch):
    """The lines the server logs during the test, as a function: ``server_log(*words)`` is
    the list of lines holding every one of ``words`` (all lines without words).

    The "weightscope" logger does not propagate to pytest's handlers, so the capturing
    handler is added to it; its memory of lines already reported once is emptied.
    """
    import logging

    from core import env

    monkeypatch.setattr(env, "_reported", set())
    logger = logging.getLogger("weightscope")
    logger.addHandler(caplog.handler)

    def lines(*words: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "weightscope" and all(w in r.getMessage() for w in words)]

    yield lines
    logger.removeHandler(caplog.handler)
