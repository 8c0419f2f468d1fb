"""Tools returning the values people use (numpy, pandas, dataclasses, pydantic models,
datetimes, Decimals, bytes, sets, tuples) reach a program in the real jail as JSON data."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from codemode_jupyter import CodeMode
from codemode_jupyter.engine.calls import ResultNotSerialisable, to_json_value

pytestmark = pytest.mark.timeout(120)


@dataclasses.dataclass
class Point:
    x: int
    when: dt.date


class City(BaseModel):
    name: str
    founded: dt.datetime


def table() -> pd.DataFrame:
    """A small table."""
    return pd.DataFrame(
        {
            "city": ["Oslo", "Paris"],
            "temp": [3.5, np.nan],
            "day": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    )


def indexed() -> pd.DataFrame:
    """A table with a meaningful index."""
    return pd.DataFrame({"temp": [1, 2]}, index=pd.Index(["a", "b"], name="station"))


def series() -> pd.Series:
    return pd.Series([1, 2, 3])


def labelled() -> pd.Series:
    return pd.Series({"a": 1, "b": 2})


def array() -> np.ndarray:
    return np.array([[1.0, np.inf], [2.5, 3.0]])


def scalars() -> dict:
    return {"i": np.int64(7), "f": np.float32(0.5), "b": np.bool_(True)}


def others() -> dict:
    return {
        "point": Point(1, dt.date(2024, 5, 1)),
        "city": City(name="Oslo", founded=dt.datetime(1048, 1, 1, tzinfo=dt.timezone.utc)),
        "price": Decimal("1.10"),
        "raw": b"\xff\x00hi",
        "tags": {"x"},
        "pair": (1, 2),
        "span": dt.timedelta(minutes=90),
    }


def huge() -> np.ndarray:
    return np.zeros(2_000_000)


def test_tools_returning_rich_values_reach_the_program_as_json() -> None:
    tools = [table, indexed, series, labelled, array, scalars, others, huge]
    with CodeMode(tools=tools, outputs_dir=None) as cm:
        result = cm.run(
            "out = dict(table=table(), indexed=indexed(), series=series(), "
            "labelled=labelled(), array=array(), scalars=scalars(), others=others())\n"
            "try:\n    huge()\nexcept TypeError as e:\n    out['huge'] = str(e)\nout",
            timeout=60,
        )
    assert result.ok, result.error
    v = result.value
    assert v["table"] == [
        {"city": "Oslo", "temp": 3.5, "day": "2024-01-01T00:00:00.000"},
        {"city": "Paris", "temp": None, "day": "2024-01-02T00:00:00.000"},
    ]
    assert v["indexed"] == [{"station": "a", "temp": 1}, {"station": "b", "temp": 2}]
    assert v["series"] == [1, 2, 3] and v["labelled"] == {"a": 1, "b": 2}
    assert v["array"] == [[1.0, None], [2.5, 3.0]]
    assert v["scalars"] == {"i": 7, "f": 0.5, "b": True}
    o = v["others"]
    assert o["point"] == {"x": 1, "when": "2024-05-01"}
    assert o["city"] == {"name": "Oslo", "founded": "1048-01-01T00:00:00Z"}
    assert o["price"] == "1.10" and o["tags"] == ["x"] and o["pair"] == [1, 2]
    assert base64.urlsafe_b64decode(o["raw"]) == b"\xff\x00hi" and o["span"] == "PT1H30M"
    assert "2,000,000 values" in v["huge"]


def test_what_cannot_cross_keeps_its_clear_error() -> None:
    with pytest.raises(ResultNotSerialisable, match="not JSON-serialisable"):
        to_json_value({"x": object()})
    with pytest.raises(ResultNotSerialisable, match="DataFrame of"):
        to_json_value(pd.DataFrame(np.zeros((1001, 1000))))
