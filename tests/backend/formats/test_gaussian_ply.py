"""3DGS PLY read/write: round trips, the channel-major f_rest layout, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from backend.formats.gaussian_ply import (
    GaussianFrame,
    gaussian_ply_files,
    read_gaussian_folder,
    read_gaussian_ply,
    write_gaussian_ply,
)
from backend.samples import gaussian_sample_sequence
from shared.errors import InputError
from shared.results import check_gaussians


def _hand_built_ply(path: Path, props: list[str], table: np.ndarray, fmt: str = "binary_little_endian") -> Path:
    """A PLY written byte by byte (no plyfile): one float vertex property per name, rows of `table`."""
    header = [f"ply\nformat {fmt} 1.0\nelement vertex {table.shape[0]}\n"]
    header += [f"property float {p}\n" for p in props]
    header += ["end_header\n"]
    body = (
        np.asarray(table, "<f4").tobytes()
        if fmt.startswith("binary")
        else "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in table).encode()
    )
    path.write_bytes("".join(header).encode() + body)
    return path


def _standard_props(k: int, normals: bool = True) -> list[str]:
    return (
        ["x", "y", "z"]
        + (["nx", "ny", "nz"] if normals else [])
        + ["f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(3 * k)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def test_round_trip_with_sh_rest_k15(tmp_path: Path) -> None:
    frame = gaussian_sample_sequence(frames=1, n=500, sh_degree=3)[0]
    assert frame.sh_rest is not None and frame.sh_rest.shape == (500, 15, 3)
    back = read_gaussian_ply(write_gaussian_ply(tmp_path / "f.ply", frame))
    for name, arr in frame.arrays().items():
        assert np.array_equal(back.arrays()[name], arr), name
    assert check_gaussians(back.arrays()) == 500


def test_written_file_has_the_standard_layout(tmp_path: Path) -> None:
    frame = gaussian_sample_sequence(frames=1, n=10, sh_degree=1)[0]
    ply = PlyData.read(str(write_gaussian_ply(tmp_path / "f.ply", frame)))
    assert ply.text is False and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == _standard_props(3)
    assert all(vertex.data.dtype[p.name] == np.dtype("<f4") for p in vertex.properties)
    # channel-major: f_rest_{c*K + k} is coefficient k of channel c
    assert np.array_equal(vertex["f_rest_4"], frame.sh_rest[:, 1, 1])
    assert np.array_equal(vertex["f_rest_6"], frame.sh_rest[:, 0, 2])


@pytest.mark.parametrize("k", [3, 15])
def test_channel_major_layout_against_hand_built_file(tmp_path: Path, k: int) -> None:
    n = 4
    props = _standard_props(k)
    table = np.zeros((n, len(props)), np.float32)
    col = {p: i for i, p in enumerate(props)}
    for c in range(3):
        for kk in range(k):
            table[:, col[f"f_rest_{c * k + kk}"]] = 100 * c + kk + np.arange(n) / 10  # value encodes (c, k, row)
    table[:, col["rot_0"]] = 1.0
    table[:, col["x"]] = np.arange(n)
    frame = read_gaussian_ply(_hand_built_ply(tmp_path / "h.ply", props, table))
    assert frame.sh_rest is not None and frame.sh_rest.shape == (n, k, 3)
    rows, ks, cs = np.meshgrid(np.arange(n), np.arange(k), np.arange(3), indexing="ij")
    np.testing.assert_allclose(frame.sh_rest, 100 * cs + ks + rows / 10, rtol=1e-6)
    assert np.array_equal(frame.means[:, 0], np.arange(n, dtype=np.float32))
    # and writing it again gives the same bytes per property
    again = PlyData.read(str(write_gaussian_ply(tmp_path / "w.ply", frame)))["vertex"]
    for p in props:
        assert np.array_equal(again[p], table[:, col[p]]), p


def test_missing_normals_and_no_sh_rest_read_fine(tmp_path: Path) -> None:
    props = _standard_props(0, normals=False)
    table = np.arange(3 * len(props), dtype=np.float32).reshape(3, len(props)) / 7
    frame = read_gaussian_ply(_hand_built_ply(tmp_path / "a.ply", props, table, fmt="ascii"))
    assert frame.sh_rest is None and frame.count == 3
    np.testing.assert_allclose(frame.opacities, table[:, props.index("opacity")], rtol=1e-6)
    np.testing.assert_allclose(frame.rotations, table[:, props.index("rot_0") :], rtol=1e-6)
    np.testing.assert_allclose(frame.scales, table[:, props.index("scale_0") : props.index("rot_0")], rtol=1e-6)


def test_missing_properties_are_named(tmp_path: Path) -> None:
    props = [p for p in _standard_props(0) if p not in ("opacity", "rot_3")]
    path = _hand_built_ply(tmp_path / "m.ply", props, np.zeros((2, len(props)), np.float32))
    with pytest.raises(InputError, match=r"m\.ply is missing the 3DGS properties opacity, rot_3"):
        read_gaussian_ply(path)


def test_bad_f_rest_count_and_non_finite(tmp_path: Path) -> None:
    props = _standard_props(0) + ["f_rest_0", "f_rest_1"]
    path = _hand_built_ply(tmp_path / "r.ply", props, np.zeros((2, len(props)), np.float32))
    with pytest.raises(InputError, match=r"has 2 f_rest_\* properties"):
        read_gaussian_ply(path)
    props = _standard_props(0)
    table = np.zeros((3, len(props)), np.float32)
    table[2, props.index("scale_1")] = np.inf
    with pytest.raises(InputError, match=r"n\.ply.*'scales' has a NaN or infinite value at index \[2, 1\]"):
        read_gaussian_ply(_hand_built_ply(tmp_path / "n.ply", props, table))


def test_not_a_ply_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.ply").write_text("hello")
    with pytest.raises(InputError, match=r"x\.ply is not a readable PLY file"):
        read_gaussian_ply(tmp_path / "x.ply")
    with pytest.raises(InputError, match=r"Gaussian PLY '.*gone\.ply' does not exist"):
        read_gaussian_ply(tmp_path / "gone.ply")


def test_folder_sorted_naturally(tmp_path: Path) -> None:
    frames = gaussian_sample_sequence(frames=11, n=20)
    for i, f in enumerate(frames):
        write_gaussian_ply(tmp_path / f"frame_{i + 1}.ply", f)
    (tmp_path / "readme.txt").write_text("not a frame")
    assert [p.name for p in gaussian_ply_files(tmp_path)][:3] == ["frame_1.ply", "frame_2.ply", "frame_3.ply"]
    read = list(read_gaussian_folder(tmp_path))
    assert [p.name for p, _ in read][-2:] == ["frame_10.ply", "frame_11.ply"]
    for (_, got), want in zip(read, frames, strict=True):
        assert np.array_equal(got.means, want.means)


def test_folder_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"has no \.ply files"):
        read_gaussian_folder(tmp_path)
    with pytest.raises(InputError, match=r"Gaussian frames folder '.*nowhere' does not exist"):
        read_gaussian_folder(tmp_path / "nowhere")


def test_sample_sequence_is_deterministic_and_valid() -> None:
    a, b = gaussian_sample_sequence(frames=3, n=50), gaussian_sample_sequence(frames=3, n=50)
    assert all(np.array_equal(x.means, y.means) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].means, a[1].means)
    for f in a:
        assert isinstance(f, GaussianFrame) and check_gaussians(f.arrays()) == 50
