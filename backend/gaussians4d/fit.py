"""Fit DynamicGaussians to a multi-view video: photometric + mask losses, densification, mesh-bound mode.

Each iteration renders every view of `times_per_step` captured times (one rasterizer call per time) and takes
one Adam step on L1 + 0.2·(1 − SSIM) of the RGB of all those images together, an L1 term on the alpha masks
when the video has them, and a small second-difference penalty on the trajectory control points. Canonical
parameters and trajectory control points sit in separate optimizer parameter groups (their own learning
rates); densification edits rows of every per-Gaussian tensor, trajectories included, together with their Adam
moments.

Times are introduced progressively (the first `time_warmup` of the iterations widen the sampled window from
the first captured time to all of them), and control points not yet reached copy the last reached one, so a
Gaussian that tracked the motion so far starts the next frames where it was rather than back at the
canonical position — this is what lets large motions (a galloping horse's legs) be followed.

Initialisation: points carved from the alpha masks at the first time (inside every view's silhouette), or
uniform in `video.bounds()` without masks; colours are the mean of the images where the points project. With
masks (and two or more views of every time), their trajectories start on the object's rigid motion per time
found from the silhouettes (as the mesh path's, Preset.free_track; with a size per time too when the silhouettes
grow or shrink by over GROWS: a scale animation, a pop-in), and control points not yet reached follow
the last reached one moved on by that motion, so an object that travels far between frames is followed, not
only one that moves in place. `color_motion` adds colour offsets to the trajectories (shading that changes as a
part turns) and `sh_degree` view-dependent colour (sh.py); both are off by default.

Mesh path 1 (`rest_mesh=(vertices, faces)`, Animate3D): one Gaussian per vertex, canonical means fixed at the
rest vertices, flat in the surface (sized from the vertex's edges, turned with its normal at every time, drawn
with a narrower low-pass filter so the silhouette is the mesh's, see Preset.mesh_flatness), no densification.
With alpha masks and two or more views of every time, the mesh first gets a rigid pose per time from the
silhouettes (mesh_pose.py: an object that walks or turns moves far beyond the images' gradients), the
deformation graph starts at those poses, is then bent into every time's silhouettes (a limb the rigid pose
leaves outside them is pulled in from any distance), and every time is open from the first iteration. While
fitting, the vertices are moved by an embedded deformation graph (see mesh_bound.py for why) with an
as-rigid-as-possible term between every time and the rest pose over the mesh's edges, weakened towards the end
(Preset.mesh_reg_final); each step renders `mesh_times_per_step` times. The motion is baked into the model's
per-vertex trajectories at each preview and at the end. `FitResult.vertex_frames(times)` gives the animated
vertices.

Helpers live beside this module: fit_setup.py (video tensors, initial Gaussians), densify.py (adaptive
density control), mesh_bound.py (ARAP, deformation graph), mesh_pose.py (rigid poses from silhouettes,
bending into them).
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from backend.gaussians4d.densify import ScreenGradients, densify_and_prune
from backend.gaussians4d.fit_setup import background_colour, initial_points, knn_scale, prepare_frames, sample_colors
from backend.gaussians4d.mesh_bound import Arap, DeformationGraph, normal_quats, vertex_edge_lengths, vertex_normals
from backend.gaussians4d.mesh_pose import (
    follow_silhouettes,
    masks_outline_the_object,
    orientation_warning,
    size_change,
    track_rigid,
)
from backend.gaussians4d.metrics import psnr, ssim, ssim_torch
from backend.gaussians4d.model import DynamicGaussians, axis_angle_to_quat, spline_controls
from backend.gaussians4d.rasterize import quat_to_rotmat
from backend.gaussians4d.sh import MAX_DEGREE as MAX_SH_DEGREE
from backend.motion.rotations import quat_conjugate_torch, quat_multiply_torch
from shared.errors import InputError

log = logging.getLogger(__name__)

Progress = Callable[[str, float, str], None]


@dataclass(frozen=True)
class Preset:
    """Fit settings. Learning rates of positions are relative to the object's size (bbox diagonal)."""

    iterations: int
    knots: int  # trajectory control points (capped at the number of captured times)
    max_size: int  # images larger than this (longest side, pixels) are downscaled before fitting
    times_per_step: int = 1
    init_points: int = 2000
    max_gaussians: int = 20000
    # densification (skipped in mesh mode)
    densify_from: int = 100
    densify_until_fraction: float = 0.7
    densify_every: int = 100
    grow_grad2d: float = 2e-4  # mean screen-space gradient (NDC units, gsplat's convention) to clone/split
    grow_scale: float = 0.01  # relative to the bbox diagonal: smaller Gaussians are cloned, larger ones split
    prune_opacity: float = 0.01
    prune_scale: float = 0.1  # relative to the bbox diagonal
    # learning rates
    lr_means: float = 1.6e-3  # × diagonal, decays ×0.01 over the run (as are the trajectory rates)
    lr_trajectory: float = 1.6e-3  # × diagonal
    lr_rotation: float = 3e-3  # radians
    lr_quats: float = 1e-3
    lr_scales: float = 5e-3
    lr_opacities: float = 5e-2
    lr_colors: float = 2.5e-2
    sh_degree: int = 0  # free Gaussians: SH bands of view-dependent colour above the base colour (sh.py)
    # free Gaussians: colour offsets over time in the trajectories, for lit captures whose shading changes as
    # parts turn. Held out (fast, 8 × 16 × 128²): horse-gallop studio-lit 26.32 → 27.15 dB, flat-lit 30.47 →
    # 30.83 dB, but the flat-lit chicken crossing 48.44 → 47.33 dB (the freedom overfits the training views), so
    # it is off by default (`--color-motion`)
    color_motion: bool = False
    lr_final: float = 0.01  # positions and trajectories decay exponentially to this fraction of their rate
    # loss weights
    ssim_weight: float = 0.2
    alpha_weight: float = 0.5
    pyramid_levels: int = 3  # extra L1 terms on 2×, 4×, 8× downsampled renders (see _pyramid_l1)
    pyramid_weight: float = 0.5
    smooth_weight: float = 1e-3
    # mesh path: weights of the ARAP term and of the graph's rigidity term (Sumner's E_reg). Once the mesh starts
    # at the silhouettes' rigid poses, weaker is better: mean vertex error on horse-gallop 6.43 / 4.90 / 3.89 /
    # 4.48 % at 1 / 0.2 / 0.05 / 0.01 (at 0.01 the edges stretch twice as much as the true animation's)
    arap_weight: float = 0.05
    mesh_nodes: int = 48  # mesh path: nodes of the deformation graph that moves the vertices while fitting
    graph_weight: float = 0.05
    lr_node_translation: float = 1e-2  # mesh path: × diagonal
    lr_node_rotation: float = 2e-2  # mesh path: radians
    mesh_lr_final: float = 0.1  # mesh path: the graph's rates decay to this fraction (large motions need steps late)
    # mesh path: after the rigid poses, the graph is bent into every time's silhouettes (mesh_pose.follow_silhouettes:
    # this many Adam steps, ARAP + E_reg weighted mesh_silhouette_reg), which reaches limbs the photometric fit
    # cannot. Measured (fast, 8 views × 16 frames × 128²): horse-gallop 7.49 → 5.81 % of the diagonal before the
    # photometric fit, 3.78 → 3.65 % after it; samba 3.33 → 2.73 %, 2.23 → 2.10 % (both with mesh_reg_final 0.01);
    # about 100 s
    mesh_silhouette_steps: int = 100
    mesh_silhouette_reg: float = 10.0
    # mesh path: arap_weight and graph_weight decay to this fraction by the last step. They are needed while the
    # mesh travels, but true animations stretch (samba's edges by 8.5 % on average), so at the end they pull it
    # off the images' optimum: started at the true motion, samba drifted to 1.59 % with them kept, 0.83 % without.
    # Full fit, samba: 2.19 / 2.10 / 2.10 % at 1 / 0.1 / 0.01, edges stretched 6.8 / 10.2 / 12.8 % (true: 8.5 %)
    mesh_reg_final: float = 0.1
    # mesh path: steps (unless the caller gives `iterations`) and captured times rendered per step. It has one
    # trajectory knot per time, so a step that sees more times moves more of them: at the same number of renders
    # (150 steps of 4 times against 600 of 1), samba started at the true motion drifted 1.59 % instead of 2.09 %,
    # and full fits gave the same error in half the time (the ARAP term is per step). 300 steps rather than 150:
    # horse-gallop 3.58 → 3.09 %, samba 2.10 → 2.02 %, about 1.6× the time (`iterations=150` for a quick look)
    # The ARAP term is taken at the step's times only (it was every time, every step: an SVD per vertex per time,
    # a third of the fit's time): horse-gallop 3.09 → 3.06 %, samba 2.02 → 2.01 %, the horse's fit 0.85× the time
    # (920 → 786 s, both fits side by side)
    mesh_iterations: int = 300
    mesh_times_per_step: int = 4
    # mesh path: how each vertex's Gaussian is drawn. It lies flat in the surface (σ across it = mesh_flatness × σ
    # along it, turned with the vertex normal at every time), σ along it is mesh_scale × the mean length of the
    # vertex's edges, and the rasterizer's low-pass filter is mesh_eps2d px² instead of 0.3. Round Gaussians of the
    # mean edge's size with the 0.3 px² filter overhang the true silhouette by 1.2 px (horse, samba at 128²), and
    # the fit shrinks the mesh to make up for it (samba started at the truth: −0.5 % of the diagonal along the
    # normals); these overhang by 0.3 px and open no holes (both measured rendering the true poses, 8 views)
    mesh_scale: float = 0.4
    mesh_flatness: float = 0.1
    mesh_eps2d: float = 0.03
    mesh_track: bool = True  # mesh path: start each time at the mesh's rigid pose found from the masks
    # mesh path: a rest mesh whose edges span more pixels than this is fitted subdivided (fine_enough): one Gaussian
    # per vertex cannot cover faces wider than that, and the fit pulls the vertices in. Measured with
    # benchmarks/bench_low_poly.py (a 122-vertex box, 3.5 px edges): travelling, 2.88 % of its diagonal off as it
    # is, 1.03 % subdivided once (1.7 px), 0.75 % twice (0.9 px, 1,922 vertices, 3.2× the time); swinging about a
    # hinge 4.01 / 1.85 / 1.35 %; the horse's rest mesh decimated to 256 vertices (4.0 px), from the true surface:
    # 1.23 % as it is, 0.98 % subdivided three times (16,160 vertices, 6.8× the time). The benchmark meshes' own
    # edges span 0.2–0.7 px at 128²: fitted as they are
    mesh_max_edge_px: float = 1.0
    # free Gaussians: with alpha masks, the initial Gaussians get the object's rigid motion per time from the
    # silhouettes (mesh_pose.track_rigid, as the mesh path) and carry it into times not yet open, so an object
    # that travels is followed: a box moving half its size over 8 times at 32² moved 0.07 of its 0.5 without it
    free_track: bool = True
    time_warmup: float = 0.2  # fraction of the iterations over which the sampled time window opens
    preview_every: int = 50


