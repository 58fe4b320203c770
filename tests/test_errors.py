"""Shared input checks and the one-line error text (core/errors.py)."""

from __future__ import annotations

import math

import pytest

from stylefusion.core.errors import ConfigError, check_non_negative, first_line, is_finite_non_negative


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5, 1e30])
def test_finite_non_negative_accepts(value):
    assert is_finite_non_negative(value) and check_non_negative("w", value) == float(value)


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, -math.inf, "1", None])
def test_finite_non_negative_refuses(value):
    assert not is_finite_non_negative(value)
    with pytest.raises(ConfigError, match="w must be a finite number >= 0"):
        check_non_negative("w", value)


def test_first_line():
    assert first_line(RuntimeError("[gloo/file.cc:12] peer closed\nstack ...")) == "peer closed"
    assert first_line(PermissionError(13, "Permission denied", "/x")) == "Permission denied"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError(""), default="corrupt or truncated") == "corrupt or truncated"
    assert first_line(RuntimeError("x" * 500), 10) == "x" * 10
