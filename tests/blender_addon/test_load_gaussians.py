"""Gaussian splat sequences: per-frame point meshes, attributes, PLYs on disk, frame switching."""

import numpy as np
import pytest
from blender_checks import connect
from blender_rig import addon

from backend.formats.gaussian_ply import read_gaussian_ply, write_gaussian_ply
from backend.samples import gaussian_sample_sequence

FRAMES = 4


@pytest.fixture(scope="module")
def splat_folder(tmp_path_factory):
    """4 frames of a spinning torus; frame i keeps 300 - 20 i Gaussians so counts tell frames apart."""
    folder = tmp_path_factory.mktemp("splats") / "torus"
    folder.mkdir()
    frames = []
    for i, frame in enumerate(gaussian_sample_sequence(frames=FRAMES, n=300, sh_degree=1)):
        frame = frame.take(np.arange(300 - 20 * i))
        write_gaussian_ply(folder / f"frame_{i:04d}.ply", frame)
        frames.append(read_gaussian_ply(folder / f"frame_{i:04d}.ply"))  # float32, as the backend sends
    return folder, frames


def attribute(mesh, name, width):
    attr = mesh.attributes[name]
    prop = {"FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector"}.get(attr.data_type, "value")
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(prop, out)
    return out.reshape(len(attr.data), width) if width > 1 else out


def instance_count(bpy, ob) -> int:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return sum(1 for inst in depsgraph.object_instances if inst.is_instance and inst.parent.name == ob.name)


def load(bpy, backend, folder):
    connect(bpy, backend)
    assert bpy.ops.tessera.load_gaussian_sequence(directory=str(folder)) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    return bpy.data.objects["torus"]


def check_frames(bpy, ob, frames):
    collection = bpy.data.collections["torus frames"]
    assert len(collection.objects) == FRAMES
    for i, src in enumerate(frames):
        mesh = bpy.data.objects[f"torus.f{i:05d}"].data
        assert len(mesh.vertices) == src.count
        assert np.array_equal(attribute(mesh, "position", 3), src.means)
        assert np.array_equal(attribute(mesh, "log_scale", 3), src.scales)
        assert np.allclose(attribute(mesh, "scale", 3), np.exp(src.scales), rtol=1e-6)
        quats = src.rotations / np.linalg.norm(src.rotations, axis=1, keepdims=True)
        assert np.allclose(attribute(mesh, "rotation", 4), quats, atol=1e-6)
        assert mesh.attributes["rotation"].data_type == "QUATERNION"
        assert np.allclose(attribute(mesh, "opacity", 1), 1 / (1 + np.exp(-src.opacities)), atol=1e-6)
        rgb = np.clip(0.5 + 0.28209479 * src.sh_dc, 0, 1)
        assert np.allclose(attribute(mesh, "color", 4)[:, :3], rgb, atol=1e-6)
    start = bpy.context.scene.frame_start
    for i in (2, 0, 3, 1):  # switching back and forth shows each frame's own splats
        bpy.context.scene.frame_set(start + i)
        assert instance_count(bpy, ob) == frames[i].count, f"frame {i}"


def test_splat_sequence_loads_with_attributes_plys_and_frame_switching(blender, backend, splat_folder, tmp_path):
    bpy = blender
    folder, frames = splat_folder
    blend = tmp_path / "splats.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    ob = load(bpy, backend, folder)
    assert ob.modifiers["Tessera Splats"].type == "NODES"
    assert bpy.context.scene.frame_end >= bpy.context.scene.frame_start + FRAMES - 1
    check_frames(bpy, ob, frames)

    # The PLYs next to the .blend are standard 3DGS files with the source's values.
    ply_folder = addon().storage.absolute(ob["tessera_ply_folder"])
    assert str(ply_folder).startswith(str(tmp_path / "tessera4d" / "splats"))
    plys = sorted(ply_folder.glob("*.ply"))
    assert [p.name for p in plys] == [f"frame_{i:04d}.ply" for i in range(FRAMES)]
    for path, src in zip(plys, frames, strict=True):
        back = read_gaussian_ply(path)
        for name in ("means", "scales", "rotations", "opacities", "sh_dc", "sh_rest"):
            assert np.array_equal(getattr(back, name), getattr(src, name)), name

    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    backend.stop()
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
        check_frames(bpy, bpy.data.objects["torus"], frames)
    finally:
        backend.start()


def test_unsaved_splat_plys_move_on_first_save(blender, backend, splat_folder, tmp_path):
    bpy = blender
    folder, frames = splat_folder
    ob = load(bpy, backend, folder)
    before = addon().storage.absolute(ob["tessera_ply_folder"])
    assert "/unsaved/" in str(before)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "late.blend"))
    assert ob["tessera_ply_folder"].startswith("//tessera4d/late/")
    after = addon().storage.absolute(ob["tessera_ply_folder"])
    assert len(list(after.glob("*.ply"))) == FRAMES
    assert not before.exists()


def test_splats_play_from_the_frame_they_were_asked_at(blender, backend, splat_folder):
    """The frame range edited while the job runs: the splats still start at the first frame of the range the
    user had when they asked (as mesh sequences do)."""
    bpy = blender
    folder, frames = splat_folder
    scene = bpy.context.scene
    scene.frame_start = 5
    connect(bpy, backend)
    assert bpy.ops.tessera.load_gaussian_sequence(directory=str(folder)) == {"FINISHED"}
    scene.frame_start = 1
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    scene.frame_start = 5  # check_frames looks from the scene's first frame
    check_frames(bpy, bpy.data.objects["torus"], frames)


def test_moving_the_splat_object_moves_its_splats(blender, backend, splat_folder):
    """Artists place splats in their shot: the object's transform must apply to every splat."""
    bpy = blender
    folder, frames = splat_folder
    ob = load(bpy, backend, folder)
    bpy.context.scene.frame_set(bpy.context.scene.frame_start)

    def splat_centres():
        depsgraph = bpy.context.evaluated_depsgraph_get()
        return np.array(
            [
                inst.matrix_world.translation[:]
                for inst in depsgraph.object_instances
                if inst.is_instance and inst.parent.name == ob.name
            ]
        )

    before = splat_centres()
    assert np.allclose(np.sort(before, axis=0), np.sort(frames[0].means, axis=0), atol=1e-5)
    ob.location = (3.0, -2.0, 0.5)
    bpy.context.view_layer.update()
    after = splat_centres()
    assert np.allclose(after - before, [3.0, -2.0, 0.5], atol=1e-5)
