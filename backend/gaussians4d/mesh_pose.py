"""Mesh path 1's starting point: where the rest mesh is, as a whole, at every captured time.

The photometric fit (fit.py) moves the mesh only as far as the images' gradients reach, a few pixels. An object
that walks across the frame or turns round (a chicken crossing a road, a dancer moving over the floor) is mostly
a rigid motion per time, far beyond that reach. `track_rigid` finds that rigid motion from the alpha masks:
time after time, a rotation about the mesh's centre and a translation that put the mesh's vertices inside every
view's silhouette and the silhouettes' pixels near a vertex (a two-sided silhouette distance, cheap: a distance
transform per image and a nearest-vertex search, no rendering). Each time starts from the previous time's pose,
shifted by how far the silhouettes' triangulated centre moved, so a fast-moving object is still found.

`follow_silhouettes` then bends the deformation graph (mesh_bound.py), started at those rigid poses, into every
time's silhouettes by the same distance, with ARAP and the graph's rigidity term holding the shape: what the
rigid pose cannot place (a horse's legs mid-gallop) is pulled into the masks from any distance. Silhouettes do
not pin everything (a bent and a sheared box look alike from outside); the photometric fit does the rest.

Without alpha masks, or with masks that outline nothing (opaque everywhere), the mesh starts where it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from backend.gaussians4d.mesh_bound import DeformationGraph
from backend.gaussians4d.model import axis_angle_to_matrix, axis_angle_to_quat
from backend.gaussians4d.rasterize import quat_to_rotmat

MASK_THRESHOLD = 0.5


def masks_outline_the_object(alphas: torch.Tensor, most: float = 0.9) -> bool:
    """Whether alpha masks (F,H,W,1) can be tracked: some pixel somewhere is inside, and no image is inside over
    `most` of its area (an opaque RGBA export, alpha 1 everywhere, outlines nothing)."""
    inside = (alphas > MASK_THRESHOLD).flatten(1).float().mean(1)
    return bool(inside.max() > 0) and bool(inside.max() <= most)


@dataclass
class RigidPoses:
    """Per-time rigid poses of a mesh: x' = s R (x − centre) + centre + translation, s = exp(log_scale) (1 unless
    the tracker was asked for scale)."""

    rotations: torch.Tensor  # (T, 3) axis-angle
    translations: torch.Tensor  # (T, 3)
    centre: torch.Tensor  # (3,)
    costs: np.ndarray  # (T,) silhouette distance at the end, in pixels (RMS of both sides)
    log_scales: torch.Tensor | None = None  # (T,) uniform scale per time (log), when tracked with scale

    def apply(self, vertices: torch.Tensor) -> torch.Tensor:
        """(T, V, 3) vertices posed at every time."""
        rot = quat_to_rotmat(axis_angle_to_quat(self.rotations))  # (T,3,3)
        if self.log_scales is not None:
            rot = rot * self.log_scales.exp()[:, None, None]
        local = vertices - self.centre
        return torch.einsum("tij,vj->tvi", rot, local) + self.centre + self.translations[:, None]


def _distances_outside(masks: np.ndarray) -> np.ndarray:
    """(E, H, W) distance of every pixel to the nearest pixel inside its mask (zeros for an empty mask), the
    views on threads (SciPy's transform releases the GIL: 16 views at 512² are a fifth of a second on one core)."""

    def outside(mask: np.ndarray) -> np.ndarray:
        return distance_transform_edt(~mask) if mask.any() else np.zeros(mask.shape)

    workers = min(len(masks), os.cpu_count() or 1)
    if workers <= 1:
        return np.stack([outside(m) for m in masks])
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(outside, masks)))


