"""Calibration messages as JSON (sites mode): the coordinator's payloads and a site's replies, checked on arrival.

Payloads (coordinator -> site, an artifact of the federation run bound by digest to the signed request):
``moments`` none; ``scores`` the embedding domain (mean ``[d]``, precision ``[d, d]``); ``measure`` the calibration
and the domain level. Replies (site -> coordinator): ``{"sums": {name: nested lists}}`` for ``moments`` and
``scores`` in the clear, ``{"advert": ...}`` under secure aggregation (the sums stay at the site for the secure sum),
``{"measured": {name: float}}`` for ``measure``. Only sums and counts: nothing per molecule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from molfed.federated import conformal as cf

MAX_MEASURED = 10_000
"""At most this many measured values in one reply (a few per task and level)."""
_CALIBRATION = TypeAdapter(cf.Calibration)


def payload_to_json(step: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` of ``step`` as JSON-native values (lists, floats, None)."""
    if step == "moments":
        return {}
    if step == "scores":
        domain = payload.get("domain")
        if domain is None:
            return {"domain": None}
        mean, precision = np.asarray(domain.mean).tolist(), np.asarray(domain.precision).tolist()
        return {"domain": {"mean": mean, "precision": precision}}
    if step == "measure":
        return {"calibration": asdict(payload["calibration"]), "domain_level": float(payload.get("domain_level", 0.95))}
    raise ValueError(f"unknown calibration step {step!r}")


def payload_from_json(step: str, obj: Any, *, width: int) -> dict[str, Any]:
    """The payload :func:`molfed.federated.calibration.run_step` takes, from :func:`payload_to_json`'s JSON, for a
    model whose embeddings are ``width`` wide.

    Raises
    ------
    ValueError
        One line naming what is malformed (never the values).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"calibration payload of {step!r}: expected a mapping")
    if step == "moments":
        return {}
    if step == "scores":
        raw = obj.get("domain")
        if raw is None:
            return {"domain": None}
        try:
            mean = np.asarray(raw["mean"], dtype=np.float64)
            precision = np.asarray(raw["precision"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError("calibration payload of 'scores': malformed domain") from None
        if mean.shape != (width,) or precision.shape != (width, width):
            raise ValueError(f"calibration payload of 'scores': domain shapes, expected [{width}], [{width}, {width}]")
        if not (np.isfinite(mean).all() and np.isfinite(precision).all()):
            raise ValueError("calibration payload of 'scores': domain values must be finite")
        return {"domain": cf.EmbeddingStats(mean, precision)}
    if step == "measure":
        try:
            calibration = _CALIBRATION.validate_python(obj.get("calibration"))
            level = float(obj.get("domain_level", 0.95))
        except (ValidationError, TypeError, ValueError):
            raise ValueError("calibration payload of 'measure': malformed calibration") from None
        if calibration.domain is not None and len(calibration.domain.mean) != width:
            raise ValueError(f"calibration payload of 'measure': domain width, expected {width}")
        if not 0.5 < level < 1.0:
            raise ValueError("calibration payload of 'measure': domain_level must lie strictly between 0.5 and 1")
        return {"calibration": calibration, "domain_level": level}
    raise ValueError(f"unknown calibration step {step!r}")


def reply_to_json(step: str, out: Any) -> dict[str, Any]:
    """A partner's result of ``step`` in the clear: summed arrays, or measured sums."""
    if step == "measure":
        return {"measured": {str(k): float(v) for k, v in out.items()}}
    return {"sums": {str(k): np.asarray(v, dtype=np.float64).tolist() for k, v in out.items()}}


def reply_from_json(step: str, obj: Any, layout: Mapping[str, tuple[int, ...]] | None = None) -> Any:
    """The result :func:`reply_to_json` wrote: for ``moments`` and ``scores`` the sums, checked against ``layout``
    (names and shapes, finite values); for ``measure`` the measured sums (finite numbers).

    Raises
    ------
    ValueError
        If the reply does not have that form.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"calibration reply of {step!r}: expected a mapping")
    if step == "measure":
        measured = obj.get("measured")
        if not isinstance(measured, dict) or len(measured) > MAX_MEASURED:
            raise ValueError("calibration reply of 'measure': expected at most 10000 measured values")
        out = {}
        for k, v in measured.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError("calibration reply of 'measure': values must be finite numbers")
            out[str(k)] = float(v)
        return out
    sums = obj.get("sums")
    if not isinstance(sums, dict) or layout is None or set(sums) != set(layout):
        raise ValueError(f"calibration reply of {step!r}: expected sums named {sorted(layout or {})}")
    arrays: cf.Sums = {}
    for name, shape in layout.items():
        try:
            value = np.asarray(sums[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"calibration reply of {step!r}: {name} is not numeric") from None
        if value.shape != tuple(shape) or not np.isfinite(value).all():
            raise ValueError(f"calibration reply of {step!r}: {name} must be finite, shape {list(shape)}")
        arrays[name] = value
    return arrays
