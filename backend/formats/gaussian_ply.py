"""3D Gaussian Splatting frames in the standard PLY layout (graphdeco-inria), one file per frame.

One `vertex` element, binary little endian, float32 properties in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3K-1)  opacity  scale_0..2  rot_0..3

- scales are log-scale, opacity is a logit, rot_0..3 is a quaternion w,x,y,z (not normalised);
- f_dc_0..2 are the degree-0 SH coefficients of R, G, B;
- f_rest is channel-major: all K higher-order coefficients of R, then of G, then of B, so
  `f_rest_{c*K + k}` holds coefficient k of channel c, i.e. sh_rest[:, k, c] (K = 3, 8 or 15).

Normals are written as zeros and ignored on read (files without them read fine).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import InputError
from shared.results import check_gaussians

from .paths import files_with_suffix, require_dir, require_file

REQUIRED = (
    ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


@dataclass
class GaussianFrame:
    """One frame of Gaussians; arrays named as in shared/results.py's gaussians.frame.

    means (N,3) f32 positions, scales (N,3) f32 log-scale, rotations (N,4) f32 w,x,y,z,
    opacities (N,) f32 logit, sh_dc (N,3) f32, sh_rest (N,K,3) f32 or None.
    """

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    opacities: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray | None = None
    name: str = ""

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of a gaussians.frame result (sh_rest only when present)."""
        out = {
            "means": self.means,
            "scales": self.scales,
            "rotations": self.rotations,
            "opacities": self.opacities,
            "sh_dc": self.sh_dc,
        }
        if self.sh_rest is not None:
            out["sh_rest"] = self.sh_rest
        return out

    def take(self, indices: np.ndarray) -> GaussianFrame:
        """The Gaussians at `indices` (contiguous copies)."""
        pick = {k: np.ascontiguousarray(v[indices]) for k, v in self.arrays().items()}
        return GaussianFrame(**pick, name=self.name)


def read_gaussian_ply(path: str | Path) -> GaussianFrame:
    """Read one 3DGS PLY file; InputError names missing properties or bad values."""
    from plyfile import PlyData

    path = require_file(Path(path), "Gaussian PLY")
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:
        raise InputError(f"{path.name} is not a readable PLY file: {exc}") from exc
    if "vertex" not in [e.name for e in ply.elements]:
        raise InputError(f"{path.name} has no 'vertex' element; a 3DGS PLY stores one Gaussian per vertex.")
    data = ply["vertex"].data
    names = set(data.dtype.names or ())
    missing = [p for p in REQUIRED if p not in names]
    if missing:
        raise InputError(
            f"{path.name} is missing the 3DGS propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}; "
            "expected the graphdeco-inria layout (x y z f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3)."
        )
    rest_names = [n for n in names if n.startswith("f_rest_")]
    m = len(rest_names)
    if m % 3 or set(rest_names) != {f"f_rest_{i}" for i in range(m)}:
        raise InputError(
            f"{path.name} has {m} f_rest_* properties; expected f_rest_0..f_rest_{{3K-1}} (3 colour channels × K)."
        )

    def cols(props: list[str]) -> np.ndarray:
        return (
            np.stack([np.asarray(data[p], np.float32) for p in props], axis=1)
            if props
            else np.zeros((len(data), 0), np.float32)
        )

    sh_rest = None
    if m:
        k = m // 3
        sh_rest = np.ascontiguousarray(cols([f"f_rest_{i}" for i in range(m)]).reshape(-1, 3, k).transpose(0, 2, 1))
    frame = GaussianFrame(
        means=cols(["x", "y", "z"]),
        scales=cols([f"scale_{i}" for i in range(3)]),
        rotations=cols([f"rot_{i}" for i in range(4)]),
        opacities=np.ascontiguousarray(data["opacity"], dtype=np.float32),
        sh_dc=cols(["f_dc_0", "f_dc_1", "f_dc_2"]),
        sh_rest=sh_rest,
        name=path.stem,
    )
    check_gaussians(frame.arrays(), what=f"Gaussian PLY {path.name}")
    return frame


def write_gaussian_ply(path: str | Path, frame: GaussianFrame) -> Path:
    """Write `frame` in the standard 3DGS PLY layout (binary little endian float32)."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    check_gaussians(
        {k: np.asarray(v, np.float32) for k, v in frame.arrays().items()}, what=f"Gaussian frame {frame.name!r}"
    )
    n = frame.count
    sh_rest = frame.sh_rest if frame.sh_rest is not None else np.zeros((n, 0, 3), np.float32)
    k = sh_rest.shape[1]
    rest_flat = np.asarray(sh_rest, np.float32).transpose(0, 2, 1).reshape(n, 3 * k)  # channel-major
    columns = [
        (["x", "y", "z"], frame.means),
        (["nx", "ny", "nz"], np.zeros((n, 3), np.float32)),
        (["f_dc_0", "f_dc_1", "f_dc_2"], frame.sh_dc),
        ([f"f_rest_{i}" for i in range(3 * k)], rest_flat),
        (["opacity"], np.asarray(frame.opacities).reshape(n, 1)),
        ([f"scale_{i}" for i in range(3)], frame.scales),
        ([f"rot_{i}" for i in range(4)], frame.rotations),
    ]
    dtype = [(name, "<f4") for names, _ in columns for name in names]
    table = np.empty(n, dtype=dtype)
    for names, values in columns:
        values = np.asarray(values, np.float32)
        for i, name in enumerate(names):
            table[name] = values[:, i]
    PlyData([PlyElement.describe(table, "vertex")], text=False, byte_order="<").write(str(path))
    return path


def gaussian_ply_files(folder: str | Path) -> list[Path]:
    """The .ply files of a folder, sorted naturally (frame_2 before frame_10); InputError if none."""
    folder = require_dir(Path(folder), "Gaussian frames folder")
    files = files_with_suffix(folder, ".ply")
    if not files:
        raise InputError(f"Folder {str(folder)!r} has no .ply files; it should hold one 3DGS PLY per frame.")
    return files


def read_gaussian_folder(folder: str | Path) -> Iterator[tuple[Path, GaussianFrame]]:
    """(path, frame) for each .ply of `folder` in natural order, read one at a time.

    The folder is listed (and checked) right away; the files are read as the iterator advances.
    """
    files = gaussian_ply_files(folder)
    return ((p, read_gaussian_ply(p)) for p in files)
