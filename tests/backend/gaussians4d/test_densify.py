"""densify_and_prune: new Gaussians carry their parent's trajectory; Adam moments follow their rows."""

from __future__ import annotations

import numpy as np
import torch

from backend.gaussians4d.densify import densify_and_prune
from backend.gaussians4d.model import DynamicGaussians


def _model_and_optimizer():
    means = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    model = DynamicGaussians.from_points(means, np.full((4, 3), 0.5), np.array([0.01, 0.01, 0.5, 0.01]), knots=3)
    with torch.no_grad():
        model.mean_ctrl.copy_(torch.arange(36, dtype=torch.float32).reshape(4, 3, 3))
        model.opacity_logits[3] = -10.0  # transparent: pruned
    groups = [{"params": [p], "name": n} for n, p in model.per_gaussian_parameters().items()]
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    model.at(0.5)["means"].sum().backward()
    optimizer.step()
    return model, optimizer


def test_clone_and_split_copy_trajectories_and_prune_the_transparent():
    model, optimizer = _model_and_optimizer()
    moment = optimizer.state[model.mean_ctrl]["exp_avg"][1].clone()
    parent_traj = model.mean_ctrl[[0, 2]].detach().clone()
    added, removed = densify_and_prune(
        model,
        optimizer,
        torch.tensor([1.0, 0.0, 1.0, 0.0]),  # Gaussians 0 (small → clone) and 2 (large → split) grow
        grow_grad2d=0.5,
        grow_scale=0.1,
        prune_opacity=0.01,
        prune_scale=10.0,
        max_gaussians=100,
        generator=torch.Generator().manual_seed(0),
    )
    # kept: 0, 1 (2 is replaced by its two halves, 3 is transparent); new: clone of 0, two halves of 2
    assert (added, removed) == (3, 2) and len(model) == 5
    torch.testing.assert_close(model.mean_ctrl[2], parent_traj[0])
    torch.testing.assert_close(model.mean_ctrl[3], parent_traj[1])
    torch.testing.assert_close(model.mean_ctrl[4], parent_traj[1])
    torch.testing.assert_close(torch.exp(model.log_scales[3]), torch.full((3,), 0.5 / 1.6))
    state = optimizer.state[model.mean_ctrl]
    torch.testing.assert_close(state["exp_avg"][1], moment)
    assert state["exp_avg"].shape == (5, 3, 3) and torch.all(state["exp_avg"][2:] == 0)
    assert all(group["params"][0] is getattr(model, group["name"]) for group in optimizer.param_groups)
    loss = model.at(0.2)["means"].sum()
    loss.backward()
    optimizer.step()  # the optimizer works on the new tensors


def test_growth_stops_at_the_budget():
    model, optimizer = _model_and_optimizer()
    densify_and_prune(
        model,
        optimizer,
        torch.tensor([3.0, 2.0, 1.0, 0.0]),
        grow_grad2d=0.5,
        grow_scale=0.1,
        prune_opacity=0.0,
        prune_scale=10.0,
        max_gaussians=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(model) == 5  # one clone (the strongest gradient) fits
