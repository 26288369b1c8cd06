"""Dynamic 3D Gaussians: canonical Gaussians plus a per-Gaussian cubic B-spline trajectory over time.

Each Gaussian has canonical parameters (mean, rotation, scale, opacity, colour) and K control points over
t ∈ [0, 1] for an offset of its mean and a rotation offset (axis-angle, composed on the left of the
canonical rotation). At time t the offsets are the clamped cubic B-spline of the control points.

Why a per-Gaussian spline rather than a deformation network (HexPlane + MLP as in 4DGaussians, or the
experimental `gsplat.contrib.dynamic`):
- cheap on a CPU: evaluating the trajectory at t is one (K,) weight vector times an (N, K, 3) table, no
  network pass per Gaussian;
- with K equal to the number of captured frames the spline can pass through any position at every frame,
  so short clips (the 16-48 frames a Blender capture gives) are fitted exactly, while fewer knots make the
  motion smooth by construction and a second-difference penalty on the control points smooths it further;
- no MLP to tune, and densification copies the trajectory with the Gaussian (it is just more per-Gaussian
  rows). A HexPlane field shares motion between neighbouring Gaussians and scales to long sequences better;
  it is the alternative if clips grow past a few hundred frames.

Conventions (see the module contract): quaternions (w, x, y, z); `at(t)` returns activated values
(positive scales, opacities in (0, 1), colours RGB in [0, 1]-ish).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from backend.gaussians4d.rasterize import EPS2D
from backend.gaussians4d.sh import coefficient_count, view_colors
from backend.motion.rotations import quat_multiply_torch as quat_multiply


@dataclass
class DynamicGaussiansConfig:
    """Shape of a DynamicGaussians model: what is needed to rebuild it before loading its weights."""

    num_gaussians: int
    knots: int  # control points of each trajectory (K); degree is min(3, K - 1)
    rotation: bool = True  # whether trajectories carry a rotation offset
    eps2d: float = EPS2D  # px²: the rasterizer's low-pass filter the model was fitted with, and is drawn with
    sh_degree: int = 0  # view-dependent colour: SH bands above the base colour (0: none, up to 3; see sh.py)
    color_motion: bool = False  # whether trajectories carry a colour offset (shading that changes as parts turn)


def bspline_basis(times: np.ndarray | torch.Tensor | float, knots: int) -> np.ndarray:
    """Clamped uniform B-spline basis over [0, 1]: (T, K) float64 weights, rows sum to 1.

    Degree min(3, K - 1), so K = 1 is constant and K = 2 linear; the curve passes through the first and last
    control points at t = 0 and t = 1.
    """
    t = np.clip(np.atleast_1d(np.asarray(times, dtype=np.float64)), 0.0, 1.0)
    k = int(knots)
    if k < 1:
        raise ValueError(f"a trajectory needs at least one control point, got {k}")
    p = min(3, k - 1)
    inner = np.linspace(0.0, 1.0, k - p + 1)
    knot_vector = np.concatenate([np.zeros(p), inner, np.ones(p)])
    # degree 0: indicator of the span; t = 1 belongs to the last non-empty span
    basis = np.zeros((t.size, len(knot_vector) - 1))
    span = np.clip(np.searchsorted(inner, t, side="right") - 1, 0, k - p - 1) + p
    basis[np.arange(t.size), span] = 1.0
    for d in range(1, p + 1):
        nxt = np.zeros((t.size, len(knot_vector) - 1 - d))
        for i in range(nxt.shape[1]):
            left_den = knot_vector[i + d] - knot_vector[i]
            right_den = knot_vector[i + d + 1] - knot_vector[i + 1]
            if left_den > 0:
                nxt[:, i] += (t - knot_vector[i]) / left_den * basis[:, i]
            if right_den > 0:
                nxt[:, i] += (knot_vector[i + d + 1] - t) / right_den * basis[:, i + 1]
        basis = nxt
    return basis


SPLINE_SMOOTHING = 1e-4  # weight of the control points' second differences when they are fitted to values


def spline_controls(basis: torch.Tensor, values: torch.Tensor, smoothing: float | None = None) -> torch.Tensor:
    """(K, M) float64 control points whose spline passes through `values` (T, M) at the times whose weights are
    `basis` (T, K): least squares, plus `smoothing` × the control points' squared second differences.

    That small term matters when there is a knot per time (K = T, the `quality` preset's 48): the system is then
    ill-conditioned (condition number about 3,000 at 48 knots), and the second and second-to-last control points,
    barely weighted at any time, swung to ±100 while the curve still met every value. The fit's smoothness term
    on those control points then outweighed the images (5.3 of a loss of 5.4 on horse-gallop, 48 frames). With
    it they stay within the values' range, and the curve meets smooth values to within a few thousandths.
    smoothing: None for SPLINE_SMOOTHING (read at the call, so a benchmark can set it for a baseline)."""
    smoothing = SPLINE_SMOOTHING if smoothing is None else smoothing
    a = basis.detach().cpu().double()
    v = values.detach().cpu().double().reshape(len(a), -1)
    k = a.shape[1]
    if k >= 3 and smoothing > 0:
        second = torch.diff(torch.eye(k, dtype=torch.float64), n=2, dim=0)  # (K-2, K)
        a = torch.cat([a, smoothing**0.5 * second])
        v = torch.cat([v, v.new_zeros(k - 2, v.shape[1])])
    return torch.linalg.lstsq(a, v).solution


def axis_angle_to_quat(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle vectors → (..., 4) unit quaternions; smooth at zero."""
    angle2 = (v * v).sum(-1, keepdim=True)
    angle = torch.sqrt(angle2 + 1e-12)
    half = 0.5 * angle
    small = angle2 < 1e-8
    # sin(a/2)/a ≈ 1/2 − a²/48 near zero
    factor = torch.where(small, 0.5 - angle2 / 48.0, torch.sin(half) / angle)
    w = torch.where(small, 1.0 - angle2 / 8.0, torch.cos(half))
    return torch.cat([w, v * factor], dim=-1)


_CROSS = torch.tensor(  # _CROSS @ v is the cross-product matrix [v]× of v: (3, 3, 3), the last axis v's
    [[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]], [[0, -1, 0], [1, 0, 0], [0, 0, 0]]],
    dtype=torch.float32,
)


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle vectors → (..., 3, 3) rotation matrices by Rodrigues' formula, smooth at zero:
    R = I + sinc(θ)·[v]× + ½ sinc²(θ/2)·[v]×², in a dozen operations (as quat_to_rotmat(axis_angle_to_quat(v)),
    which takes five times as many: what a small pose optimisation's step costs on a GPU)."""
    cross = torch.einsum("ijk,...k->...ij", _CROSS.to(v), v)
    angle = torch.sqrt((v * v).sum(-1) + 1e-12)[..., None, None]
    a = torch.sinc(angle / torch.pi)  # torch.sinc(x) = sin(πx)/(πx), 1 at 0
    b = 0.5 * torch.sinc(angle / (2 * torch.pi)) ** 2  # (1 − cos θ)/θ² without cancellation
    return torch.eye(3, dtype=v.dtype, device=v.device) + a * cross + b * (cross @ cross)


class DynamicGaussians(nn.Module):
    """N canonical Gaussians, each with a K-point B-spline trajectory (mean offset + rotation offset).

    Parameters (raw, optimised directly): means (N,3) world units, quats (N,4), log_scales (N,3),
    opacity_logits (N,), colors (N,3), mean_ctrl (N,K,3) mean offsets, rot_ctrl (N,K,3) axis-angle offsets
    (absent when config.rotation is False), color_ctrl (N,K,3) colour offsets (config.color_motion: shading
    that changes as a part turns, which one colour per Gaussian cannot follow), sh_rest (N,S,3) view-dependent
    colour (config.sh_degree > 0, see sh.py). Offsets start at zero, so a new model is static.
    """

    PER_GAUSSIAN = (
        "means",
        "quats",
        "log_scales",
        "opacity_logits",
        "colors",
        "sh_rest",
        "mean_ctrl",
        "rot_ctrl",
        "color_ctrl",
    )
    TRAJECTORY = ("mean_ctrl", "rot_ctrl", "color_ctrl")

    def __init__(self, config: DynamicGaussiansConfig):
        super().__init__()
        if config.num_gaussians < 0 or config.knots < 1:
            raise ValueError(f"invalid config {config}")
        self.config = config
        n, k = config.num_gaussians, config.knots
        self.means = nn.Parameter(torch.zeros(n, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.log_scales = nn.Parameter(torch.full((n, 3), -3.0))
        self.opacity_logits = nn.Parameter(torch.zeros(n))
        self.colors = nn.Parameter(torch.full((n, 3), 0.5))
        bands = coefficient_count(config.sh_degree)
        self.register_parameter("sh_rest", nn.Parameter(torch.zeros(n, bands, 3)) if bands else None)
        self.mean_ctrl = nn.Parameter(torch.zeros(n, k, 3))
        self.register_parameter("rot_ctrl", nn.Parameter(torch.zeros(n, k, 3)) if config.rotation else None)
        self.register_parameter("color_ctrl", nn.Parameter(torch.zeros(n, k, 3)) if config.color_motion else None)

    @classmethod
    def from_points(
        cls,
        means: np.ndarray | torch.Tensor,
        colors: np.ndarray | torch.Tensor,
        scales: np.ndarray | torch.Tensor | float,
        *,
        knots: int,
        opacity: float = 0.5,
        rotation: bool = True,
        sh_degree: int = 0,
        color_motion: bool = False,
    ) -> DynamicGaussians:
        """Static isotropic Gaussians at `means` (N,3) with `colors` (N,3) and `scales` (N,) or one value."""
        means = torch.as_tensor(np.asarray(means), dtype=torch.float32).reshape(-1, 3)
        n = means.shape[0]
        config = DynamicGaussiansConfig(n, knots, rotation=rotation, sh_degree=sh_degree, color_motion=color_motion)
        model = cls(config)
        scale = torch.as_tensor(np.asarray(scales), dtype=torch.float32).reshape(-1)
        with torch.no_grad():
            model.means.copy_(means)
            model.colors.copy_(torch.as_tensor(np.asarray(colors), dtype=torch.float32).reshape(n, 3))
            model.log_scales.copy_(torch.log(scale.expand(n)).unsqueeze(-1).expand(n, 3))
            model.opacity_logits.fill_(float(np.log(opacity / (1.0 - opacity))))
        return model

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def knots(self) -> int:
        return int(self.mean_ctrl.shape[1])

    def basis(self, t: float | torch.Tensor | np.ndarray) -> torch.Tensor:
        """(T, K) spline weights for the times in `t`, on the model's device (kept: a fit asks for the same few
        times at every step, and a tensor made from host values waits for the GPU's queue to empty). Do not
        modify the returned tensor in place."""
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().numpy()
        key = (np.asarray(t, np.float64).tobytes(), self.knots, self.means.dtype, self.means.device)
        cache = self.__dict__.setdefault("_basis_cache", {})
        if key not in cache:
            if len(cache) >= 1024:
                cache.clear()
            cache[key] = torch.as_tensor(bspline_basis(t, self.knots), dtype=self.means.dtype, device=self.means.device)
        return cache[key]

    def trajectory(self, t: float | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean offsets (T,N,3) and axis-angle rotation offsets (T,N,3) or None, at the times in `t`."""
        return self._offsets(self.basis(t))

    def _offsets(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        offsets = torch.einsum("tk,nkc->tnc", weights, self.mean_ctrl)
        rot = torch.einsum("tk,nkc->tnc", weights, self.rot_ctrl) if self.rot_ctrl is not None else None
        return offsets, rot

    def at(self, t: float | torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Activated Gaussians at time t.

        A scalar t gives means (N,3), quats (N,4), scales (N,3), opacities (N,), colors (N,3); a 1-D t of T
        times gives the same with a leading T axis (scales and opacities are shared views, and so are colours
        without colour motion). View-dependent colour is added per camera by `colors_seen`.
        """
        scalar = np.ndim(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t) == 0
        out = self.at_weights(self.basis(t))
        return {k: v[0] for k, v in out.items()} if scalar else out

    def at_weights(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """`at` for the times whose spline weights are the rows of `weights` (T,K) (e.g. rows of `basis`, picked on
        the device: a fit's step takes a few of them without a tensor made from host values); leading T axis."""
        offsets, rot = self._offsets(weights)
        n_times = offsets.shape[0]
        means = self.means.unsqueeze(0) + offsets
        quats = torch.nn.functional.normalize(self.quats, dim=-1).unsqueeze(0).expand(n_times, -1, -1)
        if rot is not None:
            quats = quat_multiply(axis_angle_to_quat(rot), quats)
        out = {
            "means": means,
            "quats": quats,
            "scales": torch.exp(self.log_scales).unsqueeze(0).expand(n_times, -1, -1),
            "opacities": torch.sigmoid(self.opacity_logits).unsqueeze(0).expand(n_times, -1),
            "colors": self.colors.unsqueeze(0).expand(n_times, -1, -1),
        }
        if self.color_ctrl is not None:
            out["colors"] = out["colors"] + torch.einsum("tk,nkc->tnc", weights, self.color_ctrl)
        return out

    def colors_seen(self, gaussians: dict[str, torch.Tensor], viewmats: torch.Tensor) -> torch.Tensor:
        """Colours from each camera (viewmats (C,4,4)) of the Gaussians `at(t)` returned for one time: (N,3) for
        a model without view-dependent colour, else (C,N,3) (sh.view_colors)."""
        return view_colors(gaussians["colors"], self.sh_rest, gaussians["means"], viewmats)

    def per_gaussian_parameters(self) -> dict[str, nn.Parameter]:
        """name → parameter for every tensor with one row per Gaussian (what densify/prune must edit)."""
        return {name: getattr(self, name) for name in self.PER_GAUSSIAN if getattr(self, name) is not None}

    def replace_rows(self, rows: dict[str, torch.Tensor]) -> None:
        """Swap in new per-Gaussian tensors (same names, any common N) and update the config's count."""
        counts = {v.shape[0] for v in rows.values()}
        if len(counts) != 1 or set(rows) != set(self.per_gaussian_parameters()):
            raise ValueError("replace_rows needs every per-Gaussian tensor, all with the same row count")
        for name, value in rows.items():
            setattr(self, name, nn.Parameter(value.detach().contiguous()))
        self.config = replace(self.config, num_gaussians=counts.pop())
