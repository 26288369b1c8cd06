"""`tessera4d motion ...` through the installed script in real processes: train, tokenize, in-between, edit,
generate on a tiny model (conftest.py); each bad input exits 1 with one line saying what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_motion import motion_fixtures

from backend.motion.bvh import read_bvh

TINY_CLIPS = motion_fixtures().TINY_CLIPS
TINY_CONFIG = motion_fixtures().TINY_CONFIG

SCRIPT = Path(sys.executable).parent / "tessera4d"
SHORT = TINY_CLIPS[0].parent / "dataset-1_dash_normal_001.bvh"  # 20 frames: shorter than the 32-frame window
pytestmark = pytest.mark.timeout(120)


def cli(*args) -> subprocess.CompletedProcess:
    # one torch thread: the tiny model runs faster on it, and far faster on busy cores
    env = {"COLUMNS": "400", "PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "HOME": str(Path.home())}
    return subprocess.run(
        [str(SCRIPT), "motion", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def test_train_writes_a_model_and_reports_metrics_and_time(tiny_clips, tmp_path):
    config = json.dumps({k: v for k, v in TINY_CONFIG.items() if not k.endswith("_steps")})
    args = ("--steps", 4, "--config", config, "--labels-from-filenames")
    out = cli("train", "--data", tiny_clips, "--out", tmp_path / "m", *args)
    assert out.returncode == 0, out.stderr
    assert "held-out metrics: mpjpe_mm" in out.stdout and " s → " in out.stdout
    assert f"text labels from file names: {len(TINY_CLIPS)} of {len(TINY_CLIPS)} clips" in out.stdout
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "checkpoint.safetensors").is_file()


def test_tokenize_inbetween_edit_generate(tiny_model, tmp_path):
    clip = TINY_CLIPS[0]
    out = cli("tokenize", tiny_model, clip, "--out", tmp_path / "t.npz")
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "t.npz") as z:
        assert z["tokens"].shape == (62, 5, 3)  # time × parts × residual layers
    out = cli("tokenize", tiny_model, clip, "--out", tmp_path / "tokens")  # np.savez adds .npz: so does the report
    assert out.returncode == 0 and (tmp_path / "tokens.npz").is_file() and "tokens.npz" in out.stdout

    keep = [(0, 9), (40, 59), (237, 246)]
    out = cli("inbetween", tiny_model, clip, "--keep", "0-9,40-59,237-246", "--out", tmp_path / "in.bvh")
    assert out.returncode == 0, out.stderr
    assert "by library match" in out.stdout  # a trained model keeps its training clips to match against
    src, got = read_bvh(clip), read_bvh(tmp_path / "in.bvh")
    assert got.skeleton.names == src.skeleton.names and got.n_frames == src.n_frames
    assert got.channels == src.channels  # the input's channel layout
    np.testing.assert_array_equal(got.skeleton.offsets, src.skeleton.offsets)
    for a, b in keep:  # kept frames to file precision (angles are written with 9 significant digits)
        dots = np.abs((got.rotations[a : b + 1] * src.rotations[a : b + 1]).sum(-1))
        assert dots.min() > 1 - 1e-6
        assert np.array_equal(got.local_translations()[a : b + 1], src.local_translations()[a : b + 1])
    assert not np.allclose(got.rotations[10:40], src.rotations[10:40], atol=1e-3)
    out = cli("inbetween", tiny_model, clip, "--keep", "0-9,40-59,237-246", "--no-mirror", "--out", tmp_path / "n.bvh")
    assert out.returncode == 0, out.stderr
    assert not np.allclose(read_bvh(tmp_path / "n.bvh").rotations[10:40], got.rotations[10:40], atol=1e-3)
    out = cli("inbetween", tiny_model, clip, "--keep", "0-9,40-59", "--method", "tokens", "--out", tmp_path / "t.bvh")
    assert out.returncode == 0, out.stderr
    assert "by token model" in out.stdout
    assert not np.allclose(read_bvh(tmp_path / "t.bvh").rotations[10:40], got.rotations[10:40], atol=1e-3)

    out = cli("edit", tiny_model, clip, "--frames", "20-50", "--parts", "left_arm", "--out", tmp_path / "e.bvh")
    assert out.returncode == 0, out.stderr
    assert read_bvh(tmp_path / "e.bvh").n_frames == src.n_frames

    out = cli("generate", tiny_model, "--frames", 64, "--out", tmp_path / "g.bvh", "--seed", 2, "--text", "walk")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no library's progress bars (the text encoder's "Loading weights")
    gen = read_bvh(tmp_path / "g.bvh")
    assert gen.n_frames == 64 and gen.skeleton.names == src.skeleton.names
    assert gen.channels == src.channels  # written like the training files: channel layout and End Sites
    assert gen.skeleton.end_sites.keys() == src.skeleton.end_sites.keys() and src.skeleton.end_sites
    for j, offset in src.skeleton.end_sites.items():
        np.testing.assert_allclose(gen.skeleton.end_sites[j], offset, rtol=1e-6)


@pytest.fixture(scope="module")
def other_skeleton(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bvh") / "renamed.bvh"
    path.write_text(TINY_CLIPS[0].read_text().replace("Toes_L", "Toe_L"))
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (("inbetween", "{model}", "{other}", "--keep", "0-9", "--out", "{tmp}/o.bvh"), "does not match: joint 17"),
        (("inbetween", "{model}", str(SHORT), "--keep", "0-9", "--out", "{tmp}/o.bvh"), "has 20 frames; this model"),
        (("inbetween", "{model}", str(TINY_CLIPS[0]), "--keep", "0-9,240-300", "--out", "{tmp}/o.bvh"), "outside"),
        (("inbetween", "{model}", str(TINY_CLIPS[0]), "--keep", "0-9,5-20", "--out", "{tmp}/o.bvh"), "overlap"),
        (
            ("inbetween", "{model}", str(TINY_CLIPS[0]), "--keep", "0-9", "--method", "x", "--out", "{tmp}/o.bvh"),
            "Unknown in-betweening method 'x'",
        ),
        (
            ("edit", "{model}", str(TINY_CLIPS[0]), "--frames", "2-40", "--parts", "tail", "--out", "{tmp}/o.bvh"),
            "Unknown body part 'tail'; this skeleton has: torso, left_leg, right_leg, left_arm, right_arm",
        ),
        (("generate", "{tmp}/no-model", "--frames", "64", "--out", "{tmp}/o.bvh"), "does not exist"),
        (("inbetween", "{model}", "{slow}", "--keep", "0-9", "--out", "{tmp}/o.bvh"), "Resample the clip to 30 fps"),
        (("inbetween", "{model}", "{fast}", "--keep", "0-9", "--out", "{tmp}/o.bvh"), "The clip runs at 120 fps;"),
        (("inbetween", "{model}", "{tmp}", "--keep", "0-9", "--out", "{tmp}/o.bvh"), "is a folder; give one BVH file"),
        (("inbetween", "{model}", str(TINY_CLIPS[0]), "--keep", "0-9", "--out", "{tmp}"), "is a folder: give a file"),
        (("edit", "{model}", str(TINY_CLIPS[0]), "--frames", "2-40", "--parts", "x", "--out", "{tmp}"), "is a folder"),
        (("generate", "{model}", "--frames", "64", "--out", "{tmp}"), "is a folder: give a file name"),
        (
            ("inbetween", str(TINY_CLIPS[0]), str(TINY_CLIPS[0]), "--keep", "0-9", "--out", "{tmp}/o.bvh"),
            "is a file; a motion model is a folder",
        ),
        (("train", "--data", "{clips}", "--out", "{afile}", "--steps", "9"), "is a file, not a folder"),
        (("train", "--data", str(TINY_CLIPS[0]), "--out", "{tmp}/m", "--steps", "9"), "--data takes a folder"),
        (
            ("train", "--data", "{clips}", "--out", "{tmp}/m", "--config", '{{"window": 0}}'),
            "'window' must be at least",
        ),
        (("train", "--data", "{clips}", "--out", "{tmp}/m", "--config", '{{"lr": "fast"}}'), "'lr' must be a number"),
        (
            ("train", "--data", "{clips}", "--out", "{tmp}/m", "--steps", "9", "--config", "{{{heads}}}"),
            "does not make a model: embed_dim must be divisible by num_heads",
        ),
    ],
)
def test_bad_input_exits_1_with_one_line(tiny_model, tiny_clips, other_skeleton, tmp_path, args, message):
    (tmp_path / "afile").write_text("not a folder")
    slow = tmp_path / "slow.bvh"
    slow.write_text(TINY_CLIPS[0].read_text().replace("Frame Time:\t0.0333333", "Frame Time: 0.0416667"))
    fast = tmp_path / "fast.bvh"
    fast.write_text(TINY_CLIPS[0].read_text().replace("Frame Time:\t0.0333333", "Frame Time: 0.008333"))
    fill = {"model": tiny_model, "other": other_skeleton, "tmp": tmp_path, "clips": tiny_clips, "slow": slow}
    fill["fast"] = fast
    fill["afile"], fill["heads"] = tmp_path / "afile", '"transformer": {"n_heads": 3}'
    out = cli(*(a.format(**fill) for a in args))
    assert out.returncode == 1, (out.stdout, out.stderr)
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("error:") and message in line, line
    assert "Traceback" not in out.stderr and not (tmp_path / "o.bvh").exists()
    assert not (tmp_path / "m").exists()  # a failed training run leaves no (empty) model folder


def test_a_byte_order_mark_and_a_rounded_frame_time_are_read(tiny_model, tmp_path):
    """Some exporters write a UTF-8 BOM, and Frame Time 0.033 for 30 fps (30.3 fps, within 2 %)."""
    clip = tmp_path / "exported.bvh"
    text = TINY_CLIPS[0].read_text().replace("Frame Time:\t0.0333333", "Frame Time: 0.033")
    clip.write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = cli("inbetween", tiny_model, clip, "--keep", "0-9,40-59", "--out", tmp_path / "o.bvh")
    assert out.returncode == 0, out.stderr
    assert read_bvh(tmp_path / "o.bvh").n_frames == read_bvh(TINY_CLIPS[0]).n_frames
