"""Generate 4D in real Blender with a real backend running the tiny random model (TESSERA4D_ALLOW_UNTRAINED=1,
its folder as the backend's TESSERA4D_MVDIFF_CHECKPOINT): `tessera.animate_object` renders 4 views of a static
cube and gets back an animated take of the cube's own mesh (dressed with its material and UVs; the cube's data
untouched; the take still playing after save and reopen), with the generated views shown as an image;
`tessera.video_to_4d` reads an image sequence and gets 4D Gaussians + a mesh; movies and clips are read. Plus the
errors. The tiny model's views are noise: this checks plumbing, not motion."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from blender_checks import connect, evaluated_positions
from blender_rig import ADDON_MODULE, BackendProcess, addon
from PIL import Image

from backend.launcher import start_backend

pytestmark = pytest.mark.timeout(90)

TINY = {"frames": 4, "steps": 2, "fit_iterations": 4}


class TinyModelBackend(BackendProcess):
    """A backend whose default multi-view model is a tiny random one it may use (tests only)."""

    def __init__(self, jobs_dir, log_dir, model):
        super().__init__(jobs_dir, log_dir)
        self.env = dict(os.environ, TESSERA4D_ALLOW_UNTRAINED="1", TESSERA4D_MVDIFF_CHECKPOINT=str(model))

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self.log = self.log_dir / f"backend-{self.starts}.log"
        self.proc, _ = start_backend(
            self.address, self.jobs_dir, self.log, self.extra_args, env=self.env, timeout=timeout
        )


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from backend.mvdiff.checkpoint import write_tiny

    root = tmp_path_factory.mktemp("generate")
    model = write_tiny(root / "tiny", views=4, frames=4, resolution=32)
    (root / "jobs").mkdir()
    proc = TinyModelBackend(root / "jobs", root, model)
    proc.start()
    yield proc
    proc.stop()


def mesh_co(ob) -> np.ndarray:
    out = np.empty(len(ob.data.vertices) * 3, np.float32)
    ob.data.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def static_cube(bpy):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1.0, 0.5, 0.0))
    cube = bpy.context.active_object
    mat = bpy.data.materials.new("cube colour")
    mat.diffuse_color = (0.2, 0.5, 0.9, 1.0)
    cube.data.materials.append(mat)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 2
    return cube


def test_animate_object_makes_an_animated_take_of_the_objects_own_mesh(blender, backend, tmp_path):
    bpy = blender
    cube = static_cube(bpy)
    before = mesh_co(cube)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    connect(bpy, backend)
    client = addon().session.SESSION.client
    assert {"pipeline.animate_object", "pipeline.video_to_4d"} <= set(client.plugins)
    result = bpy.ops.tessera.animate_object(prompt="it wobbles", resolution=32, sds_steps=1, **TINY)
    assert result == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=80) == {"FINISHED"}
    job = next(j for j in client.jobs.values() if j.plugin == "pipeline.animate_object")
    assert job.state.value == "done", job.message
    take = bpy.data.objects["Cube animated"]
    mod = take.modifiers["Tessera Mesh Cache"]
    assert mod.type == "MESH_CACHE" and mod.filepath.startswith("//tessera4d/")
    # the take's rest is the cube's surface in world space (8 vertices, 12 triangles), dressed like the cube
    world = before + np.float32([1.0, 0.5, 0.0])
    np.testing.assert_allclose(mesh_co(take), world, atol=1e-6)
    assert len(take.data.polygons) == 12 and take.data.materials[0].name == "cube colour"
    assert take.data.uv_layers.active is not None
    for frame in (1, 4):
        moved = evaluated_positions(bpy, take, frame)
        assert moved.shape == (8, 3) and np.isfinite(moved).all()
    assert bpy.context.scene.frame_end == 4  # the take's 4 frames
    # the cube itself: data untouched, hidden so the take plays in its place
    np.testing.assert_array_equal(mesh_co(cube), before)
    assert cube.hide_render and cube.hide_get()
    preview = bpy.data.images["Cube generated views"]
    assert tuple(preview.size) == (4 * 32, 32) and job.previews >= 1
    # the take plays after saving and reopening with the backend off
    last = evaluated_positions(bpy, take, 4)
    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    backend.stop()
    try:
        bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "shot.blend"))
        take = bpy.data.objects["Cube animated"]
        np.testing.assert_array_equal(evaluated_positions(bpy, take, 4), last)
        assert take.data.materials[0].name == "cube colour" and bpy.data.objects["Cube"].hide_render
    finally:
        backend.start()

    # Fetched in this later session, the take is dressed from the cube again (its arrays were not stored), unless
    # the cube's surface has changed since: then its materials would land on the wrong triangles, so none are set.
    connect(bpy, backend)
    session = addon().session.SESSION
    cube = bpy.data.objects["Cube"]
    subdivided = cube.modifiers.new("more triangles", "SUBSURF")
    for dressed in (False, True):
        before = set(bpy.data.objects.keys())
        assert bpy.ops.tessera.fetch_job(job_id=job.id) == {"FINISHED"}
        assert bpy.ops.tessera.wait(timeout=80) == {"FINISHED"}
        (fetched,) = [bpy.data.objects[name] for name in set(bpy.data.objects.keys()) - before]
        assert len(fetched.data.polygons) == 12 and session.client.jobs[job.id].state.value == "done"
        assert len(fetched.data.materials) == int(dressed) and (fetched.data.uv_layers.active is not None) == dressed
        if dressed:
            assert fetched.data.materials[0].name == "cube colour"
        else:
            cube.modifiers.remove(subdivided)


def test_the_condition_renders_come_from_the_models_camera_ring(installed_extension):
    """The add-on cannot import the backend: its ring must be the model's own (Animate3D's, azimuth 0 on +X)."""
    from backend.mvdiff.cameras import mvdream_cameras, to_world_cameras

    ops = importlib.import_module(f"{ADDON_MODULE}.operators")
    capture = importlib.import_module(f"{ADDON_MODULE}.collectors.multiview_capture")
    centre = (1.0, -2.0, 0.5)
    ring = capture.ring_c2w(ops.MODEL_VIEWS, centre, 4.0, ops.MODEL_ELEVATION, ops.MODEL_AZIMUTH_START)
    model = to_world_cameras(mvdream_cameras(4, 15.0), centre, 4.0)
    np.testing.assert_allclose(ring, model, atol=1e-5)
    assert ops.MODEL_FOV == 40.0


def test_animate_object_errors_say_what_to_do(blender, backend):
    bpy = blender
    static_cube(bpy)
    with pytest.raises(RuntimeError, match="No backend connection"):
        bpy.ops.tessera.animate_object(prompt="jump", **TINY)
    connect(bpy, backend)
    with pytest.raises(RuntimeError, match="Type what the motion should be"):
        bpy.ops.tessera.animate_object(prompt="  ", **TINY)
    points = bpy.data.objects.new("Points", bpy.data.meshes.new("Points"))
    points.data.vertices.add(3)
    bpy.context.scene.collection.objects.link(points)
    bpy.context.view_layer.objects.active = points
    with pytest.raises(RuntimeError, match="has no geometry to animate"):
        bpy.ops.tessera.animate_object(prompt="jump", **TINY)
    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="poll"):
        bpy.ops.tessera.animate_object(prompt="jump", **TINY)
    client = addon().session.SESSION.client
    assert not [j for j in client.jobs.values() if j.plugin == "pipeline.animate_object"]  # nothing was sent


def write_sequence(folder, count=5, size=(40, 30)) -> list:
    """RGBA PNGs frame_0001.png… of a red square sliding down on a transparent background."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(count):
        rgba = np.zeros((size[0], size[1], 4), np.uint8)
        rgba[8 + 3 * f : 20 + 3 * f, 8:22] = (200, 40, 30, 255)
        paths.append(folder / f"frame_{f + 1:04d}.png")
        Image.fromarray(rgba).save(paths[-1])
    return paths


