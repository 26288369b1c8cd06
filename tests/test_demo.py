"""`tessera4d demo`, the README's main job, through its documented CLI. The motion step runs with a tiny model
trained here (the demo's own quick model takes minutes) and the 4D step with a few fit steps: plumbing, not
quality."""

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.demo import SHARED_HORSE, SHARED_MOTION, keep_frames

pytestmark = pytest.mark.timeout(600)
HELD_OUT = "dataset-1_walk-left_old_001.bvh"  # 156 frames; the split holds it out of the tiny model's five clips


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def tiny_motion_model(base: Path) -> Path:
    """tests/backend/motion/conftest.py's tiny model, trained on its four clips and one more that the split holds
    out (the demo in-betweens a held-out clip of at least 150 frames)."""
    spec = importlib.util.spec_from_file_location(
        "motion_test_fixtures", Path(__file__).resolve().parent / "backend" / "motion" / "conftest.py"
    )
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    from backend.motion.dataset import load_library
    from backend.motion.train import TrainConfig, train

    clips = base / "clips"
    clips.mkdir()
    for clip in [*fixtures.TINY_CLIPS, SHARED_MOTION / HELD_OUT]:
        shutil.copy(clip, clips / clip.name)
    with fixtures.one_thread():
        report = train(load_library(clips), base / "model", TrainConfig(**fixtures.TINY_CONFIG))
    assert report.held_out_clips == 1
    return base / "model"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    model = tiny_motion_model(tmp_path_factory.mktemp("motion"))
    cli = Path(sys.executable).with_name("tessera4d")
    cmd = [str(cli), "demo", "--out", str(out), "--frames", "3", "--motion-model", str(model)]
    env = dict(os.environ, COLUMNS="400")  # rich wraps at 80 columns without a terminal
    proc = subprocess.run([*cmd, "--fit4d-iterations", "20"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Demo done" in proc.stdout
    assert f"in-betweened held-out clip '{HELD_OUT[:-4]}'" in proc.stdout
    assert "4D fit of 'horse-gallop'" in proc.stdout
    return out


FCURVES = """
def fcurves(action):
    return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags for fc in bag.fcurves]

def keyed(action):
    return sorted({int(round(k.co[0])) for fc in fcurves(action) for k in fc.keyframe_points})
"""


def reopen(demo_out: Path, tmp_path: Path, body: str) -> dict:
    """Run `body` in a fresh Blender (no backend) with demo.blend open and FCURVES defined; it prints INFO <json>."""
    script = f"import bpy, json, numpy as np\nbpy.ops.wm.open_mainfile(filepath={str(demo_out / 'demo.blend')!r})\n"
    script += FCURVES
    env = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(body)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line[5:] for line in proc.stdout.splitlines() if line.startswith("INFO ")))


def test_demo_saves_blend_and_contact_sheet(demo_out):
    assert (demo_out / "demo.blend").stat().st_size > 100_000
    assert png_size(demo_out / "contact_sheet.png") == (3 * 480, 320)
    # a uniform image compresses to almost nothing; three rendered frames do not
    assert (demo_out / "contact_sheet.png").stat().st_size > 50_000
    assert len(list((demo_out / "frames").glob("*.png"))) == 3


def test_demo_blend_plays_the_horse_with_the_backend_off(demo_out, tmp_path):
    """Reopen demo.blend in a fresh Blender (no backend running) and compare vertices to the npz."""
    script = textwrap.dedent(
        f"""
        import bpy, numpy as np
        bpy.ops.wm.open_mainfile(filepath={str(demo_out / "demo.blend")!r})
        ob = bpy.data.objects["horse-gallop"]
        scene = bpy.context.scene
        out = []
        for t in (0, 17, 47):
            scene.frame_set(scene.frame_start + t)
            me = ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
            co = np.empty(len(me.vertices) * 3, np.float32)
            me.vertices.foreach_get("co", co)
            out.append(co.reshape(-1, 3))
        np.save({str(tmp_path / "co.npy")!r}, np.stack(out))
        print("frames", scene.frame_start, scene.frame_end)
        """
    )
    env = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frames 1 48" in proc.stdout
    got = np.load(tmp_path / "co.npy")
    frames = np.load(SHARED_HORSE)["frames"][[0, 17, 47]]
    y_up_to_z_up = np.stack([frames[..., 0], -frames[..., 2], frames[..., 1]], axis=-1)
    np.testing.assert_array_equal(got, y_up_to_z_up)