PRESETS: dict[str, Preset] = {
    # CPU: 8 views × 16 frames × 128². Measured on horse-gallop (benchmarks/render_views.py, 3 held-out views),
    # one torch thread on the shared 2-core machine: 241 s, held-out PSNR 31.1 dB / SSIM 0.967, 7,263
    # Gaussians, 0.9 GB peak RSS (initialisation 25.0 dB; 300 iterations 29.2 dB, static Gaussians 27.3 dB).
    # Two torch threads there were 8× slower per iteration (the cores were shared with other work).
    "fast": Preset(iterations=600, knots=16, max_size=128, times_per_step=1, init_points=2000, max_gaussians=8000),
    # GPU (gsplat): 16 views × 48 frames × 512², the rates the fast preset's scaled to the longer run, one knot
    # per frame so every frame can be fitted exactly. Measured on horse-gallop on an H200 (README's GPU table):
    # 33.50 dB / SSIM 0.981 held out, 49,621 Gaussians, 6.3 GB, 335 s (85 s of it the silhouettes' rigid start;
    # 38 s and 48 ms per step after batching that and removing the loop's host syncs)
    "quality": Preset(
        iterations=4000,
        knots=48,
        max_size=512,
        times_per_step=2,
        mesh_iterations=2000,  # as many renders as 4000 steps of 2 times; not measured on a GPU (no time left)
        init_points=5000,
        max_gaussians=100000,
        densify_every=100,
        lr_means=1.6e-4 * 4,
        lr_trajectory=1.6e-4 * 4,
        preview_every=200,
    ),
}


