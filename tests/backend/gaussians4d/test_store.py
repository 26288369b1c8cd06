"""save_model / load_model: a round trip gives the same Gaussians at every time; broken folders are InputErrors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.gaussians4d.model import DynamicGaussians
from backend.gaussians4d.store import load_model, save_model
from shared.errors import InputError


def _moving_model(rotation: bool = True, **colour) -> DynamicGaussians:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = DynamicGaussians.from_points(
        rng.normal(size=(20, 3)),
        rng.random((20, 3)),
        rng.uniform(0.02, 0.1, 20),
        knots=5,
        rotation=rotation,
        **colour,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_round_trip_gives_identical_gaussians_at_every_time(tmp_path):
    model = _moving_model()
    save_model(tmp_path / "m", model)
    loaded, meta = load_model(tmp_path / "m")
    assert len(loaded) == 20 and loaded.knots == 5 and meta["rest_mesh"] is None
    times = torch.linspace(0, 1, 11)
    want, got = model.at(times), loaded.at(times)
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_round_trip_with_colour_motion_and_view_dependent_colour(tmp_path):
    from backend.gaussians4d.cameras import ring_cameras

    model = _moving_model(color_motion=True, sh_degree=2)
    save_model(tmp_path / "m", model)
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.color_motion and loaded.config.sh_degree == 2 and loaded.sh_rest.shape == (20, 8, 3)
    viewmats = torch.as_tensor(ring_cameras(3, radius=4.0, elevation_deg=10, fov_deg=40, width=8, height=8).viewmats)
    for t in (0.0, 0.3, 1.0):
        want, got = model.at(t), loaded.at(t)
        assert torch.equal(model.colors_seen(want, viewmats), loaded.colors_seen(got, viewmats))
    assert not torch.equal(model.at(0.0)["colors"], model.at(1.0)["colors"])


def test_round_trip_without_rotation_trajectories(tmp_path):
    model = _moving_model(rotation=False)
    save_model(tmp_path / "m", model)
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.rot_ctrl is None
    assert torch.equal(loaded.at(0.4)["means"], model.at(0.4)["means"])


def test_the_low_pass_filter_a_model_was_fitted_with_travels_and_draws_it(tmp_path):
    from dataclasses import replace

    from backend.gaussians4d.cameras import ring_cameras
    from backend.gaussians4d.fit import render

    model = _moving_model()
    model.config = replace(model.config, eps2d=0.03)  # what a mesh-bound fit sets
    save_model(tmp_path / "m", model)
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.eps2d == 0.03
    cams = ring_cameras(2, radius=4.0, elevation_deg=10, fov_deg=40, width=24, height=24)
    narrow = render(loaded, cams, 0.5)[1]
    loaded.config = replace(loaded.config, eps2d=0.3)
    assert render(loaded, cams, 0.5)[1].sum() > narrow.sum()  # the wider filter covers more


def test_missing_or_truncated_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nothing")
    save_model(tmp_path / "m", _moving_model())
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot be read"):
        load_model(tmp_path / "m")


def test_round_trip_of_a_fit_result_renders_identically_and_keeps_its_facts(tmp_path):
    from backend.gaussians4d.cameras import ring_cameras
    from backend.gaussians4d.fit import FitResult, render

    model = _moving_model(rotation=False)
    faces = np.array([[0, 1, 2], [2, 3, 0]], dtype=np.int32)
    rest = model.means.detach().numpy().copy()
    history = [{"step": 10, "loss": 0.5, "psnr": 20.0, "gaussians": 20}]
    result = FitResult(model, seconds=1.5, iterations=10, history=history, preset="fast", rest_mesh=(rest, faces))
    save_model(tmp_path / "fit", result)
    loaded, meta = load_model(tmp_path / "fit")
    assert meta["iterations"] == 10 and meta["preset"] == "fast" and meta["final"]["psnr"] == 20.0
    np.testing.assert_array_equal(meta["rest_mesh"][0], rest)
    np.testing.assert_array_equal(meta["rest_mesh"][1], faces)
    cams = ring_cameras(3, radius=6.0, width=24, height=24)
    for t in (0.0, 0.37, 1.0):
        with torch.no_grad():
            want, got = render(model, cams, t)[0], render(loaded, cams, t)[0]
        assert torch.equal(want, got)
