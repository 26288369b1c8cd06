"""save_model / load_model: a round trip gives the same Gaussians at every time; broken folders are InputErrors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.gaussians4d.model import DynamicGaussians
from backend.gaussians4d.store import load_model, save_model
from shared.errors import InputError


def _moving_model(rotation: bool = True) -> DynamicGaussians:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = DynamicGaussians.from_points(
        rng.normal(size=(20, 3)), rng.random((20, 3)), rng.uniform(0.02, 0.1, 20), knots=5, rotation=rotation
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


def test_round_trip_without_rotation_trajectories(tmp_path):
    model = _moving_model(rotation=False)
    save_model(tmp_path / "m", model)
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.rot_ctrl is None
    assert torch.equal(loaded.at(0.4)["means"], model.at(0.4)["means"])


def test_missing_or_truncated_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nothing")
    save_model(tmp_path / "m", _moving_model())
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot be read"):
        load_model(tmp_path / "m")