class Silhouettes:
    """One time's alpha masks as what the tracker compares against: distance transforms and inside pixels."""

    def __init__(self, alphas: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, samples: int, seed: int):
        masks = alphas.detach().cpu().numpy().reshape(alphas.shape[0], alphas.shape[1], alphas.shape[2])
        masks = masks > MASK_THRESHOLD
        self.height, self.width = masks.shape[1:3]
        self.viewmats, self.Ks = viewmats, Ks
        outside = _distances_outside(masks)
        self.outside = torch.as_tensor(outside, dtype=viewmats.dtype, device=viewmats.device)[:, None]  # (E,1,H,W)
        rng = np.random.default_rng(seed)
        inside = []
        for m in masks:
            ij = np.argwhere(m)
            if len(ij) > samples:
                ij = ij[rng.choice(len(ij), samples, replace=False)]
            inside.append(ij[:, ::-1] + 0.5)
        # up to `samples` x,y pixels inside each view's mask, padded into one block (E, P, 2) so the cost takes every
        # view in one batched distance (a loop over the views was hundreds of small GPU launches per step: 85 s of
        # tracking for 16 views × 48 times on an H200)
        counts = [len(ij) for ij in inside]
        block = np.zeros((len(inside), max([1, *counts]), 2))
        for e, ij in enumerate(inside):
            block[e, : len(ij)] = ij
        device = viewmats.device
        self._block = torch.as_tensor(block, dtype=viewmats.dtype, device=device)
        self._counts = torch.as_tensor(counts, dtype=viewmats.dtype, device=device)
        self._in_block = torch.as_tensor(np.arange(block.shape[1])[None] < np.asarray(counts)[:, None], device=device)
        seen = [e for e, n in enumerate(counts) if n]  # the views with mask pixels
        self._seen = torch.as_tensor(seen, dtype=torch.long, device=device) if seen else None
        self.pixels = [self._block[e, :n] for e, n in enumerate(counts)]  # per view (P,2) x,y inside the mask
        # the projection's constants, made once (a tensor made from Python values per step waits for the GPU)
        self._focal, self._principal = Ks[:, None, [0, 1], [0, 1]], Ks[:, None, [0, 1], [2, 2]]
        self._size = torch.as_tensor([self.width, self.height], dtype=viewmats.dtype, device=device)
        self.area = int(masks.sum())  # pixels inside the masks, all views together
        self.empty = not masks.any()  # the object is in none of these views: any pose fits them

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(E, V, 2) pixel coordinates of `points` (V,3) in every view."""
        cam = torch.einsum("eij,vj->evi", self.viewmats[:, :3, :3], points) + self.viewmats[:, None, :3, 3]
        xy = cam[..., :2] / cam[..., 2:3].clamp_min(1e-6)
        return xy * self._focal + self._principal

    def cost(self, points: torch.Tensor) -> torch.Tensor:
        """Mean squared silhouette distance (pixels²): vertices outside the masks + mask pixels far from vertices."""
        xy = self.project(points)
        grid = (xy / self._size * 2 - 1)[:, None]  # (E,1,V,2)
        outside = torch.nn.functional.grid_sample(self.outside, grid, align_corners=False, padding_mode="border")
        cost = outside.pow(2).mean()
        if self._seen is not None:  # per view, the mean over its mask pixels; then the mean over views that have any
            nearest = torch.cdist(self._block, xy).min(dim=2).values.pow(2) * self._in_block  # (E, P)
            cost = cost + (nearest.sum(1)[self._seen] / self._counts[self._seen]).mean()
        return cost

    def centre(self) -> np.ndarray | None:
        """The 3D point nearest (least squares) to the rays through every mask's centroid; None if under 2 views."""
        rows, rhs = [], []
        vm = self.viewmats.detach().cpu().double().numpy()
        K = self.Ks.detach().cpu().double().numpy()
        for e, p in enumerate(self.pixels):
            if not len(p):
                continue
            c = p.detach().cpu().double().numpy().mean(0)
            ray_cam = np.array([(c[0] - K[e, 0, 2]) / K[e, 0, 0], (c[1] - K[e, 1, 2]) / K[e, 1, 1], 1.0])
            R, t = vm[e, :3, :3], vm[e, :3, 3]
            origin, direction = -R.T @ t, R.T @ ray_cam
            direction /= np.linalg.norm(direction)
            proj = np.eye(3) - np.outer(direction, direction)
            rows.append(proj)
            rhs.append(proj @ origin)
        if len(rows) < 2:
            return None
        return np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]


