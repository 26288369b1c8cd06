"""`gaussians4d.fit` and `gaussians4d.export` through the job manager (the backend's host): a capture as the
add-on sends it, previews streamed while fitting, final frames + animated mesh, the model folder, cancel,
bad input — and the worker keeps serving. Tiny videos and a few steps: plumbing, not quality."""

from __future__ import annotations

import importlib.util
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trimesh
from job_events import events_until_end, results, run_job

from backend.gaussians4d.cameras import nerf_c2w
from backend.gaussians4d.data import write_transforms
from backend.job_store import JobStore
from backend.jobs import JobManager
from backend.plugin_host import discover_plugins
from backend.plugins.gaussians4d import Export4D, Fit4D
from shared import messages as wire
from shared.results import check_gaussians, check_mesh_frames, check_mesh_rest
from shared.schemas import PluginSpec

pytestmark = pytest.mark.timeout(90)

_spec = importlib.util.spec_from_file_location(
    "cli4d_scenes", Path(__file__).resolve().parents[1] / "gaussians4d" / "test_cli4d.py"
)
scenes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenes)


def capture_arrays() -> dict[str, np.ndarray]:
    """What the add-on's capture collector sends: 4 ring views × 3 times (fov 40°)."""
    video = scenes.block_video(4, scenes.TIMES)
    return {
        "images": video.images,
        "alphas": video.alphas,
        "c2w": nerf_c2w(video.cameras).astype(np.float32),
        "times": video.times,
    }


@pytest.fixture(scope="module")
def manager(tmp_path_factory) -> Iterator[JobManager]:
    m = JobManager(JobStore(tmp_path_factory.mktemp("jobs")), plugins={"gaussians4d.fit": Fit4D,
                   "gaussians4d.export": Export4D}, notify=threading.Event().set)  # fmt: skip
    m.start()
    assert m.device_ready.wait(10)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def fitted(manager, tmp_path_factory) -> tuple[list[wire.Message], Path]:
    out = tmp_path_factory.mktemp("fit") / "model"
    params = {"fov_x": math.radians(40.0), "iterations": 4, "preview_every": 2, "frames_out": 3}
    params |= {"mesh_resolution": 24, "out": str(out), "name": "Block", "sh_degree": 1, "color_motion": True}
    events = run_job(manager, "fit1", "gaussians4d.fit", params, capture_arrays())
    return events, out


def test_registered_with_wire_specs() -> None:
    found = discover_plugins()
    for cls in (Fit4D, Export4D):
        assert found[cls.spec.name] is cls
        assert PluginSpec.from_wire(json.loads(json.dumps(cls.spec.to_wire()))) == cls.spec


def test_fit_streams_previews_then_frames_then_the_mesh(fitted) -> None:
    events, out = fitted
    assert isinstance(events[-1], wire.Done), events[-1]
    got = results(events)
    types = [r.type for r in got]
    # step 2: a preview of the 3 output frames; step 4 (the last): the final frames; then the mesh
    assert types == ["gaussians.frame"] * 6 + ["mesh.rest", "mesh.frames"]
    assert [r.meta["frame"] for r in got[:6]] == [0, 1, 2, 0, 1, 2]
    for r in got[:6]:
        assert r.meta["frames"] == 3 and r.meta["name"] == "Block" and r.meta["ply"].endswith(".ply")
        check_gaussians(r.arrays)
        assert r.arrays["sh_rest"].shape == (len(r.arrays["means"]), 3, 3)  # sh_degree 1: view-dependent colour
    assert not np.array_equal(got[0].arrays["means"], got[3].arrays["means"])  # the preview is of an earlier step
    rest, frames = got[6], got[7]
    check_mesh_rest(rest.arrays, rest.meta)
    check_mesh_frames(frames.arrays, frames.meta, len(rest.arrays["rest"]))
    assert rest.meta["frames"] == 3 and frames.arrays["positions"].shape[0] == 3
    # the model folder: model, times, PLY per frame, mesh sequence
    assert (out / "model.safetensors").is_file() and json.loads((out / "times.json").read_text())["times"] == [
        0.0,
        0.5,
        1.0,
    ]
    assert sorted(p.name for p in (out / "ply").iterdir()) == [r.meta["ply"] for r in got[3:6]]
    assert np.load(out / "mesh_sequence.npz")["frames"].shape == frames.arrays["positions"].shape
    progress = [e for e in events if isinstance(e, wire.Progress)]
    assert progress and progress[-1].fraction == 1.0 and "Gaussians" in progress[-1].message


