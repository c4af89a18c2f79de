"""What every config model shares: strictness, the name rule, short reprs of bad values."""

from __future__ import annotations

import re
import reprlib
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

#: Partner names that would collide with the cross-partner summaries ``{split}_{metric}.worst`` / ``.std``.
RESERVED_PARTNER_NAMES = ("worst", "std")
_MAX_ERRORS = 5  # validation problems shown in one ConfigError
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")  # config keys shown as they are; others (e.g. with newlines) as repr
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
"""Partner, task (shared and private) and site names, matched in full: they become parts of MLflow metric names
(``test_rmse.<task>.<partner>``), tags, pool and experiment names. ASCII letters, digits, ``_`` and ``-``: MLflow
refuses most other characters in metric names, and ``.`` is molfed's separator between the parts."""
_NAME_RULE = "expected letters, digits, '_' or '-', starting with a letter or digit (max 63 characters; no '.'"


def check_name(value: str) -> str:
    """Return ``value`` if it is a valid partner, task or site name (:data:`_NAME`).

    Raises
    ------
    ValueError
        ``got '<value>', expected letters, digits, ...`` (pydantic prefixes the config key).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"got {_short(value)}, {_NAME_RULE}: it separates names in metric names)")
    return value


Name = Annotated[str, AfterValidator(check_name)]


class _Model(BaseModel):
    # allow_inf_nan=False: a NaN passes every ``ge``/``le`` bound and the fraction checks (comparisons are False).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building a huge repr (YAML aliases can nest deeply)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
