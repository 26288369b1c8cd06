"""View-dependent colour (backend/gaussians4d/sh.py): the SH basis, and colours as each camera sees them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.gaussians4d.cameras import ring_cameras
from backend.gaussians4d.sh import camera_centres, coefficient_count, sh_basis, view_colors
from shared.results import SH_C0


def test_the_basis_is_orthonormal_over_the_sphere():
    """With Y_0 = SH_C0, the 16 functions of bands 0..3 integrate to the identity (Monte Carlo, 400k directions):
    a wrong constant, sign-free typo or swapped term shows as an off-diagonal or a diagonal far from 1."""
    dirs = torch.nn.functional.normalize(
        torch.randn(400_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    basis = torch.cat([torch.full((len(dirs), 1), SH_C0, dtype=torch.float64), sh_basis(dirs, 3)], -1)
    gram = 4 * np.pi * (basis.T @ basis) / len(dirs)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.02), gram


def test_known_values_and_sizes():
    """Along +z only the zonal terms are non-zero (3DGS's layout: index 1 of band 1, 2 of band 2, 3 of band 3)."""
    z = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    values = sh_basis(z, 3)[0]
    assert [coefficient_count(d) for d in range(4)] == [0, 3, 8, 15] and values.shape == (15,)
    nonzero = torch.nonzero(values.abs() > 1e-12).flatten().tolist()
    assert nonzero == [1, 5, 11], values
    assert values[1] == pytest.approx(0.4886025119029199)  # sqrt(3 / 4π)
    assert values[5] == pytest.approx(2 * 0.31539156525252005)  # sqrt(5 / 16π) (3z² − 1)
    assert values[11] == pytest.approx(2 * 0.3731763325901154)  # sqrt(7 / 16π) (5z³ − 3z)
    with pytest.raises(ValueError, match="0..3"):
        sh_basis(z, 4)


def test_colours_seen_depend_on_the_camera_only_through_the_higher_bands():
    cams = ring_cameras(4, radius=3.0, elevation_deg=20.0, fov_deg=40.0, width=16, height=16)
    viewmats = torch.as_tensor(cams.viewmats)
    centres = camera_centres(viewmats)
    assert torch.allclose(centres, torch.as_tensor(cams.centers(), dtype=centres.dtype), atol=1e-5)
    means, colors = torch.zeros(2, 3), torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.5]])
    assert view_colors(colors, None, means, viewmats) is colors  # no bands: one colour for every camera
    rest = torch.zeros(2, 3, 3)
    assert torch.equal(view_colors(colors, rest, means, viewmats), colors.expand(4, 2, 3))
    rest[0, 1, 0] = 1.0  # band 1, the z term, red channel of Gaussian 0: brighter seen from above
    seen = view_colors(colors, rest, means, viewmats)
    d_z = (means[0] - centres)[:, 2] / (means[0] - centres).norm(dim=-1)  # the cameras look down: d_z < 0
    assert torch.allclose(seen[:, 0, 0], 0.2 + 0.4886025119029199 * d_z, atol=1e-6)
    assert torch.equal(seen[:, 1], colors[1].expand(4, 3))