def test_export_streams_the_mesh_and_writes_files(manager, fitted, tmp_path) -> None:
    _, model = fitted
    params = {"path": str(model), "ply": str(tmp_path / "ply"), "obj": str(tmp_path / "rest.obj")}
    params |= {"mesh": str(tmp_path / "seq.npz"), "frames": 2, "mesh_resolution": 24}
    events = run_job(manager, "exp1", "gaussians4d.export", params)
    assert isinstance(events[-1], wire.Done), events[-1]
    got = results(events)
    assert [r.type for r in got] == ["mesh.rest", "mesh.frames"]
    assert got[1].arrays["positions"].shape == (2, len(got[0].arrays["rest"]), 3)
    assert len(list((tmp_path / "ply").glob("*.ply"))) == 2 and (tmp_path / "rest.obj").is_file()
    assert np.load(tmp_path / "seq.npz")["frames"].shape == got[1].arrays["positions"].shape


def test_fit_from_a_dnerf_folder_with_a_rest_mesh_moves_that_mesh(manager, tmp_path) -> None:
    write_transforms(tmp_path / "data", scenes.block_video(4, scenes.TIMES), "train")
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.5))
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.3)
    arrays = {"rest_vertices": vertices.astype(np.float32), "rest_faces": faces.astype(np.int32)}
    params = {"path": str(tmp_path / "data"), "iterations": 2, "out": str(tmp_path / "m")}
    events = run_job(manager, "fit2", "gaussians4d.fit", params, arrays)
    assert isinstance(events[-1], wire.Done), events[-1]
    rest, frames = results(events)[-2:]
    np.testing.assert_array_equal(rest.arrays["faces"], faces)
    assert frames.arrays["positions"].shape == (len(scenes.TIMES), len(vertices), 3)


def test_cancel_keeps_the_previews_and_the_worker_serves_on(manager, fitted, tmp_path) -> None:
    params = {"fov_x": math.radians(40.0), "iterations": 500, "preview_every": 1, "frames_out": 2}
    manager.submit("fit3", "gaussians4d.fit", params | {"out": str(tmp_path / "m")}, capture_arrays())
    got: list[wire.Message] = []
    deadline = time.monotonic() + 60
    while not results(got) and time.monotonic() < deadline:
        got += [e for e in manager.take_events() if e.job == "fit3"]
        time.sleep(0.01)
    assert results(got), "no preview arrived"
    manager.cancel("fit3")
    events = events_until_end(manager, "fit3", 30, got)
    assert isinstance(events[-1], wire.Cancelled)
    kept = results(events)
    assert kept and all(r.type == "gaussians.frame" for r in kept)
    folder = manager.store.folder("fit3")
    assert folder.load().results == len(kept) and folder.read_result(0)[0] == "gaussians.frame"
    # the worker serves the next job
    _, model = fitted
    events = run_job(manager, "exp2", "gaussians4d.export", {"path": str(model), "mesh_resolution": 16})
    assert isinstance(events[-1], wire.Done)


@pytest.mark.parametrize(
    ("job", "params", "arrays", "words"),
    [
        ("bad1", {}, {}, "needs the arrays images, alphas, c2w, times"),
        ("bad2", {"path": "/nowhere", "fov_x": 0.7}, "capture", "either as capture arrays or as a path"),
        ("bad3", {"fov_x": 0.0}, "capture", "fov_x"),
        ("bad4", {"path": "/nowhere/at/all"}, {}, "does not exist"),
    ],
)
def test_bad_input_fails_the_job_with_a_clear_message(manager, job, params, arrays, words) -> None:
    arrays = capture_arrays() if arrays == "capture" else arrays
    end = run_job(manager, job, "gaussians4d.fit", params, arrays)[-1]
    assert isinstance(end, wire.Failed) and end.code == "bad_input" and words in end.message, end


def test_a_capture_from_one_view_is_refused(manager) -> None:
    arrays = capture_arrays()
    arrays["c2w"][:] = arrays["c2w"][0]
    events = run_job(manager, "oneview", "gaussians4d.fit", {"fov_x": 0.7}, arrays)
    assert isinstance(events[-1], wire.Failed) and "at least 2 camera views" in events[-1].message


def test_a_still_capture_is_fitted_with_a_warning_that_the_job_keeps(manager) -> None:
    """The warning travels as Progress.warning (not only as a passing message) and stays in the job's record."""
    arrays = capture_arrays()
    first = {}  # each camera's first image, shown at all its times
    for i, c2w in enumerate(arrays["c2w"]):
        j = first.setdefault(c2w.round(5).tobytes(), i)
        arrays["images"][i], arrays["alphas"][i] = arrays["images"][j], arrays["alphas"][j]
    events = run_job(manager, "still", "gaussians4d.fit", {"fov_x": math.radians(40.0), "iterations": 1}, arrays)
    assert isinstance(events[-1], wire.Done), events[-1]
    warnings = [e.warning for e in events if isinstance(e, wire.Progress) and e.warning]
    assert len(warnings) == 1 and "nothing moves over the captured times" in warnings[0]
    assert manager.store.folder("still").load().warnings == warnings