AXIS_MISMATCH = 1.8  # proportions this far off (ratio, worst axis) at the first time: the mesh may be turned
AXIS_MATCH = 1.6  # ... while with two axes swapped they are this close (a hull from few views is fat): warn


def size_change(alphas: torch.Tensor, groups: list[np.ndarray]) -> float:
    """How much the object's size changes over the times whose images are `groups` (entry indices into the alpha
    masks (F,H,W,1)): the largest over the smallest square root of a time's silhouette area, all its views
    together (1: the same size throughout; times where it is nowhere are left out)."""
    inside = (alphas > MASK_THRESHOLD).flatten(1).sum(1).double()
    areas = np.array([float(inside[torch.as_tensor(g, device=inside.device)].sum()) for g in groups])
    areas = areas[areas > 0]
    return float(np.sqrt(areas.max() / areas.min())) if len(areas) else 1.0


def _proportions(extents: np.ndarray) -> np.ndarray:
    """Extents (3,) relative to the longest, thin ones counted as a twentieth (a flat card has no ratio)."""
    extents = np.maximum(np.asarray(extents, np.float64), 1e-12)
    return np.maximum(extents / extents.max(), 0.05)


def _mismatch(a: np.ndarray, b: np.ndarray) -> float:
    """The worst axis's ratio (≥ 1) between two sets of proportions."""
    return float(np.exp(np.abs(np.log(a / b)).max()))


def orientation_warning(video, vertices: np.ndarray, faces: np.ndarray) -> str | None:
    """A warning when the rest mesh looks turned against the capture, else None: its proportions along x, y, z
    are far from those of the object's visual hull at the first time (its first window of views, as for the
    rigid start), and close once two axes are swapped, as with a mesh exported Y up (Blender's OBJ default) for
    a capture in Blender's Z-up world. The silhouettes' rigid start only turns a mesh by small angles, so such a
    mesh would be fitted lying on its side. Only with alpha masks; a warning, since a first pose can differ
    from the rest pose (a character that starts lying down)."""
    if video.alphas is None:
        return None
    used = np.unique(np.asarray(faces).ravel())
    points = np.asarray(vertices, np.float64)[used]
    mesh = points.max(0) - points.min(0)
    lo, hi = video.start_bounds()
    hull = np.asarray(hi - lo, np.float64)
    if not 1 / 3 <= hull.max() / max(mesh.max(), 1e-12) <= 3:  # the hull failed (or other units: checked elsewhere)
        return None
    target = _proportions(hull)
    as_given = _mismatch(_proportions(mesh), target)
    if as_given < AXIS_MISMATCH:
        return None
    axes = "xyz"
    swaps = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    scores = []
    for i, j in swaps:
        order = [0, 1, 2]
        order[i], order[j] = j, i
        scores.append(_mismatch(_proportions(mesh[order]), target))
    best = int(np.argmin(scores))
    if scores[best] > AXIS_MATCH or scores[best] > as_given / 1.3:
        return None
    i, j = swaps[best]

    def ratio(e: np.ndarray) -> str:
        return " : ".join(f"{v:.2f}" for v in e / e.max())

    found = (
        f"The rest mesh looks turned against the capture: its x : y : z proportions are {ratio(mesh)}, the "
        f"captured object's at the first time {ratio(hull)}, which they match with {axes[i]} and {axes[j]} swapped."
    )
    up = capture_up_axis(video.cameras)
    if up is not None and up not in (i, j):
        return (
            f"{found} That is a quarter turn about the capture's up axis ({axes[up]}): turn the mesh to face as the "
            "object does at the first time; the silhouettes' start only turns it by small angles."
        )
    export = "Forward Axis Y, Up Axis Z" if up in (None, 2) else f"Up Axis {axes[up].upper()}"
    return (
        f"{found} Was it exported with another up axis (Blender's OBJ exporter writes Y up by default)? Give it in "
        f"the capture's coordinates (Blender's OBJ export: {export}); turned, it may be fitted on its side."
    )


