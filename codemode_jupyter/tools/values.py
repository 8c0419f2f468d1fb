"""Tool results people use, as the JSON data a program receives.

pydantic converts what it knows (dataclasses, pydantic models, datetimes, Decimals, sets,
tuples, enums, UUIDs, paths); this module adds numpy and pandas, which it does not know, and
fixes the form of bytes. The forms (documented in the README):

- numpy arrays: nested lists (NaN and infinities become null); numpy scalars: the Python number
- pandas DataFrame: a list of records, one dict per row (a meaningful index becomes columns);
  Series: a list when its index is the default 0..n-1, else a dict of index to value;
  NaN/NaT become null and timestamps ISO 8601 strings; labels that become the same JSON key
  (`1` and `"1"`) are refused with an error naming the key, as one would lose its value
- datetime, date, time: ISO 8601 strings; timedelta: an ISO 8601 duration ("PT1H30M")
- Decimal: a str (exact); sets, frozensets and tuples: lists
- bytes: URL-safe base64 text (base64.urlsafe_b64decode() gives the bytes back)
- dataclasses and pydantic models: dicts of their fields

numpy and pandas are never imported here: a value can only be theirs if they are imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from pydantic_core import to_jsonable_python

#: The most values one array or table may hold (the bound calls.py keeps for every result).
MAX_ITEMS = 1_000_000


def to_jsonable(value: Any) -> Any:
    """`value` as JSON-able data; raises calls.ResultNotSerialisable (too large) or another
    exception (not convertible)."""
    refused: list[Exception] = []

    def fallback(obj: Any) -> Any:
        try:
            return convert(obj)
        except Exception as exc:  # pydantic wraps it: keep ours, and its clear message
            refused.append(exc)
            raise

    try:
        return to_jsonable_python(value, fallback=fallback, bytes_mode="base64")
    except Exception:
        if refused:
            raise refused[0] from None
        raise


def convert(obj: Any) -> Any:
    """The JSON form of a numpy or pandas value; TypeError for anything else."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(obj, numpy.ndarray):
            return _array(numpy, obj)
        if isinstance(obj, numpy.generic):
            return obj.item()
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if isinstance(obj, pandas.DataFrame):
            return _frame(pandas, obj)
        if isinstance(obj, pandas.Series):
            return _series(pandas, obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_size(size: int, what: str) -> None:
    if size > MAX_ITEMS:
        from codemode_jupyter.errors import ResultNotSerialisable

        raise ResultNotSerialisable(
            f"the result is {what} of {size:,} values, more than {MAX_ITEMS:,}; return less"
        )


def _loads(text: str, what: str) -> Any:
    """pandas' JSON as data; refused if two labels became one key (json keeps only the last)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            from codemode_jupyter.errors import ResultNotSerialisable

            key = _first_repeat(k for k, _ in pairs)
            raise ResultNotSerialisable(
                f"the result is {what} whose labels become the same JSON key {key!r} (as 1 and "
                "'1' do), so a value would be lost; make the labels distinct as strings"
            )
        return obj

    return json.loads(text, object_pairs_hook=unique)


def _first_repeat(keys: Iterable[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""


def _array(numpy: Any, array: Any) -> Any:
    _check_size(array.size, "an array")
    if array.dtype.kind in "fc" and not numpy.isfinite(array).all():
        array = numpy.where(numpy.isfinite(array), array, None)  # null, as JSON can say
    return array.tolist()


def _frame(pandas: Any, frame: Any) -> Any:
    _check_size(frame.size, "a DataFrame")
    if not _default_index(pandas, frame.index):
        frame = frame.reset_index()
    text = frame.to_json(orient="records", date_format="iso", default_handler=str)
    return _loads(text, "a DataFrame")


def _series(pandas: Any, series: Any) -> Any:
    _check_size(series.size, "a Series")
    orient = "values" if _default_index(pandas, series.index) else "index"
    text = series.to_json(orient=orient, date_format="iso", default_handler=str)
    return _loads(text, "a Series")


def _default_index(pandas: Any, index: Any) -> bool:
    return (
        isinstance(index, pandas.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )
