"""From a generated multi-view video to 4D: Animate3D's two stages (anchors-4d §2.1, "Animation stage").

1. Reconstruction: the generated video (V views × F frames, each view at a known world camera) becomes a
   `MultiViewVideo` and `backend.gaussians4d.fit.fit` fits dynamic Gaussians to it — bound to the user's mesh,
   one Gaussian per vertex with an ARAP term (mesh path 1), when a rest mesh is given; free Gaussians otherwise.
2. Refinement: `sds_steps` more steps on the fitted motion (the per-vertex / per-Gaussian trajectory control
   points) with the reconstruction loss against the generated frames, ARAP over the mesh edges, and 4D-SDS
   (`sds(renders (V,F,H,W,3)) -> loss`, see sds.py) on renders of every view and frame, weighted small as in
   Animate3D (λ 0.01 of an L2 ×100 / mask ×100 reconstruction, i.e. 1e-4 relative).

The generated views have no alpha: the foreground is estimated from the known background of the condition
renders (white), see `estimate_alpha`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import InputError

from ..gaussians4d.data import KEY_HIGH, KEY_LOW, keyed_alpha

log = logging.getLogger(__name__)

BACKGROUND = (1.0, 1.0, 1.0)
# Foreground estimate: a pixel's largest channel distance from white; below LOW it is background, above HIGH
# object, linear between (soft edges, as the VAE blurs the silhouette over a pixel or two): the 4D fit's keying of
# plain backgrounds (gaussians4d.data.keyed_alpha).
ALPHA_LOW, ALPHA_HIGH = KEY_LOW, KEY_HIGH

SdsLoss = Callable[[torch.Tensor], torch.Tensor]


def estimate_alpha(images: np.ndarray, background=BACKGROUND) -> np.ndarray:
    """(..., H, W, 3) images over a known plain background → (..., H, W) float32 foreground alpha in [0, 1]."""
    return keyed_alpha(images, background)


def frame_times(frames: int) -> np.ndarray:
    """(F,) float32 times of the generated frames, evenly over [0, 1]."""
    return (np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)).astype(np.float32)


def generated_video(frames: np.ndarray, alphas: np.ndarray | None, c2w: np.ndarray, fov_x: float):
    """A MultiViewVideo of generated frames (V, F, H, W, 3) seen from world cameras c2w (V, 4, 4) (OpenGL
    camera→world, horizontal field of view fov_x radians); alphas (V, F, H, W) or None (estimated)."""
    from ..plugins.gaussians4d import video_from_arrays

    frames = np.asarray(frames, np.float32)
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise InputError(f"Generated frames must be (V, F, H, W, 3), got {frames.shape}")
    v, f, h, w, _ = frames.shape
    c2w = np.asarray(c2w, np.float32)
    if c2w.shape != (v, 4, 4):
        raise InputError(f"Need one camera→world matrix per generated view, (V, 4, 4) = {(v, 4, 4)}, got {c2w.shape}")
    if alphas is None:
        alphas = estimate_alpha(frames)
    alphas = np.asarray(alphas, np.float32)
    if alphas.shape != (v, f, h, w):
        raise InputError(f"Alphas must be (V, F, H, W) = {(v, f, h, w)}, got {alphas.shape}")
    if not (alphas > 0.5).any():
        raise InputError(
            "The generated views show no object (every pixel is the white background): the model produced empty "
            "frames; try another seed or prompt."
        )
    # video_from_arrays composites straight colour over white: un-composite so the frames come back unchanged
    a = alphas[..., None]
    white = np.asarray(BACKGROUND, np.float32)
    straight = np.where(a > 1e-3, (frames - (1.0 - a) * white) / np.maximum(a, 1e-3), frames)
    arrays = {
        "images": np.clip(straight, 0.0, 1.0).reshape(v * f, h, w, 3),
        "alphas": alphas.reshape(v * f, h, w),
        "c2w": np.repeat(c2w, f, axis=0),  # view-major, as the capture collector sends them
        "times": np.tile(frame_times(f), v),
    }
    return video_from_arrays(arrays, float(fov_x))


@dataclass
class AnimateResult:
    """What `animate` returns: the fit (its model refined in place), the output times, SDS history."""

    fit: object  # backend.gaussians4d.fit.FitResult
    times: np.ndarray
    refine_history: list[dict[str, float]]
    seconds: float


def animate(
    frames: np.ndarray,
    alphas: np.ndarray | None,
    c2w: np.ndarray,
    fov_x: float,
    rest_mesh: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    preset="fast",
    iterations: int | None = None,
    sds: SdsLoss | None = None,
    sds_steps: int = 0,
    sds_weight: float = 1e-4,
    progress: Callable[[str, float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    preview: Callable[[int, object], None] | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> AnimateResult:
    """Reconstruct (stage 1) then refine with 4D-SDS (stage 2) the motion in a generated multi-view video.

    frames (V, F, H, W, 3) float32 in [0, 1] over white; alphas (V, F, H, W) or None (estimated); c2w (V, 4, 4)
    world camera→world (OpenGL) of each view; fov_x radians. rest_mesh (vertices (N,3), faces (M,3)): the
    object's mesh in the same world space (mesh path 1), else free Gaussians (path 2). Stage 2 runs when
    `sds_steps` > 0; without `sds` it refines with the reconstruction and ARAP terms only. progress:
    progress(stage, fraction 0..1 over both stages, message).
    """
    from ..gaussians4d.fit import fit

    start = time.perf_counter()
    report = progress or (lambda stage, fraction, message: None)
    report("reconstruct", 0.0, f"reconstruct: fitting the motion to {frames.shape[0]}×{frames.shape[1]} views")
    video = generated_video(frames, alphas, c2w, fov_x)
    share = 0.7 if sds_steps > 0 else 1.0
    result = fit(
        video,
        preset=preset,
        iterations=iterations,
        rest_mesh=rest_mesh,
        progress=lambda stage, f, msg: report("reconstruct", share * f, f"reconstruct: {msg}"),
        check_cancelled=check_cancelled,
        preview=preview,
        device=device,
        seed=seed,
    )
    history: list[dict[str, float]] = []
    if sds_steps > 0:
        report("refine", share, f"refine: {sds_steps} steps" + (" with 4D-SDS" if sds is not None else ""))
        history = refine(
            result,
            video,
            sds=sds,
            steps=sds_steps,
            sds_weight=sds_weight,
            progress=lambda f, msg: report("refine", share + (1 - share) * f, f"refine: {msg}"),
            check_cancelled=check_cancelled,
            seed=seed,
        )
    return AnimateResult(result, video.time_values(), history, time.perf_counter() - start)


def animate_mesh(
    frames: np.ndarray,
    alphas: np.ndarray | None,
    c2w: np.ndarray,
    fov_x: float,
    rest_mesh: tuple[np.ndarray, np.ndarray],
    **kwargs,
) -> tuple[np.ndarray, object]:
    """`animate` with the object's mesh: (vertex_frames (F, N, 3) float32, FitResult)."""
    if rest_mesh is None:
        raise InputError("animate_mesh needs the object's rest mesh (vertices, faces)")
    out = animate(frames, alphas, c2w, fov_x, rest_mesh, **kwargs)
    return out.fit.vertex_frames(out.times), out.fit


# -- stage 2 --------------------------------------------------------------------------------------------------


def refine(
    result,
    video,
    *,
    sds: SdsLoss | None,
    steps: int,
    sds_weight: float = 1e-4,
    lr: float = 2e-4,
    arap_weight: float = 1.0,
    progress: Callable[[float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Optimise the fitted model's trajectories (in place) for `steps` steps: L1 of RGB + alpha against the
    video at one random time, ARAP of every time against the rest mesh (mesh fits), and `sds_weight`·sds of
    renders of every view at every time. lr is relative to the object's size. Returns the history."""
    from ..gaussians4d.fit import render
    from ..gaussians4d.fit_setup import prepare_frames
    from ..gaussians4d.mesh_bound import Arap

    model = result.model
    device = model.means.device
    frames = prepare_frames(video, max(video.width, video.height), device)
    times = frames.times
    cameras = [video.cameras.subset(group) for group in frames.groups]  # each time's views, in view order
    extent = float(np.linalg.norm(np.ptp(model.means.detach().cpu().numpy(), axis=0))) or 1.0
    params = [p for p in (model.mean_ctrl, model.rot_ctrl) if p is not None]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [model.mean_ctrl], "lr": lr * extent}] + (
        [{"params": [model.rot_ctrl], "lr": lr}] if model.rot_ctrl is not None else []))  # fmt: skip
    arap = None
    if result.bound_faces is not None:  # over every Gaussian, the midpoints of a subdivided fit too
        arap = Arap.from_mesh(model.means.detach(), result.bound_faces)
    bg = torch.tensor(result.background, dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    for step in range(steps):
        if check_cancelled is not None:
            check_cancelled()
        ti = int(rng.integers(len(times)))
        entries = torch.as_tensor(frames.groups[ti], device=device)
        rgb, alpha, _ = render(model, cameras[ti], float(times[ti]), background=bg)
        recon = (rgb - frames.images[entries]).abs().mean()
        if frames.alphas is not None:
            recon = recon + (alpha - frames.alphas[entries]).abs().mean()
        loss = recon
        record = {"step": step + 1, "recon": float(recon.detach())}
        if arap is not None:
            term = arap(model.at(torch.as_tensor(times))["means"])
            loss = loss + arap_weight * term
            record["arap"] = float(term.detach())
        if sds is not None:
            renders = [render(model, cameras[i], float(t), background=bg)[0] for i, t in enumerate(times)]
            renders = torch.stack(renders, dim=1)  # (V, F, H, W, 3)
            term = sds(renders.clamp(0.0, 1.0))
            loss = loss + sds_weight * term
            record["sds"] = float(term.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record["loss"] = float(loss.detach())
        history.append(record)
        if progress is not None:
            progress((step + 1) / steps, f"step {step + 1}/{steps}, loss {record['loss']:.4f}")
    for p in params:
        p.requires_grad_(False)
    return history