def test_demo_blend_holds_the_rigged_horse(demo_out, tmp_path):
    """The rig step: an armature with a bone hierarchy and an action; the rigged copy, played back in a fresh
    Blender with no backend, matches the horse within the E_RMS the solver reported."""
    script = textwrap.dedent(
        f"""
        import bpy, json, numpy as np
        bpy.ops.wm.open_mainfile(filepath={str(demo_out / "demo.blend")!r})
        rigged = bpy.data.objects["horse-gallop Rigged"]
        arm = rigged.parent
        scene = bpy.context.scene
        out = []
        for t in range(48):
            scene.frame_set(scene.frame_start + t)
            me = rigged.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
            co = np.empty(len(me.vertices) * 3, np.float32)
            me.vertices.foreach_get("co", co)
            out.append(co.reshape(-1, 3))
        np.save({str(tmp_path / "rigged.npy")!r}, np.stack(out))
        info = {{
            "bones": len(arm.data.bones),
            "roots": sum(b.parent is None for b in arm.data.bones),
            "e_rms": float(arm["tessera_e_rms"]),
            "action": arm.animation_data.action is not None,
            "parent": rigged.parent == arm,
            "modifier": rigged.modifiers[0].type,
        }}
        print("INFO", json.dumps(info))
        """
    )
    env = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    info = json.loads(next(line[5:] for line in proc.stdout.splitlines() if line.startswith("INFO ")))
    assert info["bones"] == 20 and info["roots"] == 1  # skeleton mode: one tree
    assert info["action"] and info["parent"] and info["modifier"] == "ARMATURE"
    played = np.load(tmp_path / "rigged.npy").astype(np.float64)
    horse = np.load(SHARED_HORSE)
    frames = horse["frames"]
    truth = np.stack([frames[..., 0], -frames[..., 2], frames[..., 1]], axis=-1)  # Y-up → Z-up, as loaded
    diag = float(np.linalg.norm(horse["rest"].max(0) - horse["rest"].min(0)))
    e_rms = 1000 * float(np.sqrt(np.mean((played - truth) ** 2))) * 2 / diag
    assert e_rms <= 1.05 * info["e_rms"] + 1e-3, (e_rms, info["e_rms"])
    assert info["e_rms"] < 5.0  # the 20-bone skeleton bound the benchmark reaches on horse-gallop (3.6)


def test_demo_blend_holds_the_inbetweened_clip(demo_out, tmp_path):
    """The motion step: the held-out clip's armature plays the in-betweened take, keyed on the generated frames
    too; the user's keys, thinned out to the kept frames, stay in the original action."""
    info = reopen(
        demo_out,
        tmp_path,
        f"""
        arm = bpy.data.objects[{HELD_OUT[:-4]!r}]
        take = arm.animation_data.action
        user = bpy.data.actions[arm["tessera_previous_action"]]
        scene = bpy.context.scene
        poses = []
        for f in (1, 25, 60):
            scene.frame_set(f)
            evaluated = arm.evaluated_get(bpy.context.evaluated_depsgraph_get())
            poses.append([list(pb.matrix.translation) for pb in evaluated.pose.bones])
        print("INFO", json.dumps({{
            "take": take.name, "user": user.name, "fake_user": user.use_fake_user,
            "take_frames": keyed(take), "user_frames": keyed(user), "poses": poses,
        }}))
        """,
    )
    n = 156
    kept = keep_frames(n)
    generated = sorted(set(range(n)) - set(kept))
    assert len(generated) >= 3 * 30  # three long gaps
    assert info["take"].endswith("inbetween take 1") and info["take"] != info["user"] and info["fake_user"]
    assert info["user_frames"] == [1 + k for k in kept]  # the BVH import starts at frame 1
    assert set(1 + g for g in generated) <= set(info["take_frames"])
    poses = np.array(info["poses"])
    assert np.isfinite(poses).all() and np.abs(poses[2] - poses[1]).max() > 0  # in a gap, and moving


def test_demo_blend_holds_the_4d_fit(demo_out, tmp_path):
    """The 4D step: the fit's splat frames (one per scene frame) and its animated mesh, played back with no
    backend from the files next to demo.blend."""
    info = reopen(
        demo_out,
        tmp_path,
        """
        from pathlib import Path
        splats = bpy.data.objects["horse-gallop 4D"]
        frames = bpy.data.collections["horse-gallop 4D frames"].objects
        mesh = bpy.data.objects["horse-gallop 4D mesh"]
        cache = mesh.modifiers["Tessera Mesh Cache"]
        scene = bpy.context.scene
        co = []
        for f in (scene.frame_start, scene.frame_end):
            scene.frame_set(f)
            me = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
            co.append([list(v.co) for v in me.vertices])
        plys = Path(bpy.path.abspath(splats["tessera_ply_folder"])).glob("*.ply")
        print("INFO", json.dumps({
            "modifier": splats.modifiers["Tessera Splats"].type,
            "frames": len(frames),
            "counts": sorted({len(f.data.vertices) for f in frames}),
            "plys": len(list(plys)),
            "cache": cache.type, "cache_file": Path(bpy.path.abspath(cache.filepath)).is_file(),
            "co": co,
        }))
        """,
    )
    assert info["modifier"] == "NODES" and info["frames"] == info["plys"] == 48
    assert len(info["counts"]) == 1 and info["counts"][0] > 0  # the same Gaussians in every frame
    assert info["cache"] == "MESH_CACHE" and info["cache_file"]
    co = np.array(info["co"])
    assert co.shape[1] > 0 and np.isfinite(co).all() and np.abs(co[1] - co[0]).max() > 0  # it moves
