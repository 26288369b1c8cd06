"""10,000 random and malformed messages: every one is answered or dropped, the server keeps serving."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest
import zmq
from backend_process import BackendProcess

from backend.client import BackendClient
from shared import messages as wire
from shared.version import PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(120)


def _envelope(kind: str = "submit", body: object = None, arrays: object = None, **extra: object) -> dict:
    env = {"v": PROTOCOL_VERSION, "kind": kind, "id": "m", "job": "j", "body": {} if body is None else body}
    env["arrays"] = [] if arrays is None else arrays
    env.update(extra)
    return env


def malformed_message(rng: random.Random) -> list[bytes]:
    """One bad message, of one of many kinds."""
    pack = msgpack.packb
    f32 = np.zeros((4, 3), np.float32)
    choice = rng.randrange(14)
    if choice == 0:  # random bytes, one frame
        return [rng.randbytes(rng.randrange(0, 200))]
    if choice == 1:  # random bytes, several frames
        return [rng.randbytes(rng.randrange(0, 50)) for _ in range(rng.randrange(2, 6))]
    if choice == 2:  # truncated msgpack
        head = pack(_envelope(body={"plugin": "test.count", "params": {"n": 3}}))
        return [head[: rng.randrange(0, len(head))]]
    if choice == 3:  # dtype not allowed
        dtype = rng.choice(["|O", "<c8", ">f4", "<U4", "float32", 7, None])
        return [pack(_envelope(arrays=[["a", dtype, [4, 3]]])), f32.tobytes()]
    if choice == 4:  # shape does not match the bytes
        return [pack(_envelope(arrays=[["a", "<f4", [4, rng.randrange(4, 9)]]])), f32.tobytes()]
    if choice == 5:  # NaN / inf arrays
        bad = f32.copy()
        bad[rng.randrange(4), rng.randrange(3)] = rng.choice([np.nan, np.inf, -np.inf])
        return [pack(_envelope(arrays=[["a", "<f4", [4, 3]]])), bad.tobytes()]
    if choice == 6:  # huge declared shapes
        shape = rng.choice([[2**40, 2**40], [2**62, 4], [2**63, 2], [2**64 - 1], [-1, 3], [1] * 40, [2**31] * 6])
        return [pack(_envelope(arrays=[["a", "<f4", shape]])), rng.choice([b"", b"\0" * 16])]
    if choice == 7:  # unknown kind
        return [pack(_envelope(kind=rng.choice(["boom", "", "plugins", "error", "HELLO"])))]
    if choice == 8:  # wrong field types
        field, value = rng.choice(
            [("plugin", 3), ("params", [1]), ("time", "now"), ("start", 1.5), ("session", {}), ("protocol", "1")]
        )
        return [pack(_envelope(kind=rng.choice(["submit", "ping", "fetch", "hello"]), body={field: value}))]
    if choice == 9:  # envelope of the wrong shape
        return [pack(rng.choice([[1, 2], "hi", 3, None, {"v": "1"}, {"v": True, "kind": "ping"}, {1: 2}]))]
    if choice == 10:  # array count mismatch
        return [pack(_envelope(arrays=[["a", "<f4", [4, 3]], ["b", "<f4", [1]]])), f32.tobytes()]
    if choice == 11:  # bad descriptors
        desc = rng.choice([["a"], "a", [1, "<f4", [1]], ["", "<f4", [1]], ["a", "<f4", "3"], ["a", "<f4", [True]]])
        return [pack(_envelope(arrays=[desc])), b"\0" * 4]
    if choice == 12:  # unknown body fields, duplicate array names, bodies that are not maps
        return rng.choice(
            [
                [pack(_envelope(body={"evil": 1}))],
                [pack(_envelope(body=[1, 2]))],
                [pack(_envelope(arrays=[["a", "<f4", [1]], ["a", "<f4", [1]]])), b"\0" * 4, b"\0" * 4],
            ]
        )
    # valid-looking requests with nonsense values
    return rng.choice(
        [
            wire.to_frames(wire.Submit(job=rng.choice(["", "../x", "a/b", "x" * 100]), plugin="test.count")),
            wire.to_frames(wire.Fetch(job="nope", start=-5)),
            wire.to_frames(wire.Cancel(job="")),
            wire.to_frames(wire.Submit(job=wire.new_id(), plugin="test.count", params={"n": "many"})),
        ]
    )


def test_ten_thousand_malformed_messages_then_still_serving(backend: BackendProcess) -> None:
    rng = random.Random(1234)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(backend.endpoint)
    sock.send_multipart(wire.to_frames(wire.Hello(session="fuzz")))
    replies = 0
    try:
        for i in range(10_000):
            sock.send_multipart(malformed_message(rng))
            if i % 50 == 0:
                while sock.poll(0):
                    sock.recv_multipart()
                    replies += 1
        while sock.poll(1000):
            sock.recv_multipart()
            replies += 1
    finally:
        sock.close(linger=0)
    assert replies > 9000  # nearly every bad message got a typed error back

    with BackendClient(backend.endpoint) as client:
        client.hello()
        assert client.ping(timeout=2.0).running == 0
        events = list(client.iter_events(client.submit("test.count", {"n": 3})))
        assert isinstance(events[-1], wire.Done) and events[-1].results == 3
    assert "Traceback" not in backend.log.read_text()  # every bad message was refused on purpose, none by accident
