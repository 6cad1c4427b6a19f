"""What the server's operator sets in environment variables, read one way, and the server log.

Every numeric variable is declared once here, as a :class:`Number` with its default, its
range and what it means (the README's table lists the same), and read with
:meth:`Number.value`. All share one syntax: a whole number, written plainly (``1000``),
with underscores (``1_000``) or in exponent form (``1e3``, ``2.5e6``). A value that is not
one, or lies outside the variable's range, leaves the default in force and puts one line
in the server log naming the variable, the value and the default, once per process.

Plain Python (no Streamlit): the app, the tests and the benchmark all read settings here.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from decimal import Decimal

#: The server log: lines for operators (bad settings, broken folders, training started or
#: stopped), on the server's stderr.
log = logging.getLogger("weightscope")
if not log.handlers:
    # Streamlit configures only its own loggers; without a handler of its own this logger
    # would print bare messages, and only from WARNING up.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s weightscope: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

_reported: set[str] = set()


def warn_once(message: str) -> None:
    """Put ``message`` in the server log as a warning, unless this process already did.

    Settings are read again on every rerun of every session: a bad one should cost the
    operator one line, not one a click.

    Parameters
    ----------
    message : str
        The whole line, naming the setting, the value and what is used instead.
    """
    if message not in _reported:
        _reported.add(message)
        log.warning(message)


# Digits with single underscores between them, an optional fraction, an optional exponent:
# the forms Python itself accepts for numbers, without signs, hex or "inf".
_WHOLE = re.compile(r"\d+(?:_\d+)*(?:\.\d+(?:_\d+)*)?(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Number:
    """A whole-number setting read from the environment.

    Attributes
    ----------
    name : str
        The environment variable.
    default : int
        Used when the variable is unset, empty or not a valid value.
    low, high : int
        The valid range, both included.
    meaning : str
        What the value sets, with its unit, as the README's table says it.
    """

    name: str
    default: int
    low: int
    high: int
    meaning: str

    def parse(self, text: str) -> int:
        """The value written as ``text``.

        Exact for any length of digits or exponent (decimal arithmetic, never a float that
        could overflow or round): ``1e309`` is out of range, not infinity.

        Parameters
        ----------
        text : str
            ``1000``, ``1_000``, ``1e3`` or ``2.5e6``; surrounding spaces are ignored.

        Returns
        -------
        int
            From ``low`` to ``high``.

        Raises
        ------
        ValueError
            Saying what is wrong ("is not a whole number ...", "is outside 1 to 64").
        """
        text = text.strip()
        if not _WHOLE.fullmatch(text):
            raise ValueError("is not a whole number (write it as 1000, 1_000 or 1e3)")
        value = Decimal(text.replace("_", ""))
        if not self.low <= value <= self.high:
            raise ValueError(f"is outside {self.low:,} to {self.high:,}")
        if value != value.to_integral_value():
            raise ValueError("is not a whole number")
        return int(value)

    def value(self, environ=None) -> int:
        """The variable's value, or the default where it is unset, empty or bad.

        A bad value is reported once in the server log (see :func:`warn_once`).

        Parameters
        ----------
        environ : mapping of str to str, optional
            Where to look; default ``os.environ``, read at each call.

        Returns
        -------
        int
        """
        raw = (os.environ if environ is None else environ).get(self.name, "")
        if not raw.strip():
            return self.default
        try:
            return self.parse(raw)
        except ValueError as err:
            warn_once(f"{self.name}={raw[:60]!r} {err}; using the default {self.default:,}.")
            return self.default


#: Every numeric variable the server reads.
MAX_WORK = Number("WEIGHTSCOPE_MAX_WORK", 200_000_000, 1, 10**12,
                  "cap on gradient steps x training images per run")
# 10**12 is the largest run the settings allow (100,000 steps x 10,000,000 images), so a
# higher cap would cap nothing.
CACHE_MB = Number("WEIGHTSCOPE_CACHE_MB", 1024, 1, 2**20,
                  "memory budget for finished runs held in memory, in MB")
DISK_MB = Number("WEIGHTSCOPE_DISK_MB", 2048, 1, 2**24,
                 "disk budget for finished runs, in MB (least recently used dropped first)")
MAX_JOBS = Number("WEIGHTSCOPE_MAX_JOBS", 1, 1, 64,
                  "training runs at once; more wait their turn, with a message")
NUMBERS: tuple[Number, ...] = (MAX_WORK, CACHE_MB, DISK_MB, MAX_JOBS)
