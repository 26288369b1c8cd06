"""Exports of a dynamic Gaussian model: per-frame 3DGS PLY, gaussians.frame arrays, mesh npz and OBJ."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from gaussian_standins import RigidCloud, ball_points

from backend.formats.gaussian_ply import gaussian_ply_files, read_gaussian_ply
from backend.formats.mesh_sequence import load_mesh_sequence
from backend.gaussians4d.export import (
    SH_C0,
    export_frames_ply,
    export_mesh_sequence,
    export_obj,
    gaussian_frame_arrays,
)
from backend.gaussians4d.mesh import deform_mesh, extract_mesh
from shared.errors import InputError
from shared.results import check_gaussians


@pytest.fixture(scope="module")
def cloud() -> RigidCloud:
    rng = np.random.default_rng(1)
    points = ball_points(0.3, 0.06)
    n = len(points)
    quats = rng.normal(size=(n, 4))  # unnormalised on purpose
    return RigidCloud(
        points,
        sigma=rng.uniform(0.02, 0.05, size=(n, 3)),
        opacity=np.concatenate([[1.0], rng.uniform(0.05, 0.95, size=n - 1)]),  # opacity 1 must stay finite
        quats=quats,
        spin=np.pi / 4,
        velocity=(0.2, 0.0, 0.0),
    )


def test_frame_arrays_are_the_raw_3dgs_parameters(cloud):
    arrays = gaussian_frame_arrays(cloud, 0.5)
    assert check_gaussians(arrays) == len(cloud)
    assert all(a.dtype == np.float32 for a in arrays.values())
    g = {k: v.numpy().astype(np.float64) for k, v in cloud.at(0.5).items()}
    assert np.allclose(arrays["means"], g["means"], atol=1e-6)
    assert np.allclose(np.exp(arrays["scales"]), g["scales"], rtol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-arrays["opacities"].astype(np.float64))), g["opacities"], atol=1e-5)
    assert np.isfinite(arrays["opacities"]).all() and arrays["opacities"][0] > 10  # opacity 1 → large logit
    assert np.allclose(arrays["sh_dc"] * SH_C0 + 0.5, g["colors"], atol=1e-6)
    unit = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(arrays["rotations"], axis=1), 1, atol=1e-6)
    assert np.allclose(arrays["rotations"], unit, atol=1e-6)


def test_ply_per_frame_round_trips(cloud, tmp_path):
    times = [0.0, 0.5, 1.0]
    paths = export_frames_ply(cloud, times, tmp_path / "frames")
    assert [p.name for p in paths] == ["frame_0001.ply", "frame_0002.ply", "frame_0003.ply"]
    assert gaussian_ply_files(tmp_path / "frames") == paths
    for path, t in zip(paths, times, strict=True):
        back = read_gaussian_ply(path).arrays()
        for key, value in gaussian_frame_arrays(cloud, t).items():
            assert np.array_equal(back[key], value), key
    assert np.abs(read_gaussian_ply(paths[2]).means - cloud.move(cloud.points, 1.0)).max() < 1e-6


def test_mesh_sequence_and_obj_exports_round_trip(cloud, tmp_path):
    vertices, faces = extract_mesh(cloud, 0.0, resolution=24)
    frames = deform_mesh(cloud, vertices, np.linspace(0, 1, 5))
    npz = export_mesh_sequence(tmp_path / "seq.npz", vertices, faces, frames, fps=24)
    seq = load_mesh_sequence(npz)
    assert np.array_equal(seq.rest, vertices) and np.array_equal(seq.faces, faces)
    assert np.array_equal(seq.frames, frames) and seq.fps == 24
    obj = export_obj(tmp_path / "rest.obj", vertices, faces)
    mesh = trimesh.load(obj, process=False, force="mesh")
    assert np.allclose(mesh.vertices, vertices, atol=1e-6) and np.array_equal(mesh.faces, faces)


def test_export_refusals(cloud, tmp_path):
    vertices = np.zeros((3, 3), np.float32)
    faces = np.array([[0, 1, 2]])
    with pytest.raises(InputError, match=r"\(T, 3, 3\)"):
        export_mesh_sequence(tmp_path / "a.npz", vertices, faces, np.zeros((2, 4, 3)))
    with pytest.raises(InputError, match="outside 0..2"):
        export_obj(tmp_path / "a.obj", vertices, np.array([[0, 1, 3]]))
    with pytest.raises(InputError, match=r"times\[1\]"):
        export_frames_ply(cloud, [0.5, 2.0], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing written before the times are checked


def test_real_dynamic_gaussians_export_frames(tmp_path):
    import torch

    from backend.gaussians4d.model import DynamicGaussians

    points = ball_points(0.2, 0.05)
    model = DynamicGaussians.from_points(points, np.full((len(points), 3), 0.25), 0.03, knots=3, opacity=0.7)
    with torch.no_grad():
        model.mean_ctrl.copy_(0.05 * torch.randn(model.mean_ctrl.shape, generator=torch.Generator().manual_seed(0)))
    paths = export_frames_ply(model, [0.0, 0.5, 1.0], tmp_path)
    for path, t in zip(paths, [0.0, 0.5, 1.0], strict=True):
        frame = read_gaussian_ply(path)
        with torch.no_grad():
            g = model.at(t)
        assert np.allclose(frame.means, g["means"].numpy(), atol=1e-6)
        assert np.allclose(np.exp(frame.scales), 0.03, rtol=1e-5)
        assert np.allclose(1 / (1 + np.exp(-frame.opacities)), 0.7, atol=1e-5)
        assert np.allclose(frame.sh_dc * SH_C0 + 0.5, 0.25, atol=1e-6)


def test_colour_over_time_and_view_dependent_colour_reach_the_ply_files(tmp_path):
    """Each frame's f_dc is that time's colour; f_rest holds the SH bands above it, which a 3DGS viewer turns
    into the colour each camera sees (the same as colors_seen)."""
    import torch

    from backend.gaussians4d.cameras import ring_cameras
    from backend.gaussians4d.model import DynamicGaussians
    from backend.gaussians4d.sh import sh_basis

    points = ball_points(0.2, 0.05)
    model = DynamicGaussians.from_points(points, np.full((len(points), 3), 0.25), 0.03, knots=3, sh_degree=2,
                                         color_motion=True)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.color_ctrl.copy_(0.2 * torch.randn(model.color_ctrl.shape, generator=generator))
        model.sh_rest.copy_(0.1 * torch.randn(model.sh_rest.shape, generator=generator))
    cams = ring_cameras(2, radius=3.0, elevation_deg=20.0, fov_deg=40.0, width=8, height=8)
    viewmats = torch.as_tensor(cams.viewmats)
    for path, t in zip(export_frames_ply(model, [0.0, 1.0], tmp_path), [0.0, 1.0], strict=True):
        frame = read_gaussian_ply(path)
        with torch.no_grad():
            g = model.at(t)
            seen = model.colors_seen(g, viewmats).numpy()
        assert np.allclose(frame.sh_dc * SH_C0 + 0.5, g["colors"].numpy(), atol=1e-6)
        assert frame.sh_rest.shape == (len(points), 8, 3)
        dirs = frame.means[None] - cams.centers()[:, None]
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        basis = sh_basis(torch.as_tensor(dirs, dtype=torch.float64), 2).numpy()  # what a viewer evaluates
        viewer = frame.sh_dc * SH_C0 + 0.5 + np.einsum("cnk,nkd->cnd", basis, frame.sh_rest)
        assert np.allclose(viewer, seen, atol=1e-5)
    first, last = (read_gaussian_ply(p).sh_dc for p in sorted(tmp_path.glob("*.ply")))
    assert not np.allclose(first, last)  # the colours moved