def test_the_video_collector_reads_an_image_sequence_and_a_clip(blender, tmp_path):
    bpy = blender
    frames_mod = importlib.import_module(f"{ADDON_MODULE}.collectors.video_frames")
    paths = write_sequence(tmp_path / "seq")
    image = bpy.data.images.load(str(paths[0]))
    image.source = "SEQUENCE"
    video = frames_mod.read_frames(bpy.context, frames_mod.find_source(bpy.context, image=image.name), 3)
    assert video.images.shape == (3, 40, 30, 3) and video.alphas.shape == (3, 40, 30)
    np.testing.assert_allclose(video.images[2, 20, 10], [200 / 255, 40 / 255, 30 / 255], atol=1e-6)  # frame 5
    assert video.alphas[0, 20, 10] == 0.0 and video.alphas[2, 20, 10] == 1.0
    clip = bpy.data.movieclips.load(str(paths[0]))
    bpy.context.scene.active_clip = clip
    from_clip = frames_mod.read_frames(bpy.context, frames_mod.find_source(bpy.context), 3, max_size=20)
    assert from_clip.images.shape == (3, 20, 15, 3)
    still = bpy.data.images.load(str(paths[1]))
    with pytest.raises(Exception, match="pick an image sequence or a movie"):
        frames_mod.find_source(bpy.context, image=still.name)


