"""Write one frame of Gaussians as a standard 3DGS PLY (graphdeco-inria layout), numpy only.

The extension does not bundle plyfile, and the layout is fixed, so a structured numpy
array written after a text header is all it takes. Property order:
x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3, float32, binary
little endian. f_rest is channel-major: f_rest_{c*K + k} = sh_rest[:, k, c].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BYTES_PER_STEP = 1 << 20  # 1 MiB of rows: ~3 ms even on a disk throttled to ~330 MB/s by write-back


def splat_ply_steps(path: str | Path, arrays: dict[str, np.ndarray], bytes_per_step: int = BYTES_PER_STEP):
    """Write a gaussians.frame's arrays (means, scales, rotations, opacities, sh_dc, sh_rest?) as a PLY,
    yielding after the header and after each slice of rows so a caller can spread the work over calls."""
    means = arrays["means"]
    n = means.shape[0]
    sh_rest = arrays.get("sh_rest")
    k = 0 if sh_rest is None else sh_rest.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    rows_per_step = max(1, bytes_per_step // (4 * len(names)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        yield
        for lo in range(0, n, rows_per_step):
            hi = min(n, lo + rows_per_step)
            table = np.zeros((hi - lo, len(names)), dtype="<f4")
            table[:, 0:3] = means[lo:hi]
            table[:, 6:9] = arrays["sh_dc"][lo:hi]
            col = 9
            if k:
                table[:, col : col + 3 * k] = np.transpose(sh_rest[lo:hi], (0, 2, 1)).reshape(hi - lo, 3 * k)
                col += 3 * k
            table[:, col] = arrays["opacities"][lo:hi]
            table[:, col + 1 : col + 4] = arrays["scales"][lo:hi]
            table[:, col + 4 : col + 8] = arrays["rotations"][lo:hi]
            fh.write(memoryview(table))  # no copy: C-contiguous little-endian float32
            yield


def write_splat_ply(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """The whole PLY in one go (see splat_ply_steps)."""
    for _ in splat_ply_steps(path, arrays):
        pass
    return Path(path)
