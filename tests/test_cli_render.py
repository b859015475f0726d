"""The CLI's one JSON serialiser (render.to_json), used by every command that prints JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from faceledger.cli import render


def test_datetimes_are_iso_text_and_numpy_values_are_json_numbers() -> None:
    value = {
        "CreationTimestamp": datetime(2026, 11, 29, 8, 0, tzinfo=UTC),
        "accuracy": np.float32(0.5),
        "count": np.int64(3),
        "scores": np.array([1.0, 2.0]),
    }
    assert json.loads(render.to_json(value)) == {
        "CreationTimestamp": "2026-11-29T08:00:00+00:00",
        "accuracy": 0.5,
        "count": 3,
        "scores": [1.0, 2.0],
    }


def test_one_line_with_sorted_keys_for_json_lines() -> None:
    assert render.to_json({"b": 1, "a": [1, 2]}, indent=None, sort_keys=True) == '{"a": [1, 2], "b": 1}'


def test_what_json_cannot_hold_is_refused_not_guessed() -> None:
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        render.to_json({"x": {1, 2}})
