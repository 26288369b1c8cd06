"""`pipeline.animate_object` and `pipeline.video_to_4d` through the job manager (the backend's host) with the
tiny random model (`write_tiny`, TESSERA4D_ALLOW_UNTRAINED=1): previews streamed while sampling, the generated
views saved, the object's own mesh moving (or Gaussians + a mesh), the model loaded once and reused, cancel, an
out-of-memory that releases the models while the worker keeps serving, and the bad inputs. Tiny sizes and a
few steps: plumbing, not quality (the random model's views are noise)."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from job_events import events_until_end, results, run_job

from backend.gaussians4d.cameras import cameras_from_nerf
from backend.job_store import JobStore
from backend.jobs import JobManager
from backend.mvdiff.cameras import mvdream_cameras, to_world_cameras
from backend.mvdiff.checkpoint import write_tiny
from backend.plugin_host import discover_plugins
from backend.plugins import pipelines
from backend.plugins.pipelines import AnimateObject, VideoTo4D, model_cameras
from shared import messages as wire
from shared.errors import InputError
from shared.results import check_gaussians, check_mesh_frames, check_mesh_rest
from shared.schemas import PluginSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.timeout(60)

_spec = importlib.util.spec_from_file_location(
    "moving_scenes_for_pipelines", Path(__file__).resolve().parents[1] / "gaussians4d" / "moving_scenes.py"
)
scenes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenes)

SIZE = 32
FOV = float(np.radians(40.0))
CENTRE = np.array([0.2, -0.1, 0.3])
FAST = {"steps": 2, "fit_iterations": 3, "preset": "fast"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return write_tiny(tmp_path_factory.mktemp("models") / "tiny", views=4, frames=4, resolution=SIZE)


@pytest.fixture(scope="module", autouse=True)
def allow_untrained():
    old = os.environ.get(pipelines.ALLOW_UNTRAINED_ENV)
    os.environ[pipelines.ALLOW_UNTRAINED_ENV] = "1"
    yield
    if old is None:
        os.environ.pop(pipelines.ALLOW_UNTRAINED_ENV, None)
    else:
        os.environ[pipelines.ALLOW_UNTRAINED_ENV] = old


@pytest.fixture(scope="module")
def manager(tmp_path_factory) -> Iterator[JobManager]:
    m = JobManager(JobStore(tmp_path_factory.mktemp("jobs")), plugins={"pipeline.animate_object": AnimateObject,
                   "pipeline.video_to_4d": VideoTo4D}, notify=threading.Event().set)  # fmt: skip
    m.start()
    assert m.device_ready.wait(10)
    m.models.release()
    yield m
    m.stop()
    m.models.release()  # the cache is the process's (backend.jobs.MODELS): leave it empty for later tests


def condition_arrays() -> dict[str, np.ndarray]:
    """What tessera.animate_object sends: 4 renders of the hinged box at the model's ring around CENTRE."""
    c2w = to_world_cameras(mvdream_cameras(4, 15.0), CENTRE, 3.0)
    vertices, faces = scenes.hinge_mesh()
    vertices = vertices + CENTRE.astype(np.float32)
    cams = cameras_from_nerf(c2w, SIZE, SIZE, camera_angle_x=FOV)
    video = scenes._render(lambda t: vertices, np.full((len(vertices), 3), 0.3), cams, [0.0], SIZE, 0.05)
    return {
        "images": video.images,
        "alphas": video.alphas,
        "c2w": c2w.astype(np.float32),
        "rest_vertices": vertices.astype(np.float32),
        "rest_faces": faces.astype(np.int32),
    }


@pytest.fixture(scope="module")
def animated(manager, tiny) -> list[wire.Message]:
    params = {"checkpoint": str(tiny), "prompt": "the right half swings", "frames": 4, "fov_x": FOV}
    params |= FAST | {"sds_steps": 2, "preview_every": 1, "name": "Hinge animated"}
    return run_job(manager, "anim1", "pipeline.animate_object", params, condition_arrays())


def test_registered_with_wire_specs() -> None:
    found = discover_plugins()
    for cls in (AnimateObject, VideoTo4D):
        assert found[cls.spec.name] is cls
        assert PluginSpec.from_wire(json.loads(json.dumps(cls.spec.to_wire()))) == cls.spec


def test_model_cameras_are_the_mvdream_ring_wherever_the_object_is() -> None:
    ring = mvdream_cameras(4, 15.0)
    np.testing.assert_allclose(model_cameras(to_world_cameras(ring, CENTRE, 7.5)), ring, atol=1e-5)


