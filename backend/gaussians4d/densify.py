"""Densification and pruning of dynamic Gaussians, trajectories included (3DGS's adaptive density control).

Every per-Gaussian tensor of the model — canonical parameters and the trajectory control points alike — is
edited by row, so a cloned or split Gaussian keeps the motion of its parent, and Adam's moments follow the
rows they belong to (new rows start at zero). The screen-space gradient is read from the rasterizer's
`meta["means2d"].grad` and normalised as gsplat's DefaultStrategy does (NDC units: × width/2, height/2 and the
number of images in the loss), so gsplat's threshold 2e-4 means the same here.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.gaussians4d.model import DynamicGaussians
from backend.gaussians4d.rasterize import quat_to_rotmat


class ScreenGradients:
    """Running mean, per Gaussian, of the norm of its projected centre's loss gradient over the views that
    see it."""

    def __init__(self, count: int, device: torch.device):
        self.total = torch.zeros(count, device=device)
        self.seen = torch.zeros(count, device=device)

    def add(self, means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, images_in_loss: int) -> None:
        """means2d (C,N,2) after backward (its .grad set), radii (C,N) (0 = not visible); or a batch's (B,C,N,2)
        and (B,C,N)."""
        if means2d.grad is None:
            return
        with torch.no_grad():
            grad = means2d.grad.reshape(-1, *means2d.shape[-2:]).clone()
            radii = radii.reshape(-1, radii.shape[-1])
            grad[..., 0] *= width / 2 * images_in_loss
            grad[..., 1] *= height / 2 * images_in_loss
            visible = (radii > 0).to(grad.dtype)
            self.total += (grad.norm(dim=-1) * visible).sum(0)
            self.seen += visible.sum(0)

    def mean(self) -> torch.Tensor:
        return self.total / self.seen.clamp_min(1)


def edit_rows(model: DynamicGaussians, optimizer: torch.optim.Adam, keep: torch.Tensor, new: dict) -> None:
    """Keep rows `keep` (bool (N,)) of every per-Gaussian tensor and append `new[name]` rows; Adam moments of
    kept rows follow them, new rows start at zero."""
    old = model.per_gaussian_parameters()
    rows = {
        name: torch.cat([p.detach()[keep], new[name]]) if name in new else p.detach()[keep] for name, p in old.items()
    }
    added = next(iter(new.values())).shape[0] if new else 0
    model.replace_rows(rows)
    fresh = model.per_gaussian_parameters()
    for group in optimizer.param_groups:
        name = group["name"]
        state = optimizer.state.pop(old[name], None)
        group["params"] = [fresh[name]]
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                v = state[key][keep]
                state[key] = torch.cat([v, torch.zeros((added, *v.shape[1:]), dtype=v.dtype, device=v.device)])
            optimizer.state[fresh[name]] = state
    for name, p in fresh.items():
        p.requires_grad_(any(g["name"] == name for g in optimizer.param_groups))


def densify_and_prune(
    model: DynamicGaussians,
    optimizer: torch.optim.Adam,
    grad_mean: torch.Tensor,
    *,
    grow_grad2d: float,
    grow_scale: float,
    prune_opacity: float,
    prune_scale: float,
    max_gaussians: int,
    generator: torch.Generator,
) -> tuple[int, int]:
    """Clone small and split large Gaussians whose mean screen gradient `grad_mean` (N,) is over
    `grow_grad2d`, within `max_gaussians`; prune those with opacity under `prune_opacity` or a scale over
    `prune_scale` (world units, as `grow_scale`). Returns (added, removed)."""
    with torch.no_grad():
        scales = torch.exp(model.log_scales).max(dim=1).values
        grow = grad_mean > grow_grad2d
        room = max_gaussians - len(model)
        if grow.sum() > room:  # keep the strongest gradients within the budget
            top = torch.topk(torch.where(grow, grad_mean, -1.0), max(room, 0)).indices
            grow = torch.zeros_like(grow)
            grow[top] = True
        clone = grow & (scales <= grow_scale)
        split = grow & ~clone
        params = model.per_gaussian_parameters()
        new = {name: torch.cat([v.detach()[clone], v.detach()[split], v.detach()[split]]) for name, v in params.items()}
        if split.any():
            # two samples from each split Gaussian, at 1/1.6 of its scale (3DGS)
            n_clone = int(clone.sum())
            std = torch.exp(model.log_scales[split]).repeat(2, 1)
            rot = quat_to_rotmat(model.quats[split]).repeat(2, 1, 1)
            noise = torch.randn(std.shape, generator=generator, device=std.device) * std
            offset = torch.einsum("nij,nj->ni", rot, noise)
            new["means"][n_clone:] += offset
            new["log_scales"][n_clone:] -= float(np.log(1.6))
        opacity = torch.sigmoid(model.opacity_logits)
        prune = (opacity < prune_opacity) | (scales > prune_scale) | split
        keep = ~prune
        if not keep.any() and not new["means"].shape[0]:
            return 0, 0
        edit_rows(model, optimizer, keep, new)
        return int(new["means"].shape[0]), int(prune.sum())
