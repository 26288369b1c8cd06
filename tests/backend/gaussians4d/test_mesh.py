"""Path-2 meshes: marching cubes of the Gaussians' density, moved by the Gaussians' rigid motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from gaussian_standins import RigidCloud, ball_points, box_points, rot_z, sphere_shell

from backend.gaussians4d.mesh import deform_mesh, extract_mesh
from shared.errors import InputError


@pytest.fixture(scope="module")
def ball() -> RigidCloud:
    """A filled ball of radius 0.5 (lattice spacing 0.05) spinning about a point off its centre and drifting."""
    points = ball_points(0.5, 0.05)
    return RigidCloud(points, sigma=0.04, spin=np.pi / 2, velocity=(0.3, 0.0, 0.1), centre=(0.1, 0.2, 0.0))


def test_single_gaussian_gives_its_half_peak_ellipsoid():
    # one anisotropic Gaussian turned 90° about z: its long axis (scale 0.3 on local x) lies along world y
    turn = np.array([[np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)]])
    mean = np.array([0.2, -0.1, 0.3])
    cloud = RigidCloud(mean[None], sigma=np.array([[0.3, 0.12, 0.08]]), opacity=0.9, quats=turn)
    vertices, faces = extract_mesh(cloud, resolution=64, level=0.45)
    assert vertices.dtype == np.float32 and faces.dtype == np.int32
    # D = 0.9 exp(−½ m) = 0.45 on m = 2 ln 2: in world axes the semi-axes are (0.12, 0.3, 0.08) · √(2 ln 2)
    semi = np.array([0.12, 0.3, 0.08]) * np.sqrt(2 * np.log(2))
    radius = np.linalg.norm((vertices - mean) / semi, axis=1)
    assert np.abs(radius - 1).mean() < 0.01 and np.abs(radius - 1).max() < 0.05
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * semi.prod(), rel=0.03)  # > 0: normals point out
    # the automatic level is half the density at the centre: the same ellipsoid, up to grid interpolation
    auto, _ = extract_mesh(cloud, resolution=64)
    assert np.abs(np.linalg.norm((auto - mean) / semi, axis=1) - 1).mean() < 0.05


def test_ball_surface_at_the_reference_time(ball):
    vertices, faces = extract_mesh(ball, 0.5, resolution=48)
    centre = ball.move(np.zeros(3), 0.5)
    error = np.abs(np.linalg.norm(vertices - centre, axis=1) - 0.5)
    assert error.mean() < 0.015 and error.max() < 0.03  # lattice spacing 0.05, voxel ≈ 0.025
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.body_count == 1
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.05)


def test_turned_box_surface_and_floaters_dropped():
    half = np.array([0.4, 0.2, 0.1])
    points = box_points(tuple(half), 0.04)
    floaters = np.array([[1.0, 1.0, 0.0], [1.02, 1.0, 0.0], [-1.0, 0.8, 0.3]])  # far away, opaque
    box = RigidCloud(np.concatenate([points, floaters]), sigma=0.035, spin=np.pi / 3, velocity=(0.0, 0.2, 0.0))
    vertices, faces = extract_mesh(box, 1.0, resolution=48)
    local = box.move(vertices.astype(np.float64), 0.0, 1.0)  # back into the box's own axes
    # each lattice point stands for a cube of side 0.04, so the cloud fills the box grown by 0.02
    d = np.abs(local) - (half + 0.02)
    signed = np.linalg.norm(np.maximum(d, 0), axis=1) + np.minimum(d.max(axis=1), 0)
    assert np.abs(signed).mean() < 0.015 and np.percentile(np.abs(signed), 95) < 0.03
    assert np.abs(local).max(axis=0) == pytest.approx(half + 0.02, abs=0.03)  # no floater survived
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight


def test_sheet_of_flat_gaussians_gives_one_closed_outer_surface():
    # 3,000 discs of radius σ 0.025 and thickness σ 0.002 on a sphere of radius 0.5, hollow inside
    shell = sphere_shell(3000, 0.5, 0.025, 0.002)
    vertices, faces = extract_mesh(shell, resolution=48)
    radius = np.linalg.norm(vertices, axis=1)
    voxel = 1.15 / 43  # the grid spans the centres ± 3σ = 1.15 with 48 − 5 voxels
    assert 0.5 < radius.mean() < 0.5 + 2 * voxel and radius.std() < 0.005  # the sheet's outer side only
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.volume > 4 / 3 * np.pi * 0.5**3  # closed, no holes into the inside


def test_deformed_mesh_follows_the_rigid_motion(ball):
    vertices, _ = extract_mesh(ball, 0.25, resolution=32)
    times = [0.0, 0.25, 0.6, 1.0]
    frames = deform_mesh(ball, vertices, times, t_ref=0.25)
    assert frames.shape == (4, len(vertices), 3) and frames.dtype == np.float32
    assert np.array_equal(frames[1], vertices)  # t = t_ref leaves every vertex in place
    for frame, t in zip(frames, times, strict=True):
        expected = ball.move(vertices.astype(np.float64), t, 0.25)
        assert np.abs(frame - expected).max() < 1e-4


def test_parts_moving_differently_carry_their_own_vertices():
    left = ball_points(0.3, 0.05, centre=(-0.6, 0.0, 0.0))
    right = ball_points(0.3, 0.05, centre=(0.6, 0.0, 0.0))

    class TwoBalls:
        """Left ball static, right ball spinning about its own centre and rising."""

        def __init__(self):
            self.still = RigidCloud(left)
            self.moving = RigidCloud(right, spin=np.pi, velocity=(0, 0, 0.5), centre=(0.6, 0.0, 0.0))

        def __len__(self):
            return len(left) + len(right)

        def at(self, t):
            a, b = self.still.at(t), self.moving.at(t)
            return {k: np.concatenate([a[k], b[k]]) for k in a}

    model = TwoBalls()
    direction = np.random.default_rng(0).normal(size=(50, 3))
    surface = 0.3 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    frames = deform_mesh(model, np.concatenate([surface + (-0.6, 0, 0), surface + (0.6, 0, 0)]), [1.0])
    assert np.abs(frames[0, :50] - (surface + (-0.6, 0, 0))).max() < 1e-5
    expected = (surface @ rot_z(np.pi).T) + (0.6, 0.0, 0.5)
    assert np.abs(frames[0, 50:] - expected).max() < 1e-4


def test_blend_weights_are_inverse_distance_and_rotation_turns_offsets():
    # two Gaussians 4 apart; a vertex at distance 1 and 3 gets weights 3/4 and 1/4
    two = RigidCloud(np.array([[0.0, 0, 0], [4.0, 0, 0]]))
    shift = {0.0: np.zeros((2, 3)), 1.0: np.array([[1.0, 0, 0], [0, 1.0, 0]])}

    class Shifted:
        def __len__(self):
            return 2

        def at(self, t):
            g = two.at(0.0)
            g["means"] = g["means"] + torch.tensor(shift[t], dtype=torch.float32)
            return g

    moved = deform_mesh(Shifted(), np.array([[1.0, 0, 0]]), [1.0], k=2)
    assert moved[0, 0] == pytest.approx([1.75, 0.25, 0.0], abs=1e-6)
    # one Gaussian turning a quarter about z around its fixed centre swings an offset (1,0,0) to (0,1,0)
    spinner = RigidCloud(np.array([[0.5, 0.5, 0.0]]), spin=np.pi / 2, centre=(0.5, 0.5, 0.0))
    assert deform_mesh(spinner, np.array([[1.5, 0.5, 0]]), [1.0], k=4)[0, 0] == pytest.approx([0.5, 1.5, 0], abs=1e-6)


def test_refusals_name_the_problem(ball):
    class Empty:
        def __len__(self):
            return 0

        def at(self, t):
            raise AssertionError("an empty model is refused before it is evaluated")

    with pytest.raises(InputError, match="empty"):
        extract_mesh(Empty())
    with pytest.raises(InputError, match="transparent"):
        extract_mesh(RigidCloud(ball_points(0.3, 0.1), opacity=1e-4))
    with pytest.raises(InputError, match=r"No surface at level 1000: .* peaks at .*level=") as info:
        extract_mesh(ball, resolution=24, level=1000.0)
    suggested = float(str(info.value).split("level=")[1].split(",")[0])
    assert len(extract_mesh(ball, resolution=24, level=suggested)[1]) > 0  # the suggestion works
    with pytest.raises(InputError, match="t_ref"):
        extract_mesh(ball, 1.5)
    with pytest.raises(InputError, match="resolution"):
        extract_mesh(ball, resolution=4)
    with pytest.raises(InputError, match=r"times\[1\]"):
        deform_mesh(ball, np.zeros((3, 3)), [0.2, float("nan")])
    with pytest.raises(InputError, match=r"times\[0\]"):
        deform_mesh(ball, np.zeros((3, 3)), [-0.1])
    with pytest.raises(InputError, match="vertices"):
        deform_mesh(ball, np.zeros((3, 2)), [0.5])


def test_real_dynamic_gaussians_mesh_moves_with_the_model():
    from backend.gaussians4d.model import DynamicGaussians
    from backend.gaussians4d.rasterize import quat_to_rotmat

    points = ball_points(0.4, 0.05)
    model = DynamicGaussians.from_points(points, np.full((len(points), 3), 0.5), 0.04, knots=4, opacity=0.8)
    shift = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.05, 0.0], [0.25, -0.05, 0.1], [0.3, 0.0, 0.2]])
    with torch.no_grad():
        model.mean_ctrl.copy_(shift.expand(len(points), -1, -1))  # the whole ball translates along a curve
    vertices, faces = extract_mesh(model, 0.0, resolution=32)
    radius = np.linalg.norm(vertices, axis=1)
    assert np.abs(radius - 0.4).mean() < 0.015
    times = [0.0, 0.4, 1.0]
    frames = deform_mesh(model, vertices, times)
    for frame, t in zip(frames, times, strict=True):
        with torch.no_grad():
            offset = (model.at(t)["means"] - model.at(0.0)["means"]).mean(0).numpy()
        assert np.abs(frame - (vertices + offset)).max() < 1e-5

    # per-Gaussian motion with rotations: with k = 1, a vertex just off a Gaussian's centre rides on that
    # Gaussian, its offset turned by the Gaussian's rotation since t_ref
    generator = torch.Generator().manual_seed(0)
    offset = np.array([0.004, -0.002, 0.003])
    with torch.no_grad():
        model.mean_ctrl.copy_(0.1 * torch.randn(model.mean_ctrl.shape, generator=generator))
        model.rot_ctrl.copy_(0.5 * torch.randn(model.rot_ctrl.shape, generator=generator))
        ref = model.at(0.3)
        expected = []
        for t in times:
            now = model.at(t)
            turn = quat_to_rotmat(now["quats"][:20]) @ quat_to_rotmat(ref["quats"][:20]).transpose(1, 2)
            expected.append((turn.numpy() @ offset) + now["means"][:20].numpy())
    moved = deform_mesh(model, ref["means"][:20].numpy() + offset, times, k=1, t_ref=0.3)
    assert np.abs(moved - np.stack(expected)).max() < 1e-5