def test_animate_object_streams_previews_then_the_objects_own_mesh_moving(animated, manager) -> None:
    events = animated
    assert isinstance(events[-1], wire.Done), events[-1]
    previews = [e for e in events if isinstance(e, wire.Progress) and "preview" in e.arrays]
    assert len(previews) == 2  # one per sampling step
    assert previews[0].arrays["preview"].shape == (4, SIZE, SIZE, 3) and previews[0].arrays["preview"].dtype == np.uint8
    rest, frames = results(events)
    sent = condition_arrays()
    assert (rest.type, frames.type) == ("mesh.rest", "mesh.frames")
    check_mesh_rest(rest.arrays, rest.meta)
    np.testing.assert_array_equal(rest.arrays["rest"], sent["rest_vertices"])  # the object's own mesh
    np.testing.assert_array_equal(rest.arrays["faces"], sent["rest_faces"])
    positions = check_mesh_frames(frames.arrays, frames.meta, len(sent["rest_vertices"]))
    assert positions.shape == (4, len(sent["rest_vertices"]), 3) and rest.meta["frames"] == 4
    assert rest.meta["name"] == "Hinge animated" and rest.meta["untrained"] is True
    last = [e for e in events if isinstance(e, wire.Progress)][-1]
    assert "UNTRAINED" in last.message and "refine" in " ".join(e.stage for e in events if hasattr(e, "stage"))
    steps = [e.message.split(",")[0] for e in events if "reconstruct: step" in getattr(e, "message", "")]
    assert steps[-1] == "reconstruct: step 3/3"  # fit_iterations is the mesh path's step count too
    job_dir = manager.store.folder("anim1").path
    pngs = sorted((job_dir / "generated").glob("view_*/frame_*.png"))
    assert len(pngs) == 16 and (job_dir / "mesh_sequence.npz").is_file()


def test_the_model_is_loaded_once_and_reused(animated, manager, tiny) -> None:
    keys = [k for k in manager.models._items if k.startswith("mvdiff:")]
    assert len(keys) == 1
    model = manager.models._items[keys[0]]
    params = {"checkpoint": str(tiny), "prompt": "again", "frames": 2, "fov_x": FOV} | FAST
    events = run_job(manager, "anim2", "pipeline.animate_object", params, condition_arrays())
    assert isinstance(events[-1], wire.Done), events[-1]
    assert manager.models._items[keys[0]] is model
    assert "load 0 s" in [e for e in events if isinstance(e, wire.Progress)][-1].message


def test_a_model_with_an_ip_adapter_refines_with_the_image_prompt(manager, tmp_path) -> None:
    folder = write_tiny(tmp_path / "ip", views=4, frames=4, resolution=SIZE, ip_adapter=True)
    params = {"checkpoint": str(folder), "prompt": "swing", "frames": 2, "fov_x": FOV, "sds_steps": 1} | FAST
    events = run_job(manager, "ip1", "pipeline.animate_object", params, condition_arrays())
    assert isinstance(events[-1], wire.Done), events[-1]
    assert [r.type for r in results(events)] == ["mesh.rest", "mesh.frames"]


def test_video_to_4d_streams_gaussian_frames_and_a_mesh(manager, tiny) -> None:
    rng = np.random.default_rng(0)
    video = np.ones((6, 40, 30, 3), np.float32)  # portrait frames: padded to square with white
    for f in range(6):
        video[f, 10 + f : 26 + f, 8:22] = rng.uniform(0.1, 0.6, 3)
    params = {"checkpoint": str(tiny), "prompt": "a block moving down", "mesh_resolution": 16} | FAST
    events = run_job(manager, "vid1", "pipeline.video_to_4d", params, {"images": video})
    assert isinstance(events[-1], wire.Done), events[-1]
    got = results(events)
    assert [r.type for r in got] == ["gaussians.frame"] * 4 + ["mesh.rest", "mesh.frames"]  # frames: the model's 4
    for r in got[:4]:
        check_gaussians(r.arrays)
        assert r.meta["frames"] == 4 and r.meta["untrained"] is True
    assert got[-1].arrays["positions"].shape == (4, len(got[-2].arrays["rest"]), 3)


def test_cancel_stops_sampling_and_the_worker_serves_on(manager, tiny) -> None:
    params = {"checkpoint": str(tiny), "prompt": "slow", "frames": 4, "fov_x": FOV, "steps": 400, "preview_every": 1}
    manager.submit("anim3", "pipeline.animate_object", params, condition_arrays())
    got: list[wire.Message] = []
    deadline = time.monotonic() + 30
    while not any(isinstance(e, wire.Progress) and "preview" in e.arrays for e in got):
        assert time.monotonic() < deadline, "no preview arrived"
        got += [e for e in manager.take_events() if e.job == "anim3"]
        time.sleep(0.01)
    manager.cancel("anim3")
    assert isinstance(events_until_end(manager, "anim3", 20, got)[-1], wire.Cancelled)