def test_video_to_4d_streams_gaussians_and_a_mesh(blender, backend, tmp_path):
    bpy = blender
    paths = write_sequence(tmp_path / "seq")
    image = bpy.data.images.load(str(paths[0]))
    image.source = "SEQUENCE"
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 2
    with pytest.raises(RuntimeError, match="No video to read"):
        connect(bpy, backend)
        bpy.ops.tessera.video_to_4d(prompt="slides", **TINY)
    assert bpy.ops.tessera.video_to_4d(image=image.name, prompt="slides", **TINY) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=80) == {"FINISHED"}
    client = addon().session.SESSION.client
    job = next(j for j in client.jobs.values() if j.plugin == "pipeline.video_to_4d")
    assert job.state.value == "done", job.message
    name = f"{image.name} 4D"
    assert len(bpy.data.collections[f"{name} frames"].objects) == 4
    mesh = bpy.data.objects[f"{name} mesh"]
    assert np.isfinite(evaluated_positions(bpy, mesh, 4)).all() and len(mesh.data.vertices) > 0
    assert bpy.data.images[f"{image.name} generated views"].size[0] == 4 * 32
    # the Generate 4D panel shows the latest generation and the views it made
    from types import SimpleNamespace

    from test_panels import Recorder

    lines: list[str] = []
    addon().panels.VIEW3D_PT_tessera_generate_4d.draw(SimpleNamespace(layout=Recorder(lines)), bpy.context)
    assert "Last generation: done" in lines and f"Views: image '{image.name} generated views'" in lines
    assert any(line.startswith("icon ") for line in lines)


def write_movie(bpy, path) -> None:
    """A 5-frame 32×24 H.264 MP4 of a plane filling the view, red at frame 1 turning blue by frame 5."""
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=4.0, location=(0.0, 0.0, 0.0))
    plane = bpy.context.active_object
    mat = bpy.data.materials.new("fading")
    plane.data.materials.append(mat)
    mat.diffuse_color = (1.0, 0.0, 0.0, 1.0)
    mat.keyframe_insert("diffuse_color", frame=1)
    mat.diffuse_color = (0.0, 0.0, 1.0, 1.0)
    mat.keyframe_insert("diffuse_color", frame=5)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, 0.0, 3.0)
    scene.camera = cam
    render = scene.render
    render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light, scene.display.shading.color_type = "FLAT", "MATERIAL"
    render.resolution_x, render.resolution_y, render.resolution_percentage = 32, 24, 100
    scene.frame_start, scene.frame_end = 1, 5
    if hasattr(render.image_settings, "media_type"):  # Blender 5.0: pick video before the container
        render.image_settings.media_type = "VIDEO"
    render.image_settings.file_format = "FFMPEG"
    render.ffmpeg.format, render.ffmpeg.codec = "MPEG4", "H264"
    render.filepath = str(path)
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}


def test_the_video_collector_renders_a_movie_frame_by_frame(blender, tmp_path):
    bpy = blender
    frames_mod = importlib.import_module(f"{ADDON_MODULE}.collectors.video_frames")
    write_movie(bpy, tmp_path / "clip.mp4")
    scenes_before = len(bpy.data.scenes)
    movie = bpy.data.images.load(str(tmp_path / "clip.mp4"))
    assert movie.source == "MOVIE"
    video = frames_mod.read_frames(bpy.context, frames_mod.find_source(bpy.context, image=movie.name), 3)
    assert video.images.shape == (3, 24, 32, 3) and video.alphas is None
    first, last = video.images[0].mean((0, 1)), video.images[-1].mean((0, 1))
    assert first[0] > 0.8 and first[2] < 0.2 and last[2] > 0.8 and last[0] < 0.2, (first, last)
    clip = bpy.data.movieclips.load(str(tmp_path / "clip.mp4"))
    from_clip = frames_mod.read_frames(bpy.context, frames_mod.find_source(bpy.context, clip=clip.name), 5)
    assert from_clip.images.shape == (5, 24, 32, 3)
    np.testing.assert_allclose(from_clip.images[[0, 2, 4]], video.images, atol=1e-6)
    assert len(bpy.data.scenes) == scenes_before  # the temporary scene is gone


def test_a_mirrored_object_sends_its_faces_facing_out(blender):
    """A negative scale mirrors the mesh: its triangles are sent wound the other way (and their UVs with them), so a
    take made from them faces out as the object does in Blender."""
    bpy = blender
    surface_of = addon().collectors.static_object.world_surface
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 0.0))
    cube = bpy.context.active_object
    cube.data.uv_layers.new(name="UVMap")

    def outward_share(surface) -> float:
        tri = surface.vertices[surface.faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return float((np.einsum("ij,ij->i", normals, tri.mean(1) - surface.vertices.mean(0)) > 0).mean())

    plain = surface_of(bpy.context, cube)
    cube.scale = (-1.0, 0.6, 1.2)
    bpy.context.view_layer.update()
    mirrored = surface_of(bpy.context, cube)
    assert outward_share(plain) == 1.0 and outward_share(mirrored) == 1.0
    np.testing.assert_array_equal(mirrored.faces, plain.faces[:, ::-1])
    np.testing.assert_array_equal(mirrored.uvs, plain.uvs[:, ::-1])
