"""JSON responses rendered by orjson, with NumPy vectors serialised straight from their buffers.

`VectorJSONResponse(content)` takes what Starlette's `JSONResponse` takes (dicts, lists, str,
int, float, bool, None) plus NumPy arrays and scalars anywhere inside it, so a route can put a
model's float32 embedding in its answer as is: no `tolist()` (1024 Python floats per image) and
no `json.dumps` of them. The JSON means the same as `JSONResponse`'s, compact and UTF-8:
- a float32 is written as the shortest decimal that reads back to the same float32 (so
  `0.0123456791` where `json.dumps` of the widened float64 writes `0.012345679104328156`): the
  same number once read as float32, and about half the bytes;
- Python floats are written as the shortest decimal that reads back to the same float64, as
  `json.dumps` does (the spelling of exponents may differ: `1e-05` vs `1e-5`);
- NaN and infinities, which `JSONResponse` refuses (a 500), are refused here too (ValueError):
  orjson would write `null`, which would change an answer's meaning silently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from starlette.responses import JSONResponse

# Non-string keys (e.g. ints) become strings, as `json.dumps` makes them.
OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class VectorJSONResponse(JSONResponse):
    """`JSONResponse` rendered by orjson, NumPy arrays and scalars included."""

    def render(self, content: Any) -> bytes:
        _check_finite(content)
        try:
            return orjson.dumps(content, option=OPTIONS)
        except TypeError:
            # An array orjson does not read in place (not C-contiguous, big-endian, float16...)
            # or a NumPy scalar type it lacks: the slow, plain way for this response.
            return orjson.dumps(_plain(content), option=OPTIONS)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _check_finite(value: Any) -> None:
    """Refuse NaN and infinities, as `JSONResponse` (allow_nan=False) does."""
    finite = True
    if isinstance(value, float):
        finite = math.isfinite(value)
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list | tuple):
        try:  # a list of numbers (today's vectors): one C loop; NaN and inf survive a sum
            finite = math.isfinite(sum(value))
        except TypeError:  # not all numbers: look inside each
            for item in value:
                _check_finite(item)
        except OverflowError:
            finite = False
    elif isinstance(value, np.ndarray | np.floating) and value.dtype.kind in "fc":
        finite = bool(np.isfinite(value).all())
    if not finite:
        raise ValueError("Out of range float values are not JSON compliant")