def test_out_of_memory_releases_the_models_and_the_worker_serves_on(manager, tiny, monkeypatch) -> None:
    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    params = {"checkpoint": str(tiny), "prompt": "big", "frames": 4, "fov_x": FOV} | FAST
    run_job(manager, "warm", "pipeline.animate_object", params | {"frames": 2}, condition_arrays())
    assert any(k.startswith("mvdiff:") for k in manager.models._items)
    monkeypatch.setattr("backend.mvdiff.animate.animate", no_memory)
    end = run_job(manager, "oom", "pipeline.animate_object", params, condition_arrays())[-1]
    assert isinstance(end, wire.Failed) and end.code == "bad_input", end
    assert "ran out of memory" in end.message and "fewer" in end.message
    assert not manager.models._items  # released
    monkeypatch.undo()
    events = run_job(manager, "after", "pipeline.animate_object", params | {"frames": 2}, condition_arrays())
    assert isinstance(events[-1], wire.Done), events[-1]

    def fit_out_of_memory(*args, **kwargs):  # the 4D fit turns its own OOM into an InputError
        try:
            no_memory()
        except torch.cuda.OutOfMemoryError as exc:
            raise InputError("The GPU ran out of memory fitting 256×256 images") from exc

    assert manager.models._items
    monkeypatch.setattr("backend.gaussians4d.fit.fit", fit_out_of_memory)
    end = run_job(manager, "oom2", "pipeline.animate_object", params, condition_arrays())[-1]
    assert isinstance(end, wire.Failed) and "ran out of memory" in end.message, end
    assert not manager.models._items


def test_empty_generated_views_are_reported_not_fitted(manager, tiny, monkeypatch) -> None:
    from types import SimpleNamespace

    from backend.mvdiff.pipeline import MultiViewVideoPipeline

    def white(self, prompt, condition, mask, cameras, **kwargs):
        return SimpleNamespace(frames=np.ones_like(condition))

    monkeypatch.setattr(MultiViewVideoPipeline, "__call__", white)
    params = {"checkpoint": str(tiny), "prompt": "nothing", "frames": 2, "fov_x": FOV} | FAST
    end = run_job(manager, "white", "pipeline.animate_object", params, condition_arrays())[-1]
    assert isinstance(end, wire.Failed) and "generated empty views" in end.message, end
    video = np.ones((3, 16, 16, 3), np.float32)
    video[:, 4:12, 4:12] = 0.2
    params.pop("fov_x")
    end = run_job(manager, "white2", "pipeline.video_to_4d", params, {"images": video})[-1]
    assert isinstance(end, wire.Failed) and "generated empty views" in end.message, end


@pytest.mark.parametrize(
    ("job", "change", "words"),
    [
        ("nogeo", {"rest_vertices": np.zeros((0, 3), np.float32)}, "has no geometry"),
        ("nofaces", {"rest_faces": np.zeros((0, 3), np.int32)}, "no faces"),
        ("noimg", {"images": None}, "missing: images"),
        ("blank", {"alphas": "zeros"}, "not in any condition render"),
    ],
)
def test_bad_object_input_fails_before_loading_the_model(manager, job, change, words) -> None:
    arrays = condition_arrays()
    for key, value in change.items():
        if value is None:
            arrays.pop(key)
        elif isinstance(value, str):
            arrays[key] = np.zeros_like(arrays[key])
        else:
            arrays[key] = value
    end = run_job(manager, job, "pipeline.animate_object", {"checkpoint": "/nowhere", "fov_x": FOV}, arrays)[-1]
    assert isinstance(end, wire.Failed) and end.code == "bad_input" and words in end.message, end


def test_missing_untrained_and_oversized_requests_say_what_to_do(manager, tiny, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(pipelines.CHECKPOINT_ENV, raising=False)
    arrays = condition_arrays()
    end = run_job(manager, "nockpt", "pipeline.animate_object", {"fov_x": FOV}, arrays)[-1]
    assert isinstance(end, wire.Failed) and "No multi-view video model" in end.message
    assert "convert-animate3d" in end.message
    end = run_job(manager, "missing", "pipeline.animate_object", {"fov_x": FOV, "checkpoint": str(tmp_path)}, arrays)
    assert isinstance(end[-1], wire.Failed) and "unet/config.json" in end[-1].message
    monkeypatch.setenv(pipelines.CHECKPOINT_ENV, str(tiny))  # the backend's default folder
    monkeypatch.setenv(pipelines.ALLOW_UNTRAINED_ENV, "0")
    end = run_job(manager, "untrained", "pipeline.animate_object", {"fov_x": FOV}, arrays)[-1]
    assert isinstance(end, wire.Failed) and "random weights" in end.message
    monkeypatch.setenv(pipelines.ALLOW_UNTRAINED_ENV, "1")
    end = run_job(manager, "toolong", "pipeline.animate_object", {"fov_x": FOV, "frames": 9}, arrays)[-1]
    assert isinstance(end, wire.Failed) and "at most 4 frames" in end.message
    end = run_job(manager, "novideo", "pipeline.video_to_4d", {}, {})[-1]
    assert isinstance(end, wire.Failed) and "needs the array 'images'" in end.message
