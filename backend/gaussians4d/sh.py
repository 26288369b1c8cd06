"""View-dependent colour: real spherical harmonics of the viewing direction, as 3DGS (and gsplat) evaluate them.

A Gaussian's colour seen from a camera is its base colour plus Σ_k Y_k(d) · c_k over the SH bands above 0, where
d is the unit direction from the camera's centre to the Gaussian's mean, in world coordinates. The base colour
is what the model has always held (RGB, 0.5 + SH_C0 · f_dc in 3DGS's terms; SH_C0 is the protocol's,
shared/results.py), so a model with no higher bands is view-independent and exports exactly as before;
the higher bands are 3DGS's f_rest coefficients, same basis, same order.
"""

from __future__ import annotations

import torch

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_DEGREE = 3


def coefficient_count(degree: int) -> int:
    """SH coefficients per channel above band 0, for bands 1..degree: 0, 3, 8, 15."""
    return (degree + 1) ** 2 - 1


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """(..., coefficient_count(degree)) real SH of unit directions (..., 3), bands 1..degree, 3DGS's order/signs."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_DEGREE}, got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = []
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    if not out:
        return dirs.new_zeros(dirs.shape[:-1] + (0,))
    return torch.stack(out, -1)


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """(C, 3) world positions of cameras given as world→camera matrices (C, 4, 4)."""
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -torch.einsum("cji,cj->ci", rot, trans)


def view_colors(colors: torch.Tensor, sh_rest: torch.Tensor | None, means: torch.Tensor, viewmats: torch.Tensor):
    """Colours as each camera sees them: `colors` (N, 3) when there are no higher bands (sh_rest None or empty),
    else (C, N, 3) = colors + Σ_k Y_k(d) sh_rest[:, k] with d from each camera (viewmats (C, 4, 4)) to `means`."""
    if sh_rest is None or sh_rest.shape[1] == 0:
        return colors
    degree = {3: 1, 8: 2, 15: 3}[sh_rest.shape[1]]
    dirs = torch.nn.functional.normalize(means[None] - camera_centres(viewmats)[:, None], dim=-1)  # (C, N, 3)
    return colors[None] + torch.einsum("cnk,nkd->cnd", sh_basis(dirs, degree), sh_rest)
