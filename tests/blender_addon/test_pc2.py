"""The append-only PC2 writer (pure: no Blender)."""

import struct

import numpy as np
import pytest
from blender_rig import import_without_blender

pc2 = import_without_blender("appliers.pc2")


def test_header_matches_pc2_layout(tmp_path):
    path = tmp_path / "a.pc2"
    pc2.create(path, 7, start_frame=1.0)
    raw = path.read_bytes()
    assert len(raw) == 32
    assert struct.unpack("<12siiffi", raw) == (b"POINTCACHE2\0", 1, 7, 1.0, 1.0, 0)


def test_appended_frames_read_back_exactly_and_count_follows(tmp_path):
    path = tmp_path / "a.pc2"
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(5, 7, 3)).astype(np.float32)
    pc2.create(path, 7)
    assert pc2.append(path, frames[:2]) == 2
    assert pc2.append(path, frames[2]) == 3  # a single (V, 3) frame
    assert pc2.append(path, frames[3:]) == 5
    assert pc2.read_header(path) == (7, 0.0, 5)
    assert np.array_equal(pc2.read(path), frames)
    assert path.stat().st_size == 32 + 5 * 7 * 12


def test_uncounted_bytes_are_overwritten_not_kept(tmp_path):
    """A crash between writing a frame and counting it leaves junk the next append replaces."""
    path = tmp_path / "a.pc2"
    frames = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    pc2.create(path, 4)
    pc2.append(path, frames[:1])
    with open(path, "ab") as fh:
        fh.write(b"\xff" * 20)  # half a frame, never counted
    pc2.append(path, frames[1:])
    assert np.array_equal(pc2.read(path), frames)


def test_wrong_vertex_count_is_refused_and_file_untouched(tmp_path):
    path = tmp_path / "a.pc2"
    pc2.create(path, 4)
    pc2.append(path, np.zeros((1, 4, 3), np.float32))
    before = path.read_bytes()
    with pytest.raises(pc2.PC2Error, match="4 points"):
        pc2.append(path, np.zeros((1, 5, 3), np.float32))
    assert path.read_bytes() == before


def test_not_a_pc2_file(tmp_path):
    path = tmp_path / "b.pc2"
    path.write_bytes(b"x" * 40)
    with pytest.raises(pc2.PC2Error, match="not a PC2 file"):
        pc2.read_header(path)