@dataclass
class FitResult:
    """What `fit` returns. history: one dict per logged step (step, loss, psnr of the batch, gaussians)."""

    model: DynamicGaussians
    seconds: float
    iterations: int
    history: list[dict[str, float]] = field(default_factory=list)
    preset: str = "fast"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rest_mesh: tuple[np.ndarray, np.ndarray] | None = None
    # mesh fits: the faces of the mesh the Gaussians are bound to (the rest mesh's own, or of its subdivision
    # when it was fitted subdivided: fine_enough), for terms over all the Gaussians such as a later ARAP
    bound_faces: np.ndarray | None = None
    # the first and last captured times: between 0 and the first, or the last and 1, the motion is not fitted
    captured_times: tuple[float, float] | None = None

    def vertex_frames(self, times: np.ndarray | list[float]) -> np.ndarray:
        """(T, V, 3) float32 vertex positions of the rest mesh at `times` (mesh-bound fits only)."""
        if self.rest_mesh is None:
            raise InputError("vertex_frames needs a fit with a rest mesh (fit(..., rest_mesh=(vertices, faces)))")
        with torch.no_grad():
            means = self.model.at(torch.as_tensor(np.asarray(times, dtype=np.float32)).reshape(-1))["means"]
        vertices = len(self.rest_mesh[0])  # a subdivided fit (fine_enough) has the midpoints' Gaussians after them
        return means[:, :vertices].detach().cpu().numpy().astype(np.float32)


# -- rendering and evaluation ------------------------------------------------------------------------------------


def _rasterize(*args: Any, **kwargs: Any):
    from backend.gaussians4d.rasterize import rasterize  # helper A's module; imported late (gsplat on CUDA)

    return rasterize(*args, **kwargs)


