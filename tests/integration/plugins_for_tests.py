"""Plugins with controllable timing and failures, registered with `serve --plugins-from plugins_for_tests`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from backend.plugin_host import JobContext, Output, Plugin, Progress
from shared.errors import InputError
from shared.schemas import ParamSpec, PluginSpec


def frame_positions(index: int, vertices: int) -> np.ndarray:
    """The (1, V, 3) float32 positions `test.count` sends as result `index` (deterministic)."""
    base = np.arange(vertices * 3, dtype=np.float32).reshape(1, vertices, 3)
    return base * 0.001 + np.float32(index)


class Count(Plugin):
    """Yields `n` mesh.frames results, sleeping `delay` seconds before each."""

    spec = PluginSpec(
        name="test.count",
        summary="Count frames (test plugin)",
        params=[
            ParamSpec("n", "int", default=5, min=0, max=100000),
            ParamSpec("delay", "float", default=0.0, min=0.0, max=10.0),
            ParamSpec("vertices", "int", default=8, min=1, max=10_000_000),
            ParamSpec("warn", "str", default="", help="A warning sent with every progress."),
        ],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        n, delay, vertices = ctx.params["n"], ctx.params["delay"], ctx.params["vertices"]
        for i in range(n):
            time.sleep(delay)
            yield Progress("counting", i / max(n, 1), f"frame {i + 1} of {n}", warning=ctx.params["warn"])
            yield Output("mesh.frames", {"start": i}, {"positions": frame_positions(i, vertices)})


class Fail(Plugin):
    """Yields `after` results, then raises InputError ('input') or RuntimeError ('runtime')."""

    spec = PluginSpec(
        name="test.fail",
        summary="Fail on purpose (test plugin)",
        params=[
            ParamSpec("mode", "enum", default="input", choices=["input", "runtime"]),
            ParamSpec("after", "int", default=0, min=0),
        ],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        for i in range(ctx.params["after"]):
            yield Output("mesh.frames", {"start": i}, {"positions": frame_positions(i, 4)})
        if ctx.params["mode"] == "input":
            raise InputError("Frame 3 has 7 vertices; expected 8.")
        raise RuntimeError("boom")


class LoadNpy(Plugin):
    """Reads one (N, V, 3) float32 .npy file given as its only path parameter and sends it as one result."""

    spec = PluginSpec(
        name="test.load_npy",
        summary="Load a .npy of positions (test plugin)",
        params=[ParamSpec("source", "path", required=True), ParamSpec("scale", "float", default=1.0)],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        try:
            positions = np.load(ctx.params["source"]).astype(np.float32)
        except OSError as exc:
            raise InputError(f"Cannot read {ctx.params['source']}: {exc}") from exc
        yield Progress("loading", 0.5)
        yield Output("mesh.frames", {"start": 0}, {"positions": positions * np.float32(ctx.params["scale"])})


PLUGINS = {"test.count": Count, "test.fail": Fail, "test.load_npy": LoadNpy}
