"""Write one frame of Gaussians as a standard 3DGS PLY (graphdeco-inria layout), numpy only.

The extension does not bundle plyfile, and the layout is fixed, so a structured numpy
array written after a text header is all it takes. Property order:
x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3, float32, binary
little endian. f_rest is channel-major: f_rest_{c*K + k} = sh_rest[:, k, c].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_splat_ply(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write a gaussians.frame's arrays (means, scales, rotations, opacities, sh_dc, sh_rest?)."""
    means = arrays["means"]
    n = means.shape[0]
    sh_rest = arrays.get("sh_rest")
    k = 0 if sh_rest is None else sh_rest.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    table = np.zeros((n, len(names)), dtype="<f4")
    table[:, 0:3] = means
    table[:, 6:9] = arrays["sh_dc"]
    col = 9
    if k:
        table[:, col : col + 3 * k] = np.transpose(sh_rest, (0, 2, 1)).reshape(n, 3 * k)
        col += 3 * k
    table[:, col] = arrays["opacities"]
    table[:, col + 1 : col + 4] = arrays["scales"]
    table[:, col + 4 : col + 8] = arrays["rotations"]
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(memoryview(table))  # no copy: the table is C-contiguous little-endian float32
    return path
