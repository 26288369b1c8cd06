"""The wire protocol: array round trips (property-based), limits and refusals."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared import ALLOWED_DTYPES, PROTOCOL_VERSION, Limits, from_frames, to_frames
from shared.codec import decode, encode
from shared.errors import ErrorCode, ProtocolError, VersionMismatch
from shared.messages import MESSAGE_TYPES, Error, Ping, Progress, Result, Submit

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _finite_elements(dtype: np.dtype):
    if dtype.kind == "f":
        return hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    return None


@st.composite
def wire_arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(sorted(ALLOWED_DTYPES))))
    return draw(hnp.arrays(dtype, SHAPES, elements=_finite_elements(dtype)))


def _frames_as_bytes(frames: list) -> list[bytes]:
    """What actually crosses a socket: every frame as plain bytes."""
    return [f if isinstance(f, bytes) else np.ascontiguousarray(f).tobytes() for f in frames]


@settings(max_examples=150, deadline=None)
@given(arrays=st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), wire_arrays(), max_size=4))
def test_result_arrays_round_trip_every_dtype_and_shape(arrays: dict[str, np.ndarray]) -> None:
    msg = Result(job="j1", index=3, type="mesh.frames", meta={"start": 2}, arrays=arrays)
    back = from_frames(_frames_as_bytes(to_frames(msg)))
    assert isinstance(back, Result) and back.id == msg.id and back.job == "j1"
    assert back.index == 3 and back.meta == {"start": 2}
    assert back.arrays.keys() == arrays.keys()
    for name, arr in arrays.items():
        got = back.arrays[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert np.array_equal(got, arr)


@settings(max_examples=50, deadline=None)
@given(arr=wire_arrays().filter(lambda a: a.size > 0))
def test_frames_are_zero_copy_buffers(arr: np.ndarray) -> None:
    frames = to_frames(Progress(stage="s", arrays={"a": arr}))
    back = from_frames(frames)  # ndarray frames straight from to_frames, no bytes in between
    assert np.array_equal(back.arrays["a"], arr) and back.arrays["a"].shape == arr.shape


def test_zero_size_arrays_cross_a_real_socket() -> None:
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://tessera-test-zero-size")
        b.connect("inproc://tessera-test-zero-size")
        arrays = {"e": np.zeros((0, 3), np.float16), "f": np.zeros((2, 0, 4), bool), "s": np.asarray(np.float32(3))}
        a.send_multipart(to_frames(Progress(arrays=arrays)), copy=False)
        back = from_frames(b.recv_multipart(copy=False))
        for name, arr in arrays.items():
            assert back.arrays[name].shape == arr.shape and back.arrays[name].dtype == arr.dtype
    finally:
        a.close(0)
        b.close(0)


def test_zero_size_multidim_ndarray_frames_decode_in_process() -> None:
    back = from_frames(to_frames(Progress(arrays={"e": np.zeros((0, 3), np.float32)})))
    assert back.arrays["e"].shape == (0, 3)


@given(value=st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(), st.floats(allow_nan=False), st.booleans()))
def test_body_values_round_trip(value) -> None:
    back = from_frames(to_frames(Submit(plugin="p", params={"v": value, "nested": [value, {"k": value}]})))
    assert back.params == {"v": value, "nested": [value, {"k": value}]}


def test_big_endian_and_non_contiguous_arrays_are_sent_as_little_endian_c_order() -> None:
    big = np.arange(12, dtype=">f4").reshape(3, 4)
    back = from_frames(_frames_as_bytes(to_frames(Progress(arrays={"b": big, "t": big.T}))))
    assert back.arrays["b"].dtype.str == "<f4" and np.array_equal(back.arrays["b"], big)
    assert np.array_equal(back.arrays["t"], big.T)


@pytest.mark.parametrize("value", [np.array([1 + 2j]), np.array(["a"]), np.array([object()], dtype=object)])
def test_encode_refuses_dtypes_that_cannot_travel(value: np.ndarray) -> None:
    with pytest.raises(ProtocolError, match="cannot travel on the wire") as err:
        to_frames(Progress(arrays={"x": value}))
    assert err.value.code == ErrorCode.BAD_ARRAY


# ------------------------------------------------------------------------------ limits


def _raw(kind: str = "ping", body: dict | None = None, arrays: list | None = None, version: int = PROTOCOL_VERSION):
    env = {"v": version, "kind": kind, "id": "m1", "job": "", "body": body or {}, "arrays": arrays or []}
    return msgpack.packb(env, use_bin_type=True)


def test_envelope_too_large() -> None:
    frames = to_frames(Error(message="x" * 500))
    with pytest.raises(ProtocolError, match=r"Envelope is \d+ bytes; the limit is 100") as err:
        from_frames(frames, Limits(max_envelope_bytes=100))
    assert err.value.code == ErrorCode.TOO_LARGE


def test_array_too_large() -> None:
    frames = to_frames(Progress(arrays={"big": np.zeros(100, np.float32)}))
    with pytest.raises(ProtocolError, match=r"Array 'big' is 400 bytes; the limit is 64") as err:
        from_frames(frames, Limits(max_array_bytes=64))
    assert err.value.code == ErrorCode.TOO_LARGE
    assert from_frames(frames, Limits(max_array_bytes=400)).arrays["big"].shape == (100,)


def test_message_too_large_in_total() -> None:
    frames = to_frames(Progress(arrays={"a": np.zeros(100, np.uint8), "b": np.zeros(100, np.uint8)}))
    with pytest.raises(ProtocolError, match="over 250 bytes in total") as err:
        from_frames(frames, Limits(max_message_bytes=250))
    assert err.value.code == ErrorCode.TOO_LARGE


def test_too_many_arrays() -> None:
    frames = to_frames(Progress(arrays={str(i): np.zeros(1) for i in range(3)}))
    with pytest.raises(ProtocolError, match="3 array frames; the limit is 2") as err:
        from_frames(frames, Limits(max_arrays=2))
    assert err.value.code == ErrorCode.TOO_LARGE


def test_too_many_dims() -> None:
    frames = to_frames(Progress(arrays={"a": np.zeros((1,) * 5)}))
    with pytest.raises(ProtocolError, match="up to 4 non-negative integers"):
        from_frames(frames, Limits(max_ndim=4))


def test_shape_bytes_mismatch() -> None:
    head, _ = to_frames(Progress(arrays={"a": np.zeros((2, 3), np.float32)}))
    with pytest.raises(ProtocolError, match=r"Array 'a' declares <f4\(2, 3\) = 24 bytes but its frame has 20") as err:
        from_frames([head, b"\0" * 20])
    assert err.value.code == ErrorCode.BAD_ARRAY


def test_array_count_mismatch() -> None:
    head, frame = to_frames(Progress(arrays={"a": np.zeros(2)}))
    with pytest.raises(ProtocolError, match="describes 1 arrays but 2 array frames arrived"):
        from_frames([head, frame, frame])


@pytest.mark.parametrize("dtype", ["<c8", "|O", ">f4", ">i4", "<U1", "|V4", "float32"])
def test_decode_refuses_disallowed_dtypes(dtype: str) -> None:
    head = _raw("progress", arrays=[["a", dtype, [1]]])
    with pytest.raises(ProtocolError, match=r"Array 'a' has dtype .*; allowed:") as err:
        from_frames([head, b"\0" * 8])
    assert err.value.code == ErrorCode.BAD_ARRAY


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused(dtype: str, bad: float) -> None:
    arr = np.array([[0.0, 1.0], [2.0, bad]], dtype=dtype)
    with pytest.raises(ProtocolError, match="'pos' contains NaN or infinite values") as err:
        from_frames(to_frames(Progress(arrays={"pos": arr})))
    assert err.value.code == ErrorCode.BAD_ARRAY


def test_float16_max_values_pass_the_finite_check() -> None:
    big = np.full(1000, 65504, np.float16)  # float16 max: the sum overflows float16 but not the float64 check
    assert np.array_equal(from_frames(to_frames(Progress(arrays={"a": big}))).arrays["a"], big)


def test_version_refusal_names_both_versions() -> None:
    other = PROTOCOL_VERSION + 1
    with pytest.raises(VersionMismatch) as err:
        from_frames([_raw(version=other)])
    assert f"version {PROTOCOL_VERSION}" in err.value.message and f"version {other}" in err.value.message
    assert err.value.code == ErrorCode.VERSION_MISMATCH


def test_unknown_kind() -> None:
    with pytest.raises(ProtocolError, match="Unknown message kind 'teleport'") as err:
        from_frames([_raw("teleport")])
    assert err.value.code == ErrorCode.UNKNOWN_KIND


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("ping", {"time": "noon"}, "time"),
        ("submit", {"params": [1, 2]}, "params"),
        ("result", {"index": 1.5}, "index"),
        ("progress", {"fraction": True}, "fraction"),
        ("hello", {"protocol": "1"}, "protocol"),
    ],
)
def test_wrong_field_type(kind: str, body: dict, field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"Message '{kind}' field '{field}' has type"):
        from_frames([_raw(kind, body)])


def test_unknown_field_and_arrays_on_a_message_without_arrays() -> None:
    with pytest.raises(ProtocolError, match="Message 'ping' has an unknown field 'bogus'"):
        from_frames([_raw("ping", {"bogus": 1})])
    with pytest.raises(ProtocolError, match="Message 'ping' carries arrays but takes none"):
        from_frames(encode("ping", {}, {"a": np.zeros(1)}))


def test_malformed_envelopes() -> None:
    with pytest.raises(ProtocolError, match="Empty message"):
        decode([])
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode([b"\xc1"])
    with pytest.raises(ProtocolError, match="must be a msgpack map"):
        decode([msgpack.packb([1, 2])])
    with pytest.raises(ProtocolError, match="'v' \\(protocol version\\) must be an integer"):
        decode([msgpack.packb({"v": "1", "kind": "ping"})])
    with pytest.raises(ProtocolError, match="'kind' must be a non-empty string"):
        decode([msgpack.packb({"v": 1, "kind": ""})])
    with pytest.raises(ProtocolError, match="appears twice"):
        decode([_raw("progress", arrays=[["a", "|u1", [1]], ["a", "|u1", [1]]]), b"\0", b"\0"])


def test_every_kind_round_trips_with_defaults() -> None:
    for cls in MESSAGE_TYPES.values():
        msg = cls(job="j")
        back = from_frames(_frames_as_bytes(to_frames(msg)))
        assert type(back) is cls and back == msg


def test_ping_time_int_accepted_as_float() -> None:
    back = from_frames([_raw("ping", {"time": 5})])
    assert isinstance(back, Ping) and back.time == 5


def test_submit_arrays_are_checked_for_nan_on_decode_result_arrays_by_their_result_type() -> None:
    """The backend refuses NaN input at the wire; results are checked once, by shared.results."""
    from shared.errors import InputError
    from shared.messages import Result, Submit
    from shared.results import check_mesh_frames

    bad = np.zeros((1, 4, 3), np.float32)
    bad[0, 2, 1] = np.nan
    with pytest.raises(ProtocolError, match="'positions' contains NaN"):
        from_frames(to_frames(Submit(plugin="p", arrays={"positions": bad})))
    result = from_frames(to_frames(Result(type="mesh.frames", meta={"start": 7}, arrays={"positions": bad})))
    with pytest.raises(InputError, match=r"NaN or infinite value at index \[0, 2, 1\]"):
        check_mesh_frames(result.arrays, result.meta, vertex_count=4)
