"""The codec's finite check (fast path included) rejects every NaN and infinity, and only those, and says nothing
on the way (an overflowing sum of squares is how it finds huge values, not a warning for the backend's log)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.codec import all_finite

FLOATS = st.sampled_from([np.float16, np.float32, np.float64])

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


@settings(max_examples=400, deadline=None)
@given(
    hnp.arrays(
        dtype=FLOATS,
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=40),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_finite_check_agrees_with_isfinite(arr: np.ndarray) -> None:
    assert all_finite(arr) == bool(np.isfinite(arr).all())


@settings(max_examples=200, deadline=None)
@given(FLOATS, st.integers(1, 5000), st.data())
def test_a_single_bad_value_among_huge_finite_ones_is_found(dtype: type, size: int, data: st.DataObject) -> None:
    big = np.finfo(dtype).max
    arr = np.full(size, big, dtype=dtype)  # squares overflow: the exact check must decide
    assert all_finite(arr)
    arr[data.draw(st.integers(0, size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    assert not all_finite(arr)
    assert not all_finite(arr[::2]) or np.isfinite(arr[::2]).all()  # non-contiguous views too


def test_large_contiguous_arrays() -> None:
    arr = np.random.default_rng(0).random((2_000_000, 3), dtype=np.float32)
    assert all_finite(arr)
    for bad in (np.nan, np.inf, -np.inf):
        arr[1_234_567, 2] = bad
        assert not all_finite(arr)
    arr[1_234_567, 2] = 0.0
    arr[0] = [np.inf, -np.inf, np.nan]  # opposite infinities must not cancel
    assert not all_finite(arr)


def test_huge_values_and_mixed_infinities_are_answered_without_warnings():
    # float32 squares overflow the fast path's sum; +inf and -inf make a half-precision sum NaN
    assert all_finite(np.full(4, 3e38, np.float32))
    assert not all_finite(np.array([np.inf, -np.inf, 1.0], np.float16))
    assert not all_finite(np.array([np.inf, -np.inf, 1.0], np.float32))