def render(
    model: DynamicGaussians,
    cameras,
    t: float,
    *,
    background=(1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render `model` at time `t` from `cameras` (a Cameras): rgb (C,H,W,3), alpha (C,H,W,1), meta."""
    device = model.means.device
    g = model.at(float(t))
    viewmats = torch.as_tensor(cameras.viewmats, device=device)
    Ks = torch.as_tensor(cameras.Ks, device=device)
    bg = torch.as_tensor(background, dtype=torch.float32, device=device).expand(len(cameras), 3)
    return _rasterize(
        g["means"], g["quats"], g["scales"], g["opacities"], model.colors_seen(g, viewmats), viewmats, Ks,
        cameras.width, cameras.height, backgrounds=bg, eps2d=model.config.eps2d,
    )  # fmt: skip


def evaluate(model: DynamicGaussians, video, *, background=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of `model`'s renders against every entry of `video` (e.g. held-out views)."""
    psnrs, ssims = [], []
    with torch.no_grad():
        for t in video.time_values():
            idx = np.flatnonzero(video.times == t)
            rgb, _, _ = render(model, video.cameras.subset(idx), float(t), background=background)
            for image, target in zip(rgb.cpu().numpy(), video.images[idx], strict=True):
                image = np.clip(image, 0.0, 1.0)
                psnrs.append(psnr(image, target))
                ssims.append(ssim(image, target))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


SH_RATE_DIVISOR = 20.0  # the higher SH bands learn at lr_colors / 20, as 3DGS's f_rest against f_dc


# -- optimizer bookkeeping ----------------------------------------------------------------------------------------


def _optimizer(
    model: DynamicGaussians, p: Preset, extent: float, graph: DeformationGraph | None = None
) -> torch.optim.Adam:
    """One Adam with a group per parameter (named, so densification can swap rows); frozen ones left out.
    With a deformation graph (mesh path) the graph's trajectories replace the per-vertex ones."""
    rates = {
        "means": p.lr_means * extent,
        "quats": p.lr_quats,
        "log_scales": p.lr_scales,
        "opacity_logits": p.lr_opacities,
        "colors": p.lr_colors,
        "sh_rest": p.lr_colors / SH_RATE_DIVISOR,
        "mean_ctrl": p.lr_trajectory * extent,
        "rot_ctrl": p.lr_rotation,
        "color_ctrl": p.lr_colors,
    }
    frozen = {"means", "quats", "mean_ctrl", "rot_ctrl"} if graph is not None else set()
    groups = []
    for name, param in model.per_gaussian_parameters().items():
        if name in frozen:
            param.requires_grad_(False)
            continue
        groups.append({"params": [param], "name": name, "lr": rates[name], "initial_lr": rates[name]})
    if graph is not None:
        for name, param, lr in (("node_translation", graph.translation, p.lr_node_translation * extent),
                                ("node_rotation", graph.rotation, p.lr_node_rotation)):  # fmt: skip
            groups.append({"params": [param], "name": name, "lr": lr, "initial_lr": lr})
    # fused on a GPU: one kernel per parameter group instead of a dozen (a step's cost there is launches)
    return torch.optim.Adam(groups, eps=1e-15, fused=model.means.is_cuda)


# -- losses --------------------------------------------------------------------------------------------------------


def _pyramid_l1(rgb, target, alpha, alphas, entries, p: Preset) -> torch.Tensor:
    """L1 of RGB (and alpha) on 2×, 4×, ... average-pooled images: a Gaussian far from where it belongs
    still overlaps the coarse pixels it should move to, so large motions get a gradient."""
    render = torch.cat([rgb, alpha], -1).permute(0, 3, 1, 2)
    goal = target if alphas is None else torch.cat([target, alphas[entries]], -1)
    goal = goal.permute(0, 3, 1, 2)
    if alphas is None:
        render = render[:, :3]
    total = rgb.new_zeros(())
    for _ in range(p.pyramid_levels):
        if min(render.shape[-2:]) < 4:
            break
        render, goal = F.avg_pool2d(render, 2, ceil_mode=True), F.avg_pool2d(goal, 2, ceil_mode=True)
        total = total + p.pyramid_weight * (render - goal).abs().mean()
    return total


def _second_difference(ctrl: torch.Tensor) -> torch.Tensor:
    if ctrl.shape[1] < 3:
        return ctrl.new_zeros(())
    return (ctrl[:, 2:] - 2 * ctrl[:, 1:-1] + ctrl[:, :-2]).pow(2).sum(-1).mean()


# -- the fit ---------------------------------------------------------------------------------------------------------


def _surface_quats(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mesh path: the orientation of each vertex's flat Gaussian, its third axis along the vertex normal."""
    return normal_quats(vertex_normals(positions, faces))


def _bake(model: DynamicGaussians, graph: DeformationGraph, basis: torch.Tensor, faces: torch.Tensor) -> None:
    """Set the model's per-vertex trajectories to the graph's motion, and its rotation trajectories to the turn
    of each vertex's normal frame from the rest pose (nearly exact at the captured times when the spline has one
    knot per time, least squares otherwise: spline_controls)."""
    with torch.no_grad():
        positions = graph.positions(basis)  # (T,V,3)
        ctrl = spline_controls(basis, (positions - model.means[None]).reshape(len(basis), -1))
        model.mean_ctrl.copy_(ctrl.reshape(basis.shape[1], len(model), 3).permute(1, 0, 2).to(model.mean_ctrl))
        rest = quat_conjugate_torch(F.normalize(model.quats, dim=-1))
        turn = quat_multiply_torch(_surface_quats(positions, faces), rest[None])
        rotvec = Rotation.from_quat(turn.reshape(-1, 4)[:, [1, 2, 3, 0]].cpu().double().numpy()).as_rotvec()
        ctrl = spline_controls(basis, torch.as_tensor(rotvec).reshape(len(basis), -1))
        model.rot_ctrl.copy_(ctrl.reshape(basis.shape[1], len(model), 3).permute(1, 0, 2).to(model.rot_ctrl))


def _resolve_preset(preset: str | Preset, iterations: int | None) -> tuple[str, Preset]:
    if isinstance(preset, Preset):
        name, p = "custom", preset
    elif preset in PRESETS:
        name, p = preset, PRESETS[preset]
    else:
        raise InputError(f"Unknown 4D Gaussian preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if iterations is not None:
        if int(iterations) < 1:
            raise InputError(f"iterations must be at least 1, got {iterations}")
        p = replace(p, iterations=int(iterations))
    return name, p


def _check_rest_mesh(rest_mesh) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(rest_mesh[0], dtype=np.float32)
    faces = np.asarray(rest_mesh[1])
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 3 or not np.isfinite(vertices).all():
        raise InputError(f"The rest mesh needs (V, 3) finite vertex positions (V ≥ 3), got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError(f"The rest mesh needs (F, 3) triangle indices; triangulate it first (got {faces.shape})")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(f"The rest mesh's faces index vertex {int(faces.max())}, but it has {len(vertices)} vertices")
    return vertices, faces.astype(np.int64)


MESH_SCALE_LIMIT = 3.0  # a rest mesh more than this × the captured object's size is in other units
SUBDIVIDED_MAX_VERTICES = 20_000  # subdividing stops before this many vertices


def edge_pixels(video, vertices: np.ndarray, faces: np.ndarray, max_size: int) -> float:
    """The rest mesh's median edge length in pixels of the fit's images (cameras at their mean distance)."""
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    length = float(np.median(np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)))
    distance = float(np.linalg.norm(video.cameras.centers() - vertices.mean(0), axis=1).mean())
    scale = min(1.0, max_size / max(video.width, video.height))
    return length * float(np.mean(video.cameras.Ks[:, 0, 0])) * scale / max(distance, 1e-9)


def fine_enough(
    video, mesh: tuple[np.ndarray, np.ndarray], max_size: int, max_edge_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """The rest mesh as the fit binds it: subdivided at its edges' midpoints while its edges span over
    `max_edge_px` pixels (a low-poly proxy), up to SUBDIVIDED_MAX_VERTICES. Its own vertices stay first and in
    order (midpoints are added after them), so the fit's first V Gaussians are its V vertices."""
    import trimesh

    vertices, faces = mesh
    while edge_pixels(video, vertices, faces, max_size) > max_edge_px:
        finer, finer_faces = trimesh.remesh.subdivide(vertices, faces)
        if len(finer) > SUBDIVIDED_MAX_VERTICES:
            break
        vertices, faces = np.asarray(finer, np.float32), np.asarray(finer_faces, np.int64)
    return vertices, faces


def _subdivided(video, mesh, bound, max_size: int) -> str:
    span = edge_pixels(video, *mesh, max_size)
    return (
        f"The rest mesh's edges span {span:.1f} px of the fit's images, wider than one Gaussian per vertex covers: "
        f"fitted subdivided ({len(bound[0])} vertices, one Gaussian each, so the fit takes longer); its own "
        f"{len(mesh[0])} come back"
    )


def subdivision_note(video, rest_mesh: tuple[np.ndarray, np.ndarray], preset: str | Preset = "fast") -> str | None:
    """What the user hears before the fit when the rest mesh will be fitted subdivided (fine_enough), else None
    (also for a mesh the fit refuses: in other units, say, whose edges would look wide)."""
    _, p = _resolve_preset(preset, None)
    try:
        mesh = _check_rest_mesh(rest_mesh)
        _check_mesh_in_capture(video, *mesh)
    except InputError:
        return None  # the fit says why
    bound = fine_enough(video, mesh, p.max_size, p.mesh_max_edge_px)
    return _subdivided(video, mesh, bound, p.max_size) if len(bound[0]) > len(mesh[0]) else None


DENSE_MESH_VERTICES = 50_000  # a rest mesh above this many vertices gets a warning when fitted on the CPU


def dense_mesh_warning(vertex_count: int, device: str) -> str | None:
    """A warning for a rest mesh whose fit will be slow on the CPU (one Gaussian per vertex; the silhouette
    stages and every step move each vertex at every time), or None. Measured on the 2-core machine, horse-gallop
    capture of 8 views × 16 times, two torch threads, the silhouette stages and 3 photometric steps: 10,242
    vertices 110 s and 1.3 GB peak RSS; 163,842 vertices 1,149 s and 6.7 GB."""
    if vertex_count <= DENSE_MESH_VERTICES or not str(device).startswith("cpu"):
        return None
    return (
        f"The rest mesh has {vertex_count:,} vertices, one Gaussian each: on the CPU its fit is slow (164k vertices "
        "took 19 minutes and 6.7 GB before the fit proper, 10k two minutes). Decimate it to 10,000–20,000 vertices "
        "(e.g. a Decimate modifier) for a fit in minutes, or fit on a GPU."
    )


def fit_warnings(
    video, rest_mesh: tuple[np.ndarray, np.ndarray] | None, device: str, preset: str | Preset = "fast"
) -> list[str]:
    """What the user should hear before a fit starts: nothing moves, images without the object, a mesh too dense
    for the CPU, a rest mesh that looks turned against the capture, a coarse one that is fitted subdivided."""
    notes = [video.still_warning(), video.empty_warning()]
    if rest_mesh is not None:
        notes += [dense_mesh_warning(len(rest_mesh[0]), device), orientation_warning(video, *rest_mesh)]
        notes.append(subdivision_note(video, rest_mesh, preset))
    return [note for note in notes if note]


def _check_mesh_in_capture(video, vertices: np.ndarray, faces: np.ndarray) -> None:
    """InputError when the rest mesh cannot be the captured object: far larger than the space the object
    occupies over the clip (the visual hull of its masks, or without masks the region every camera sees), or
    under a hundredth of it (other units: cm against m), or, without masks (where it is not moved to the
    silhouettes first), out of every camera's view. Sizes are of the vertices the faces use; a loose vertex
    (no face uses it) far from them is named."""
    used = np.zeros(len(vertices), bool)
    used[np.asarray(faces).ravel()] = True
    vertices = np.asarray(vertices, np.float64)
    lo_mesh, hi_mesh = vertices[used].min(0), vertices[used].max(0)
    size = float(np.linalg.norm(hi_mesh - lo_mesh))
    away = np.maximum(lo_mesh - vertices, 0.0) + np.maximum(vertices - hi_mesh, 0.0)
    stray = np.flatnonzero(~used & (np.linalg.norm(away, axis=1) > 0.5 * size))
    if len(stray):
        raise InputError(
            f"The rest mesh has {len(stray)} loose vertex(es) that no face uses, far from the mesh (vertex "
            f"{int(stray[0])} at {np.round(vertices[stray[0]], 4).tolist()}): remove them (Blender: Edit Mode → "
            "Mesh → Clean Up → Delete Loose) and export the mesh again."
        )
    lo, hi = video.bounds()
    captured = float(np.linalg.norm(hi - lo))
    masks = video.alphas is not None
    where = "the visual hull of its alpha masks" if masks else "the region every camera sees"
    if size > MESH_SCALE_LIMIT * captured or (masks and size < captured / 100.0):
        example = (
            "a mesh in centimetres in a capture in metres is 100× too big"
            if size > captured
            else "a mesh in metres in a capture in centimetres is 100× too small"
        )
        raise InputError(
            f"The rest mesh is {size / captured:.3g}× the size of the captured object (diagonal {size:.4g} against "
            f"{captured:.4g}, {where}): give the mesh in the capture's units and coordinates ({example})."
        )
    if not masks:
        xy, depth = video.cameras.project(((vertices.min(0) + vertices.max(0)) / 2)[None].astype(np.float32))
        x, y, d = xy[:, 0, 0], xy[:, 0, 1], depth[:, 0]
        if not ((d > 0) & (x >= 0) & (x < video.width) & (y >= 0) & (y < video.height)).any():
            raise InputError(
                "The rest mesh lies outside every camera's view, and without alpha masks it is not moved to the "
                "object first: give it in the capture's coordinates, or capture RGBA images (masks)."
            )


def fit(
    video,
    *,
    preset: str | Preset = "fast",
    iterations: int | None = None,
    rest_mesh: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    check_cancelled: Callable[[], None] | None = None,
    preview: Callable[[int, DynamicGaussians], None] | None = None,
    device: str = "cpu",
    seed: int = 0,
    sh_degree: int | None = None,
    color_motion: bool | None = None,
) -> FitResult:
    """Fit DynamicGaussians to `video` (a MultiViewVideo). See the module docstring for the method.

    rest_mesh: (vertices (V,3), faces (F,3)) binds one Gaussian to each vertex (mesh path 1). progress:
    progress("fit", fraction, message). check_cancelled: called every iteration (raises JobCancelled).
    preview: preview(step, model) every preset.preview_every iterations. sh_degree: view-dependent colour, SH
    bands 0–3; color_motion: colours that change over time (default: the preset's, 0 and off). Raises
    InputError for unusable input and when the GPU runs out of memory.
    """
    name, p = _resolve_preset(preset, iterations)
    if sh_degree is not None:
        if not 0 <= int(sh_degree) <= MAX_SH_DEGREE:
            raise InputError(f"The SH degree (view-dependent colour) must be 0 to {MAX_SH_DEGREE}, got {sh_degree}.")
        p = replace(p, sh_degree=int(sh_degree))
    if color_motion is not None:
        p = replace(p, color_motion=bool(color_motion))
    if len(video) == 0:
        raise InputError("The multi-view video has no frames")
    mesh = bound = None if rest_mesh is None else _check_rest_mesh(rest_mesh)
    if mesh is not None:
        _check_mesh_in_capture(video, mesh[0], mesh[1])
        steps = p.iterations if iterations else p.mesh_iterations
        p = replace(p, times_per_step=p.mesh_times_per_step, iterations=steps)
        bound = fine_enough(video, mesh, p.max_size, p.mesh_max_edge_px)
        if len(bound[0]) > len(mesh[0]) and progress is not None:  # the why is in fit_warnings, said before
            progress("fit", 0.0, f"fitting the rest mesh subdivided: {len(bound[0])} Gaussians for its {len(mesh[0])}")
    try:
        result = _fit(video, name, p, bound, progress, check_cancelled, preview, torch.device(device), seed)
        if mesh is not None:
            result.rest_mesh = (mesh[0], mesh[1].astype(np.int32))  # the user's mesh: its vertices lead the model
            result.bound_faces = bound[1].astype(np.int32)
        return result
    except torch.cuda.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise InputError(
            f"The GPU ran out of memory fitting {video.images.shape[2]}×{video.images.shape[1]} images with the "
            f"'{name}' preset; use the 'fast' preset or capture at a lower resolution ({exc.__class__.__name__})"
        ) from exc


def _initial_model(video, p: Preset, knots: int, mesh, rng: np.random.Generator) -> tuple[DynamicGaussians, float]:
    first = video.time_windows()[0]
    if mesh is not None:
        vertices, faces = mesh
        colors = sample_colors(video, vertices, first)
        sizes = p.mesh_scale * vertex_edge_lengths(vertices, faces)
        model = DynamicGaussians.from_points(vertices, colors, sizes, knots=knots, opacity=0.9, sh_degree=p.sh_degree)
        model.config = replace(model.config, eps2d=p.mesh_eps2d)
        with torch.no_grad():  # flat, in the rest surface; the fit turns them with it (rotation trajectories)
            model.log_scales[:, 2] += float(np.log(p.mesh_flatness))
            model.quats.copy_(_surface_quats(model.means, torch.as_tensor(faces)))
        extent = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
        return model, extent
    lo, hi = video.bounds()
    extent = float(np.linalg.norm(np.asarray(hi, np.float64) - np.asarray(lo, np.float64)))
    points = initial_points(video, p.init_points, rng)
    colors = sample_colors(video, points, first)
    model = DynamicGaussians.from_points(
        points, colors, knn_scale(points), knots=knots, opacity=0.3, sh_degree=p.sh_degree, color_motion=p.color_motion
    )
    return model, extent


# free Gaussians: a rigid start that misses a time's silhouettes by this × their size, and by over
# RIGID_START_MISS_PX pixels, is lost there (left out, interpolated: _rigid_start). The floor is for small
# objects: a chicken 5 px across, tracked within 1.6 px RMS over its walk, was dropped by the relative rule alone
# and its Gaussians stayed where it started
RIGID_START_MISS = 0.25
RIGID_START_MISS_PX = 2.0
# free Gaussians: an object whose silhouettes' size (square root of their area) changes more than this factor
# over the clip (a scale animation, a pop-in) gets a uniform scale per time in its rigid start. Below it, scale
# is left out: it would fit noise (the chicken crossing, 1.3×: path 2's motion 2.09 → 2.93 % with it). Measured
# by benchmarks/bench_size_start.py: held-out 29.2 → 41.1 dB on a block growing 0.3 → 1×, 33.2 → 40.8 dB
# shrinking, 26.7 → 36.0 dB popping in from 0.05×
GROWS = 1.5


@dataclass
class _KnotMotion:
    """A rigid motion x' = R_k (x − centre) + centre + τ_k at each trajectory knot k (least squares over the
    captured times' poses), as the offsets of free Gaussians' control points."""

    rotations: torch.Tensor  # (K,3) axis-angle
    matrices: torch.Tensor  # (K,3,3)
    translations: torch.Tensor  # (K,3)
    centre: torch.Tensor  # (3,)

    def offsets(self, means: torch.Tensor, knots: slice) -> torch.Tensor:
        """(N, k, 3) mean offsets at `knots` of Gaussians whose canonical means are `means` (N,3)."""
        local = means - self.centre
        moved = torch.einsum("kij,nj->nki", self.matrices[knots], local) + self.translations[knots][None]
        return moved - local[:, None]

    def carry(self, model: DynamicGaussians, last: int) -> None:
        """Control points after `last` (just set to the last reached one) move on by the rigid motion since it."""
        step = self.offsets(model.means, slice(last + 1, None)) - self.offsets(model.means, slice(last, last + 1))
        model.mean_ctrl[:, last + 1 :] += step
        if model.rot_ctrl is not None:
            model.rot_ctrl[:, last + 1 :] += self.rotations[last + 1 :] - self.rotations[last]


def lost_times(costs: np.ndarray, size_px: float) -> np.ndarray:
    """(T,) bool: the times where the silhouettes' rigid poses lost the object: their RMS silhouette distance
    (`RigidPoses.costs`, pixels) is not finite, or over RIGID_START_MISS × the object's size in pixels and over
    RIGID_START_MISS_PX."""
    costs = np.asarray(costs, np.float64)
    return ~np.isfinite(costs) | (costs > max(RIGID_START_MISS * size_px, RIGID_START_MISS_PX))


def _rigid_start(model: DynamicGaussians, frames, windows, basis, progress, check_cancelled) -> _KnotMotion | None:
    """Free Gaussians start on the object's rigid motion per time, found from the silhouettes (track_rigid) of
    each time window (`MultiViewVideo.time_windows`: the times themselves, or a moving camera's consecutive
    images). A window whose silhouettes it misses by RIGID_START_MISS of their size (and by more than
    RIGID_START_MISS_PX; a fast turn can throw the tracker) is left out, its pose interpolated from the others':
    starting every Gaussian still instead would waste the poses that hold, and cameras that move with the object
    (a following ring) see nothing of Gaussians left where it started. An object whose silhouettes grow or
    shrink by over GROWS (a scale animation, a pop-in) gets a uniform scale per time as well. Returns the motion
    per knot, or None (they start still) when every window is missed."""

    def placed(done: int, total: int) -> None:
        if progress is not None:
            progress("fit", 0.0, f"following the object's silhouettes: time {done}/{total}")

    means = model.means.detach()
    grows = size_change(frames.alphas, windows) > GROWS  # scale animation, pop-in: poses with a size too
    poses = track_rigid(means, frames.alphas, frames.viewmats, frames.Ks, windows, scale=grows,
                        check_cancelled=check_cancelled, on_progress=placed)  # fmt: skip
    entry_time = np.empty(len(frames.alphas), np.float64)
    for ti, entries in enumerate(frames.groups):
        entry_time[entries] = frames.times[ti]
    window_times = np.array([entry_time[w].mean() for w in windows])  # a window's pose is at its mean time
    log.info("free Gaussians placed by silhouettes, RMS distance per time (px): %s", np.round(poses.costs, 2))
    size = float((frames.alphas > 0.5).flatten(1).sum(1).float().mean().sqrt())  # the object's size, pixels
    lost = lost_times(poses.costs, size)
    if lost.all():
        return None  # the tracker lost the object: start still, as without masks
    if lost.any():
        log.info("rigid poses left out (interpolated) at windows %s", np.flatnonzero(lost).tolist())
    kept = np.flatnonzero(~lost)
    # sizes relative to the first kept window's: the Gaussians were carved from the first window's masks, inside
    # its silhouettes, so the tracker finds them a few percent small at every time; only growth is motion
    scales = poses.rotations.new_zeros(len(poses.rotations)) if poses.log_scales is None else poses.log_scales
    relative = scales - scales[kept[0]]
    per_time = (_at_times(poses.rotations[kept], window_times[kept], frames.times),
                _at_times(poses.translations[kept], window_times[kept], frames.times),
                _at_times(relative[kept, None], window_times[kept], frames.times))  # fmt: skip
    rotations, translations, log_scales = (spline_controls(basis, v).to(means) for v in per_time)
    matrices = quat_to_rotmat(axis_angle_to_quat(rotations)) * log_scales.exp()[:, :, None]  # (K,3,3) scaled
    motion = _KnotMotion(rotations, matrices, translations, poses.centre.to(means))
    with torch.no_grad():
        model.mean_ctrl.copy_(motion.offsets(means, slice(None)))
        if model.rot_ctrl is not None:
            model.rot_ctrl.copy_(rotations[None].expand_as(model.rot_ctrl))
    return motion


def _at_times(values: torch.Tensor, known: np.ndarray, times: np.ndarray) -> torch.Tensor:
    """(T, D) `values` (W, D) known at the sorted `known` times, at `times`: linear between them, extended linearly
    beyond the first and the last (a moving camera's windows are centred inside the clip, not at its ends); one
    known value holds at every time."""
    if len(known) == len(times) and np.array_equal(known, times):
        return values
    if len(known) == 1:
        return values[:1].expand(len(times), -1)
    v = values.detach().cpu().double().numpy()
    i = np.clip(np.searchsorted(known, times) - 1, 0, len(known) - 2)
    w = (np.asarray(times, np.float64) - known[i]) / (known[i + 1] - known[i])
    return torch.as_tensor(v[i] * (1 - w[:, None]) + v[i + 1] * w[:, None]).to(values)


def _fit(video, name, p: Preset, mesh, progress, check_cancelled, preview, device, seed) -> FitResult:
    start = _time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    frames = prepare_frames(video, p.max_size, device)
    background = background_colour(video)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    n_times = len(frames.times)
    windows = video.time_windows()  # the times, or a moving camera's consecutive images taken as one time
    # a knot per window at most (+1 for the ends): a moving camera's single images do not each fix a pose
    knots = max(1, min(p.knots, n_times, len(windows) + 1))
    model, extent = _initial_model(video, p, knots, mesh, rng)
    model.to(device)
    basis = model.basis(frames.times)  # (T,K)
    warmup = max(1, int(p.time_warmup * p.iterations))
    arap = graph = faces = None
    # the silhouettes' rigid start needs every time seen from 2+ views: one silhouette leaves depth open
    seen_twice = video.fixed_cameras()
    if mesh is not None:
        faces = torch.as_tensor(mesh[1], device=device)
        arap = Arap.from_mesh(model.means.detach(), mesh[1])
        graph = DeformationGraph(model.means.detach(), p.mesh_nodes, knots)
        track = p.mesh_track and frames.alphas is not None and seen_twice
        if track and not masks_outline_the_object(frames.alphas):
            log.warning("the alpha masks do not outline the object (opaque everywhere): the mesh starts where it is")
            track = False
        if track:

            def placed(done: int, total: int) -> None:
                if progress is not None:
                    progress("fit", 0.0, f"placing the mesh from the silhouettes: time {done}/{total}")

            def bending(done: int, total: int) -> None:
                if progress is not None:
                    progress("fit", 0.0, f"bending the mesh into the silhouettes: step {done}/{total}")

            placed(0, n_times)
            poses = track_rigid(
                model.means.detach(), frames.alphas, frames.viewmats, frames.Ks, frames.groups,
                check_cancelled=check_cancelled, on_progress=placed,
            )  # fmt: skip
            log.info("mesh placed by silhouettes, RMS distance per time (px): %s", np.round(poses.costs, 2))
            graph.start_at(poses.rotations, poses.translations, poses.centre, basis)
            if p.mesh_silhouette_steps > 0:
                bending(0, p.mesh_silhouette_steps)
                bent = follow_silhouettes(
                    graph, basis, lambda x: arap(x) + graph.regularizer(basis),
                    frames.alphas, frames.viewmats, frames.Ks, frames.groups,
                    steps=p.mesh_silhouette_steps, reg_weight=p.mesh_silhouette_reg,
                    check_cancelled=check_cancelled, on_progress=bending,
                )  # fmt: skip
                log.info("mesh bent into the silhouettes, RMS distance per time (px): %s", np.round(bent, 2))
            with torch.no_grad():  # colours from where the mesh is at the first time
                posed = graph.positions(basis[:1])[0].cpu().numpy()
                model.colors.copy_(torch.as_tensor(sample_colors(video, posed, frames.groups[0])).to(model.colors))
            warmup = 1  # every time already starts at its pose: no need to carry the motion forward
    rigid = None  # free Gaussians: the object's rigid motion per knot (see Preset.free_track)
    if mesh is None and p.free_track and len(windows) > 1 and frames.alphas is not None:
        if masks_outline_the_object(frames.alphas):
            rigid = _rigid_start(model, frames, windows, basis, progress, check_cancelled)
    optimizer = _optimizer(model, p, extent, graph)
    densify_until = int(p.densify_until_fraction * p.iterations)
    screen = ScreenGradients(len(model), device)
    history: list[dict[str, float]] = []
    final_lr = {"means": p.lr_final, "mean_ctrl": p.lr_final, "rot_ctrl": p.lr_final}
    final_lr.update(node_translation=p.mesh_lr_final, node_rotation=p.mesh_lr_final)
    log.info("fitting %d Gaussians (%d knots) to %d images, %d times", len(model), knots, len(video), n_times)
    # made once: index tensors and the basis on the host (a tensor made from host values, or read back to it, in
    # the loop waits for the GPU's queue to empty, so the host could not run ahead of the GPU)
    entry_index = [torch.as_tensor(group, device=device) for group in frames.groups]
    views, intrinsics = [frames.viewmats[i] for i in entry_index], [frames.Ks[i] for i in entry_index]
    basis_host = basis.detach().cpu()
    logged_loss = 0.0

    for it in range(p.iterations):
        if check_cancelled is not None:
            check_cancelled()
        progress_fraction = it / max(1, p.iterations - 1)
        for group in optimizer.param_groups:
            if group["name"] in final_lr:
                group["lr"] = group["initial_lr"] * final_lr[group["name"]] ** progress_fraction
        # progressive time window: the first `open_count` times are sampled
        open_count = max(1, min(n_times, int(np.ceil(n_times * (it + 1) / warmup))))
        chosen = rng.choice(open_count, size=min(p.times_per_step, open_count), replace=False)

        # every chosen time at once (one trajectory evaluation, one loss over all their images): the host's
        # work per step, not the GPU's, is what a step costs on a GPU
        weights = torch.cat([basis[ti : ti + 1] for ti in chosen])  # rows picked on the device, no host copy
        gaussians = model.at_weights(weights)
        if graph is not None:
            gaussians["means"] = graph.positions(weights)
            gaussians["quats"] = _surface_quats(gaussians["means"], faces)
        # one rasterizer call for all of them when they have as many views each (a batch), else one per time
        sizes = {len(entry_index[ti]) for ti in chosen}
        calls = [list(range(len(chosen)))] if len(sizes) == 1 else [[j] for j in range(len(chosen))]
        rgbs, alphas, means2d = [], [], []
        for call in calls:
            viewmats = torch.stack([views[chosen[j]] for j in call])
            Ks = torch.stack([intrinsics[chosen[j]] for j in call])
            seen = [{key: value[j] for key, value in gaussians.items()} for j in call]
            batch = {key: gaussians[key][call[0] : call[-1] + 1] for key in ("means", "quats", "scales", "opacities")}
            rgb, alpha, meta = _rasterize(
                batch["means"], batch["quats"], batch["scales"], batch["opacities"],
                torch.stack([model.colors_seen(g, v) for g, v in zip(seen, viewmats, strict=True)]),
                viewmats, Ks, frames.width, frames.height,
                backgrounds=bg.expand(*viewmats.shape[:2], 3), eps2d=model.config.eps2d,
            )  # fmt: skip
            rgbs.append(rgb.flatten(0, 1))
            alphas.append(alpha.flatten(0, 1))
            m2d = meta.get("means2d")
            if isinstance(m2d, torch.Tensor) and m2d.requires_grad:
                if not m2d.is_leaf:
                    m2d.retain_grad()
                means2d.append((m2d, meta["radii"]))
        entries = torch.cat([entry_index[ti] for ti in chosen])
        rgb, alpha, target = torch.cat(rgbs), torch.cat(alphas), frames.images[entries]
        loss = (1 - p.ssim_weight) * (rgb - target).abs().mean()
        loss = loss + p.ssim_weight * (1 - ssim_torch(rgb, target).mean())
        if frames.alphas is not None and p.alpha_weight > 0:
            loss = loss + p.alpha_weight * (alpha - frames.alphas[entries]).abs().mean()
        if p.pyramid_levels > 0:
            loss = loss + _pyramid_l1(rgb, target, alpha, frames.alphas, entries, p)
        with torch.no_grad():
            batch_psnr = -10 * torch.log10(((rgb - target) ** 2).mean().clamp_min(1e-10))
        if p.smooth_weight > 0 and knots >= 3:
            smooth = _second_difference(model.mean_ctrl) / extent**2
            if model.rot_ctrl is not None:
                smooth = smooth + _second_difference(model.rot_ctrl)
            if model.color_ctrl is not None:
                smooth = smooth + _second_difference(model.color_ctrl)
            loss = loss + p.smooth_weight * smooth
        if graph is not None:
            # ARAP at this step's times (Preset.mesh_times_per_step); the graph's rigidity, cheap, at every time
            shape = p.arap_weight * arap(gaussians["means"]) + p.graph_weight * graph.regularizer(basis)
            loss = loss + p.mesh_reg_final**progress_fraction * shape
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

        if mesh is None and it < densify_until:
            images_in_loss = sum(len(frames.groups[ti]) for ti in chosen)
            for m2d, radii in means2d:
                screen.add(m2d, radii, frames.width, frames.height, images_in_loss)
        optimizer.step()

        with torch.no_grad():
            # control points no open time reaches yet follow the last reached one (see module docstring)
            if open_count < n_times:
                reached = basis_host[:open_count].amax(0) > 1e-6
                last = int(torch.nonzero(reached).max())
                if last + 1 < knots:
                    free = [model.mean_ctrl, model.rot_ctrl, model.color_ctrl]
                    held = free if graph is None else [graph.translation, graph.rotation]
                    for ctrl in held:
                        if ctrl is not None:
                            ctrl[:, last + 1 :] = ctrl[:, last : last + 1]
                    if rigid is not None:  # ... moved on by the object's rigid motion from there
                        rigid.carry(model, last)

        step = it + 1
        if mesh is None and p.densify_from <= step < densify_until and step % p.densify_every == 0:
            added, removed = densify_and_prune(
                model,
                optimizer,
                screen.mean(),
                grow_grad2d=p.grow_grad2d,
                grow_scale=p.grow_scale * extent,
                prune_opacity=p.prune_opacity,
                prune_scale=p.prune_scale * extent,
                max_gaussians=p.max_gaussians,
                generator=generator,
            )
            screen = ScreenGradients(len(model), device)
            log.debug("step %d: +%d −%d Gaussians → %d", step, added, removed, len(model))

        if step % 10 == 0 or step == p.iterations:  # the loss is read back here only
            logged_loss = loss.item()
            history.append(
                {
                    "step": step,
                    "loss": logged_loss,
                    "psnr": float(batch_psnr),
                    "gaussians": len(model),
                }
            )
        if progress is not None:
            progress(
                "fit",
                step / p.iterations,
                f"step {step}/{p.iterations}, {len(model)} Gaussians"
                + (f", loss {logged_loss:.4f}" if history else ""),
            )
        if graph is not None and (step == p.iterations or (preview is not None and step % p.preview_every == 0)):
            _bake(model, graph, basis, faces)
        if preview is not None and (step % p.preview_every == 0 or step == p.iterations):
            preview(step, model)

    seconds = _time.perf_counter() - start
    return FitResult(
        model=model,
        seconds=seconds,
        iterations=p.iterations,
        history=history,
        preset=name,
        background=background,
        rest_mesh=None if mesh is None else (mesh[0], mesh[1].astype(np.int32)),
        captured_times=(float(video.times.min()), float(video.times.max())),
    )
