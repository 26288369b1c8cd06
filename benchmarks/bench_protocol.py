"""Array throughput through the Tessera protocol vs raw pyzmq, over TCP loopback.

Both sides send the same 24 MB float32 arrays (6M values, e.g. 2M vertices x 3) through
PUSH/PULL, zero-copy on send. "protocol" adds what every real message pays: to_frames
(envelope + wire checks) on send and from_frames (limits, dtype/shape checks, typed message)
on receive; result arrays are checked for NaN/inf once, by their result type's validator (what
the add-on runs before writing anything), shown as "protocol + result check". "raw" is
send_multipart([small header, array], copy=False) + np.frombuffer.
Best of `--repeats` interleaved runs of `--messages` messages each (default 5 x 20).

    .venv/bin/python benchmarks/bench_protocol.py [--messages 20] [--repeats 5] [--mb 24]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import numpy as np
import zmq
from rich.console import Console
from rich.table import Table

from shared import messages as wire
from shared.results import check_mesh_frames


def _run(
    ctx: zmq.Context, send_one: Callable[[zmq.Socket, int], None], recv_one: Callable[[zmq.Socket], int], messages: int
) -> float:
    """Seconds for `messages` messages from the first send to the last receive."""
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    push.send(b"warm-up")
    pull.recv()

    def sender() -> None:
        for i in range(messages):
            send_one(push, i)

    thread = threading.Thread(target=sender)
    start, cpu_start = time.perf_counter(), time.thread_time()
    thread.start()
    received = 0
    for _ in range(messages):
        received += recv_one(pull)
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    thread.join()
    push.close(linger=0)
    pull.close(linger=0)
    assert received == messages * send_one.nbytes  # type: ignore[attr-defined]
    return seconds, cpu / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mb", type=float, default=24.0)
    args = parser.parse_args()

    values = int(args.mb * 1e6) // 4
    arrays = [np.random.default_rng(i).random(values, dtype=np.float32).reshape(1, -1, 3) for i in range(2)]
    nbytes = arrays[0].nbytes

    def send_protocol(sock: zmq.Socket, i: int) -> None:
        msg = wire.Result(
            job="bench", index=i, type="mesh.frames", meta={"start": i}, arrays={"positions": arrays[i % 2]}
        )
        sock.send_multipart(wire.to_frames(msg), copy=False)

    def recv_protocol(sock: zmq.Socket) -> int:
        msg = wire.from_frames(sock.recv_multipart(copy=False))
        return msg.arrays["positions"].nbytes

    def recv_protocol_checked(sock: zmq.Socket) -> int:
        msg = wire.from_frames(sock.recv_multipart(copy=False))
        return check_mesh_frames(msg.arrays, msg.meta, arrays[0].shape[1]).nbytes

    def send_raw(sock: zmq.Socket, i: int) -> None:
        sock.send_multipart([b"%d" % i, arrays[i % 2]], copy=False)

    def recv_raw(sock: zmq.Socket) -> int:
        frames = sock.recv_multipart(copy=False)
        return np.frombuffer(frames[1].buffer, dtype=np.float32).nbytes

    send_protocol.nbytes = send_raw.nbytes = nbytes  # type: ignore[attr-defined]
    ctx = zmq.Context()
    paths = {
        "raw pyzmq": (send_raw, recv_raw),
        "tessera protocol": (send_protocol, recv_protocol),
        "protocol + result check": (send_protocol, recv_protocol_checked),
    }
    best = dict.fromkeys(paths, (float("inf"), float("inf")))
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both paths alike
        for name, (send_one, recv_one) in paths.items():
            seconds, cpu = _run(ctx, send_one, recv_one, args.messages)
            best[name] = (min(best[name][0], seconds), min(best[name][1], cpu))
    ctx.term()
    rows = [(name, s, nbytes * args.messages / s / 1e6, cpu) for name, (s, cpu) in best.items()]

    table = Table(title=f"{args.messages} x {nbytes / 1e6:.0f} MB float32 over tcp loopback, best of {args.repeats}")
    for column in ("path", "seconds", "MB/s", "vs raw", "receiver CPU ms/msg"):
        table.add_column(column, justify="right")
    raw_rate = rows[0][2]
    for name, seconds, rate, cpu in rows:
        table.add_row(name, f"{seconds:.3f}", f"{rate:,.0f}", f"{rate / raw_rate:.2f}x", f"{cpu * 1e3:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
