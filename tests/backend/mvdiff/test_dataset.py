"""`dataset render` with real Blender (bpy in subprocesses) on tiny assets, and the training-data reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.mvdiff.cameras import mvdream_cameras, to_world_cameras
from backend.mvdiff.dataset import caption_from_name, find_clips, load_clip, render_assets
from shared.errors import InputError

pytest.importorskip("bpy")

MAKE_ASSETS = """
import sys
from pathlib import Path
import bpy
out = Path(sys.argv[1])
def fresh():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 12
bpy.ops.wm.read_factory_settings(use_empty=True)
fresh()
bpy.ops.mesh.primitive_cube_add(size=1.0)
cube = bpy.context.active_object
for frame, x in ((1, -0.6), (12, 0.6)):  # slides along +X
    cube.location = (x, 0.0, 0.0)
    cube.keyframe_insert("location", frame=frame)
bpy.ops.wm.save_as_mainfile(filepath=str(out / "moving_cube.blend"))
bpy.ops.export_scene.gltf(filepath=str(out / "moving_cube.glb"), export_format="GLB")
fresh()
bpy.ops.mesh.primitive_cube_add(size=1.0)
bpy.ops.wm.save_as_mainfile(filepath=str(out / "static_cube.blend"))
fresh()
bpy.ops.object.empty_add()
bpy.ops.wm.save_as_mainfile(filepath=str(out / "empty_scene.blend"))
(out / "broken.glb").write_bytes(b"not a gltf file")
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    assets = root / "assets"
    assets.mkdir()
    home = root / "blender-home"
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
    subprocess.run([sys.executable, "-c", MAKE_ASSETS, str(assets)], check=True, env=env, capture_output=True)
    names = ["moving_cube.blend", "static_cube.blend", "empty_scene.blend", "broken.glb", "moving_cube.glb"]
    steps = []
    temp = root / "temp"  # render_assets' own temporary folder goes here, to check it is removed
    temp.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(temp)
    try:
        summary = render_assets(
            [assets / n for n in names],
            root / "data",
            views=4,
            frames=3,
            size=32,
            elevation=15.0,
            progress=lambda stage, fraction, message: steps.append(fraction),
        )
    finally:
        tempfile.tempdir = saved
    return root, summary, steps


def test_animated_assets_render_and_bad_ones_are_named(rendered):
    root, summary, steps = rendered
    assert [p.name for p in summary.rendered] == ["moving_cube", "moving_cube_2"]  # .blend and .glb, same stem
    failed = {Path(k).name: v for k, v in summary.failed.items()}
    assert set(failed) == {"static_cube.blend", "empty_scene.blend", "broken.glb"}
    assert "no animation" in failed["static_cube.blend"] and "static_cube.blend" in failed["static_cube.blend"]
    assert "no geometry" in failed["empty_scene.blend"]
    assert "cannot read" in failed["broken.glb"] and "broken.glb" in failed["broken.glb"]
    assert steps[-1] == 1.0 and steps == sorted(steps)
    assert list((root / "temp").iterdir()) == []  # Blender's HOME for the renders is removed afterwards


def test_layout_cameras_and_alpha(rendered):
    root, summary, _ = rendered
    folder = summary.rendered[0]
    meta = json.loads((folder / "transforms.json").read_text())
    assert meta["num_views"] == 4 and meta["num_frames"] == 3 and meta["w"] == meta["h"] == 32
    assert len(meta["frames"]) == 12
    assert [e["time"] for e in meta["frames"][:3]] == pytest.approx([0.0, 0.5, 1.0])
    # The ring is the model's own cameras placed around the animation's bounds.
    expected = to_world_cameras(mvdream_cameras(4, 15.0), meta["center"], meta["distance"])
    for e in meta["frames"]:
        np.testing.assert_allclose(e["transform_matrix"], expected[e["view"]], atol=1e-5)
    # The cube slides from x = -0.6 to 0.6 (size 1): the bounds' centre is the origin.
    np.testing.assert_allclose(meta["center"], [0.0, 0.0, 0.0], atol=1e-5)
    rgba = np.asarray(Image.open(folder / meta["frames"][0]["file_path"]))
    assert rgba.shape == (32, 32, 4)
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).any()  # transparent film, opaque object


def test_clip_reader_normalises_cameras_and_sees_the_motion(rendered):
    root, summary, _ = rendered
    assert find_clips(root / "data") == summary.rendered
    clip = load_clip(summary.rendered[0])
    assert clip.images.shape == (4, 3, 32, 32, 3) and clip.alphas.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(clip.cameras, mvdream_cameras(4, 15.0), atol=1e-5)
    assert clip.prompt == "moving cube"
    assert clip.images.max() <= 1.0 and (clip.images[clip.alphas == 0] == 1.0).all()  # white background
    # The cube slides along +X: in the view whose image x axis is closest to world X it moves sideways, by
    # the sign of that axis.
    v = int(np.argmax(np.abs(clip.cameras[:, 0, 0])))
    sign = np.sign(clip.cameras[v, 0, 0])
    cols = np.arange(32)
    centroid = [sign * (clip.alphas[v, f] * cols).sum() / clip.alphas[v, f].sum() for f in range(3)]
    assert centroid[0] + 2 < centroid[1] < centroid[2] - 2


def test_reader_errors_name_the_problem(rendered, tmp_path):
    root, summary, _ = rendered
    with pytest.raises(InputError, match="no clip folders"):
        find_clips(tmp_path)
    broken = tmp_path / "clip"
    broken.mkdir()
    meta = json.loads((summary.rendered[0] / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:-1]
    (broken / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no image for view 3, frame 2"):
        load_clip(broken)


def test_bad_settings_fail_before_blender(tmp_path):
    with pytest.raises(InputError, match="multiple of 8"):
        render_assets([tmp_path / "a.blend"], tmp_path / "out", size=30)
    with pytest.raises(InputError, match="2 frames"):
        render_assets([tmp_path / "a.blend"], tmp_path / "out", frames=1)


def test_caption_from_file_name():
    assert caption_from_name(Path("Horse_Gallop-02.glb")) == "horse gallop"


def test_cli_render_lists_failures(rendered, tmp_path):
    from typer.testing import CliRunner

    from backend.cli import app

    root, _, _ = rendered
    args = ["dataset", "render", root / "assets" / "moving_cube.glb", root / "assets" / "broken.glb"]
    args += ["--out", tmp_path / "data", "--frames", 2, "--size", 16]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "1 of 2 assets rendered" in result.output and "broken.glb: Blender cannot read it" in result.output
    assert (tmp_path / "data" / "moving_cube" / "transforms.json").is_file()
