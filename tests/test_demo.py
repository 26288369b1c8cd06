"""`tessera4d demo`, the README's main job, through its documented CLI."""

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.demo import SHARED_HORSE

pytestmark = pytest.mark.timeout(600)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cli = Path(sys.executable).with_name("tessera4d")
    proc = subprocess.run([str(cli), "demo", "--out", str(out), "--frames", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Demo done" in proc.stdout
    return out


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
        arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
        rigged = bpy.data.objects["horse-gallop Rigged"]
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
