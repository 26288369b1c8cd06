"""BVH reading and writing: layouts kept, round trips exact to file precision, clear errors."""

import numpy as np
import pytest
from synthetic_motion import REAL_CLIPS

from backend.motion.bvh import read_bvh, write_bvh
from shared.errors import InputError

SYNTHETIC = """HIERARCHY
ROOT pelvis
{
  OFFSET 1 2 3
  CHANNELS 6 Zposition Xposition Yposition Yrotation Xrotation Zrotation
  JOINT spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT head
    {
      OFFSET 0 12.5 0
      CHANNELS 3 Yrotation Zrotation Xrotation
      End Site
      {
        OFFSET 0 3 0
      }
    }
  }
  JOINT tail
  {
    OFFSET 0 -2 -4
    CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 0 -5
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.04
1.5 2.5 3.5 10 20 30 -40 50 60 70 80 -10 0 -2 -4 1 2 3
1.6 2.6 3.6 11 21 31 -41 51 61 71 81 -11 0 -2.5 -4 2 3 4
1.7 2.7 3.7 12 22 32 -42 52 62 72 82 -12 0.25 -2 -4 3 4 5
"""


def motion_values(path):
    return np.array(path.read_text().split("MOTION")[1].split()[5:], dtype=np.float64)


def same_rotations(a, b, atol):
    return np.allclose(np.abs(np.sum(a.rotations * b.rotations, axis=-1)), 1.0, atol=atol)


def test_reads_layout_orders_positions_and_end_sites(tmp_path):
    path = tmp_path / "odd.bvh"
    path.write_text(SYNTHETIC)
    motion = read_bvh(path)
    sk = motion.skeleton
    assert sk.names == ("pelvis", "spine", "head", "tail") and list(sk.parents) == [-1, 0, 1, 0]
    assert motion.fps == pytest.approx(25.0) and motion.n_frames == 3
    assert np.allclose(motion.root_positions[0], [2.5, 3.5, 1.5])  # Zposition first in the file
    assert np.allclose(motion.translations[2, 3], [0.25, -2, -4])
    assert np.allclose(sk.end_sites[2], [0, 3, 0]) and np.allclose(sk.end_sites[3], [0, 0, -5])
    assert motion.channels[2] == ("Yrotation", "Zrotation", "Xrotation")


def test_synthetic_round_trip_keeps_layout_and_values(tmp_path):
    src = tmp_path / "odd.bvh"
    src.write_text(SYNTHETIC)
    first = read_bvh(src)
    out = tmp_path / "out.bvh"
    write_bvh(out, first)
    second = read_bvh(out)
    assert second.channels == first.channels and second.skeleton.end_sites.keys() == {2, 3}
    assert same_rotations(first, second, 1e-6)
    assert np.array_equal(first.local_translations(), second.local_translations())
    assert np.allclose(motion_values(out), motion_values(src), atol=2e-4)


def test_rotation_order_override_keeps_the_motion(tmp_path):
    src = tmp_path / "odd.bvh"
    src.write_text(SYNTHETIC)
    first = read_bvh(src)
    write_bvh(tmp_path / "xyz.bvh", first, rotation_order="XYZ")
    second = read_bvh(tmp_path / "xyz.bvh")
    assert all(c[-3:] == ("Xrotation", "Yrotation", "Zrotation") for c in second.channels)
    assert same_rotations(first, second, 1e-6)
    assert np.allclose(second.global_positions(), first.global_positions(), atol=1e-4)


@pytest.mark.parametrize("clip", REAL_CLIPS, ids=lambda p: p.stem)
def test_real_clip_round_trip_to_file_precision(tmp_path, clip):
    first = read_bvh(clip)
    out = tmp_path / clip.name
    write_bvh(out, first)
    second = read_bvh(out)
    assert same_rotations(first, second, 1e-6)
    assert np.array_equal(first.local_translations(), second.local_translations())
    original, written = motion_values(clip), motion_values(out)
    # six significant digits in the file; angles pass through float32 quaternions (≈ 1e-5 degrees)
    assert np.allclose(written, original, rtol=1e-6, atol=2e-4)
    assert out.read_text().split("MOTION")[0].split() == clip.read_text().split("MOTION")[0].split()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("HIERARCHY", "HIERARCHIE"), "no HIERARCHY"),
        (lambda t: t.split("MOTION")[0], "no MOTION"),
        (lambda t: t.replace("1.6 2.6 3.6 11", "1.6 2.6 11"), "line 34: 17 values, the hierarchy has 18"),
        (lambda t: t.replace("-41 51", "-41 abc"), "line 34: 'abc' is not a number"),
        (lambda t: t.replace("-42 52", "-42 nan"), "line 35: non-finite"),
        (lambda t: t.replace("Frames: 3", "Frames: 0"), "zero frames"),
        (lambda t: t.replace("Frames: 3", "Frames: 4"), "header says 4 frames"),
        (lambda t: t.replace("OFFSET 0 10 0", "OFFSET 0 x 0"), "line 8: expected 3 numbers"),
    ],
)
def test_malformed_files_raise_input_error_with_file_and_line(tmp_path, edit, message):
    path = tmp_path / "bad.bvh"
    path.write_text(edit(SYNTHETIC))
    with pytest.raises(InputError, match=message) as err:
        read_bvh(path)
    assert "bad.bvh" in str(err.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="Cannot read"):
        read_bvh(tmp_path / "nope.bvh")


def test_channel_names_in_any_case_are_read_and_written_in_the_usual_spelling(tmp_path):
    usual, shouting = tmp_path / "usual.bvh", tmp_path / "shouting.bvh"
    usual.write_text(SYNTHETIC)
    shouting.write_text(SYNTHETIC.replace("Xrotation", "xrotation").replace("Zposition", "ZPOSITION"))
    a, b = read_bvh(usual), read_bvh(shouting)
    assert a.channels == b.channels and np.array_equal(a.rotations, b.rotations)
    write_bvh(tmp_path / "out.bvh", b)
    assert "xrotation" not in (tmp_path / "out.bvh").read_text() and "Xrotation" in (tmp_path / "out.bvh").read_text()
    with pytest.raises(InputError, match="bad CHANNELS"):
        (tmp_path / "bad.bvh").write_text(SYNTHETIC.replace("Xrotation", "Xrot"))
        read_bvh(tmp_path / "bad.bvh")