def capture_up_axis(cameras) -> int | None:
    """The world axis (0, 1, 2) the cameras hold upright on average (their image's up), or None if none does."""
    up = -np.asarray(cameras.viewmats, np.float64)[:, 1, :3].mean(0)  # OpenCV: a camera's y row points down
    norm = float(np.linalg.norm(up))
    if norm < 1e-6 or np.abs(up).max() < 0.8 * norm:
        return None
    return int(np.abs(up).argmax())


def _vertex_sample(count: int, samples: int, rng: np.random.Generator, device) -> torch.Tensor:
    """Indices of at most `samples` of `count` vertices, drawn without replacement, in ascending order."""
    if count <= samples:
        return torch.arange(count, device=device)
    return torch.as_tensor(np.sort(rng.choice(count, samples, replace=False)), device=device)


def _decay_to_a_tenth(optimizer: torch.optim.Optimizer, rates: list[float], step: int, steps: int) -> None:
    """Set each parameter group's rate for `step` of `steps`: exponentially from its rate to a tenth of it."""
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate * 0.1 ** (step / max(1, steps - 1))


def track_rigid(
    vertices: torch.Tensor,
    alphas: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    groups: list[np.ndarray],
    *,
    steps: int = 80,
    vertex_samples: int = 1500,
    pixel_samples: int = 400,
    seed: int = 0,
    scale: bool = False,
    check_cancelled: Callable[[], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RigidPoses:
    """Rigid poses of `vertices` (V,3) at each time whose images are `groups` (entry indices into the alpha
    masks (F,H,W,1), viewmats (F,4,4), Ks (F,3,3)), found by silhouettes; see the module docstring. With
    `scale`, each pose also has a uniform scale about the centre (an object that grows or shrinks, a pop-in).
    check_cancelled is called once per time, on_progress(times done, times) after each."""
    rng = np.random.default_rng(seed)
    dtype, device = vertices.dtype, vertices.device
    sample = vertices[_vertex_sample(len(vertices), vertex_samples, rng, device)]
    centre = vertices.mean(0).detach()
    extent = float((vertices.max(0).values - vertices.min(0).values).norm())
    local = sample - centre
    rotation = torch.zeros(3, dtype=dtype, device=device)
    translation = torch.zeros(3, dtype=dtype, device=device)
    log_scale = torch.zeros((), dtype=dtype, device=device) if scale else None
    previous_centre: np.ndarray | None = None
    previous_area = 0
    rotations, translations, log_scales, costs = [], [], [], []
    for ti, group in enumerate(groups):
        if check_cancelled is not None:
            check_cancelled()
        idx = torch.as_tensor(group, device=device)
        sil = Silhouettes(alphas[idx], viewmats[idx], Ks[idx], pixel_samples, seed + ti)
        seen = sil.centre()
        if seen is not None:
            # the first time: the mesh's centre goes to the silhouettes' only if that fits them better
            if previous_centre is None:
                shifted = torch.as_tensor(seen, dtype=dtype, device=device) - centre
                with torch.no_grad():
                    if sil.cost(sample + shifted) < sil.cost(sample):
                        translation = shifted
            else:
                translation = translation + torch.as_tensor(seen - previous_centre, dtype=dtype, device=device)
            previous_centre = seen
        if log_scale is not None and sil.area and previous_area:  # grown by the square root of the area's change
            log_scale = log_scale + 0.5 * float(np.log(sil.area / previous_area))
        previous_area = sil.area or previous_area
        if sil.empty:  # nothing to place the object by (not there yet, gone, or scaled to nothing): lost
            cost = float("inf")
        else:
            rotation, translation, log_scale, cost = _refine(
                sil, local, centre, rotation, translation, log_scale, steps, extent
            )
        costs.append(cost)
        rotations.append(rotation)
        translations.append(translation)
        log_scales.append(log_scale)
        if on_progress is not None:
            on_progress(ti + 1, len(groups))
    scales = torch.stack(log_scales) if scale else None
    return RigidPoses(torch.stack(rotations), torch.stack(translations), centre, np.asarray(costs), scales)


def _refine(
    sil: Silhouettes,
    local: torch.Tensor,
    centre: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    log_scale: torch.Tensor | None,
    steps: int,
    extent: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Adam on one time's pose from (rotation, translation, log_scale or None: rigid); returns it and its RMS
    silhouette distance. The pose is one parameter, in units that share one rate (Adam's steps are the rate in
    each unit): 0.02 rad, 0.4 % of the mesh's diagonal and 2 % larger or smaller per step at first, decaying to a
    tenth. A step is a few dozen GPU launches: on a GPU their count, not their size, is what tracking costs."""
    step_unit = 0.2 * max(extent, 1e-9)  # the translation's unit (a point-like mesh has no extent)
    units = [torch.full((3,), 1.0), torch.full((3,), step_unit)] + ([torch.ones(1)] if log_scale is not None else [])
    units = torch.cat(units).to(local)
    start = [rotation, translation] + ([log_scale.reshape(1)] if log_scale is not None else [])
    pose = (torch.cat(start) / units).requires_grad_(True)
    rate = 0.02
    optimizer = torch.optim.Adam([pose], lr=rate, fused=pose.is_cuda)

    def posed() -> torch.Tensor:
        v = pose * units
        turned = local @ axis_angle_to_matrix(v[:3]).T
        return (turned if log_scale is None else turned * v[6].exp()) + centre + v[3:6]

    for step in range(steps):
        _decay_to_a_tenth(optimizer, [rate], step, steps)
        cost = sil.cost(posed())
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    with torch.no_grad():
        rms = float(sil.cost(posed()).sqrt())
        v = pose * units
    return v[:3], v[3:6], None if log_scale is None else v[6], rms


def follow_silhouettes(
    graph: DeformationGraph,
    basis: torch.Tensor,
    regularizer: Callable[[torch.Tensor], torch.Tensor],
    alphas: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    groups: list[np.ndarray],
    *,
    steps: int = 100,
    reg_weight: float = 10.0,
    vertex_samples: int = 1500,
    pixel_samples: int = 400,
    seed: int = 0,
    check_cancelled: Callable[[], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Bend a deformation graph (mesh_bound.DeformationGraph, at its rigid start) into every time's silhouettes:
    Adam on all its trajectories at once, the silhouette distance of each time (px², as track_rigid) plus
    `reg_weight` × `regularizer(positions (T,V,3))`. A limb the rigid pose leaves outside the masks is pulled
    into them from any distance, where the photometric fit only reaches a few pixels. check_cancelled is called
    every step, on_progress(steps done, steps) every tenth. Returns the RMS silhouette distance per time (px)."""
    rng = np.random.default_rng(seed)
    rest = graph.rest
    pick = _vertex_sample(len(rest), vertex_samples, rng, rest.device)
    sils = []
    for t, group in enumerate(groups):
        idx = torch.as_tensor(group, device=rest.device)
        sils.append(Silhouettes(alphas[idx], viewmats[idx], Ks[idx], pixel_samples, seed + t))
    params = [graph.translation, graph.rotation]
    extent = float((rest.max(0).values - rest.min(0).values).norm())
    rates = [0.004 * extent, 0.02]
    optimizer = torch.optim.Adam([{"params": [p], "lr": r} for p, r in zip(params, rates, strict=True)])
    for step in range(steps):
        if check_cancelled is not None:
            check_cancelled()
        _decay_to_a_tenth(optimizer, rates, step, steps)
        positions = graph.positions(basis)
        sil = torch.stack([s.cost(positions[t, pick]) for t, s in enumerate(sils)]).mean()
        loss = sil + reg_weight * regularizer(positions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_progress is not None and ((step + 1) % 10 == 0 or step + 1 == steps):
            on_progress(step + 1, steps)
    with torch.no_grad():
        positions = graph.positions(basis)
        return np.asarray([float(s.cost(positions[t, pick]).sqrt()) for t, s in enumerate(sils)])
