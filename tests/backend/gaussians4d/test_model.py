"""DynamicGaussians: the B-spline basis, evaluation at times or basis rows, rotation offsets, row replacement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.gaussians4d.model import DynamicGaussians, bspline_basis, quat_multiply, spline_controls
from backend.gaussians4d.rasterize import quat_to_rotmat


@pytest.mark.parametrize("knots", [1, 2, 3, 4, 7, 16])
def test_basis_is_a_partition_of_unity_clamped_at_the_ends(knots):
    b = bspline_basis(np.linspace(0.0, 1.0, 33), knots)
    assert b.shape == (33, knots)
    assert np.all(b >= -1e-12)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-12)
    assert b[0, 0] == pytest.approx(1.0) and b[-1, -1] == pytest.approx(1.0)


def test_spline_with_one_knot_per_frame_passes_through_any_frame_positions():
    """K = frames: solving for control points reproduces arbitrary per-frame offsets exactly."""
    frames = np.linspace(0.0, 1.0, 9)
    targets = torch.randn(9, 5, 3, dtype=torch.float64)
    model = DynamicGaussians.from_points(np.zeros((5, 3)), np.full((5, 3), 0.5), 0.1, knots=9).double()
    w = torch.as_tensor(bspline_basis(frames, 9))
    with torch.no_grad():
        model.mean_ctrl.copy_(torch.linalg.solve(w, targets.reshape(9, -1)).reshape(9, 5, 3).permute(1, 0, 2))
    out = model.at(torch.as_tensor(frames))
    torch.testing.assert_close(out["means"], targets)


@pytest.mark.parametrize("knots", [16, 48])
def test_control_points_fitted_to_one_value_per_knot_meet_them_and_stay_in_range(knots):
    # A gallop-like motion sampled once per knot, with tracking noise. Plain least squares at 48 knots swings the
    # second and second-to-last control points far outside the values (the system's condition number is ~3,000).
    times = np.linspace(0.0, 1.0, knots)
    values = 0.3 * np.sin(2 * np.pi * 3 * times)[:, None] + np.random.default_rng(0).normal(0, 0.02, (knots, 2))
    basis = torch.as_tensor(bspline_basis(times, knots))
    ctrl = spline_controls(basis, torch.as_tensor(values))
    assert ctrl.shape == (knots, 2)
    assert ctrl.abs().max().item() < 2 * np.abs(values).max()
    assert (basis @ ctrl - torch.as_tensor(values)).abs().max().item() < 0.05
    if knots == 48:
        plain = torch.linalg.lstsq(basis, torch.as_tensor(values)).solution
        assert plain.abs().max().item() > 10 * np.abs(values).max()  # what the smoothing term prevents


def test_control_points_of_a_smooth_motion_reproduce_it_closely():
    times = np.linspace(0.0, 1.0, 48)
    values = torch.as_tensor(np.stack([np.sin(2 * np.pi * times), times**2], -1))
    basis = torch.as_tensor(bspline_basis(times, 48))
    torch.testing.assert_close(basis @ spline_controls(basis, values), values, atol=5e-3, rtol=0)


def test_new_model_is_static_and_activated():
    rng = np.random.default_rng(0)
    means, colors = rng.normal(size=(6, 3)), rng.random((6, 3))
    model = DynamicGaussians.from_points(means, colors, np.full(6, 0.05), knots=4, opacity=0.3)
    assert len(model) == 6 and model.knots == 4
    a, b = model.at(0.0), model.at(0.8)
    for key in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(a[key], b[key])
    assert a["means"].shape == (6, 3) and a["opacities"].shape == (6,)
    torch.testing.assert_close(a["scales"], torch.full((6, 3), 0.05))
    torch.testing.assert_close(a["opacities"], torch.full((6,), 0.3))
    batch = model.at(torch.tensor([0.0, 0.5, 1.0]))
    assert batch["means"].shape == (3, 6, 3) and batch["quats"].shape == (3, 6, 4)


def test_rotation_offset_turns_the_gaussian_about_the_world_axis():
    model = DynamicGaussians.from_points(np.zeros((1, 3)), np.full((1, 3), 0.5), 0.1, knots=1)
    with torch.no_grad():
        model.quats.copy_(torch.tensor([[math.cos(0.3), math.sin(0.3), 0.0, 0.0]]))  # 0.6 rad about x
        model.rot_ctrl[:, 0] = torch.tensor([0.0, 0.0, math.pi / 2])  # then 90° about world z
    r = quat_to_rotmat(model.at(0.5)["quats"])[0]
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rx = quat_to_rotmat(torch.tensor([math.cos(0.3), math.sin(0.3), 0.0, 0.0]))
    torch.testing.assert_close(r, rz @ rx, atol=1e-6, rtol=0)


def test_colour_offsets_follow_the_spline_and_higher_sh_bands_depend_on_the_camera():
    from backend.gaussians4d.cameras import ring_cameras

    model = DynamicGaussians.from_points(np.zeros((2, 3)), np.full((2, 3), 0.5), 0.1, knots=2, color_motion=True,
                                        sh_degree=1)  # fmt: skip
    assert model.color_ctrl.shape == (2, 2, 3) and model.sh_rest.shape == (2, 3, 3)
    with torch.no_grad():
        model.color_ctrl[0, 1] = torch.tensor([0.4, 0.0, -0.4])  # linear (2 knots): half of it at t = 0.5
    torch.testing.assert_close(model.at(0.5)["colors"][0], torch.tensor([0.7, 0.5, 0.3]))
    torch.testing.assert_close(
        model.at(torch.tensor([0.0, 1.0]))["colors"][:, 0], torch.tensor([[0.5] * 3, [0.9, 0.5, 0.1]])
    )
    torch.testing.assert_close(model.at(0.5)["colors"][1], torch.full((3,), 0.5))
    viewmats = torch.as_tensor(ring_cameras(3, radius=3.0, elevation_deg=0.0, fov_deg=40.0, width=8, height=8).viewmats)
    g = model.at(0.0)
    assert model.colors_seen(g, viewmats).shape == (3, 2, 3)  # per camera once there are SH bands
    with torch.no_grad():
        model.sh_rest[0, 2, 1] = 1.0  # band 1's x term, green: the cameras round the ring see it differently
    seen = model.colors_seen(g, viewmats)[:, 0, 1].detach()
    assert float(seen.max() - seen.min()) > 0.5, seen
    plain = DynamicGaussians.from_points(np.zeros((2, 3)), np.full((2, 3), 0.5), 0.1, knots=2)
    assert (
        plain.color_ctrl is None
        and plain.sh_rest is None
        and plain.colors_seen(plain.at(0.0), viewmats).shape == (2, 3)
    )


def test_quat_multiply_matches_rotation_matrix_product():
    q1, q2 = torch.randn(4), torch.randn(4)
    q1, q2 = q1 / q1.norm(), q2 / q2.norm()
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(q1, q2)), quat_to_rotmat(q1) @ quat_to_rotmat(q2))


def test_replace_rows_changes_the_count_and_keeps_the_trajectories():
    model = DynamicGaussians.from_points(np.zeros((4, 3)), np.full((4, 3), 0.5), 0.1, knots=3)
    with torch.no_grad():
        model.mean_ctrl.copy_(torch.arange(36, dtype=torch.float32).reshape(4, 3, 3))
    rows = {name: torch.cat([p[[0, 2]], p[[2]]]) for name, p in model.per_gaussian_parameters().items()}
    model.replace_rows(rows)
    assert len(model) == 3 and model.config.num_gaussians == 3
    torch.testing.assert_close(model.mean_ctrl[2], model.mean_ctrl[1])
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError):
        model.replace_rows({"means": torch.zeros(2, 3)})


def test_at_weights_of_picked_basis_rows_gives_what_at_gives_for_those_times():
    rng = np.random.default_rng(0)
    model = DynamicGaussians.from_points(rng.normal(size=(5, 3)), rng.uniform(size=(5, 3)), 0.1, knots=6,
                                         color_motion=True)  # fmt: skip
    with torch.no_grad():
        for ctrl in (model.mean_ctrl, model.rot_ctrl, model.color_ctrl):
            ctrl.normal_(0.0, 0.3)
    times = np.linspace(0.0, 1.0, 9)
    basis = model.basis(times)
    picked = torch.cat([basis[i : i + 1] for i in (7, 2)])
    by_weights, by_times = model.at_weights(picked), model.at(times[[7, 2]])
    assert set(by_weights) == set(by_times)
    for key, value in by_times.items():
        torch.testing.assert_close(by_weights[key], value)
    assert not torch.allclose(by_weights["means"][0], by_weights["means"][1])  # the two times differ


def test_axis_angle_to_matrix_agrees_with_the_quaternion_route_and_is_smooth_at_zero():
    from backend.gaussians4d.model import axis_angle_to_matrix, axis_angle_to_quat

    v = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    v[0], v[1] = 0.0, 1e-6
    torch.testing.assert_close(axis_angle_to_matrix(v), quat_to_rotmat(axis_angle_to_quat(v)), atol=1e-9, rtol=0)
    quarter_turn_about_z = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turned = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(turned, quarter_turn_about_z, atol=1e-6, rtol=0)
    weights = torch.randn(3, 3, dtype=torch.float64)
    for at in (torch.zeros(3, dtype=torch.float64), v[5]):  # the gradient at zero too (a pose search starts there)
        a = at.clone().requires_grad_(True)
        q = at.clone().requires_grad_(True)
        (axis_angle_to_matrix(a) * weights).sum().backward()
        (quat_to_rotmat(axis_angle_to_quat(q)) * weights).sum().backward()
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, q.grad, atol=1e-6, rtol=1e-6)
