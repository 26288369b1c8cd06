"""animate: a "generated" multi-view video (here: renders of a hinged box swinging, 4 views on a ring like the
model's cameras, over white with no alpha) → stage 1 moves the box's own mesh, stage 2 refines with an SDS
term that really reaches the trajectories. Tiny sizes and few steps: method and plumbing, not quality."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.gaussians4d.cameras import nerf_c2w
from backend.mvdiff.animate import ALPHA_LOW, animate, animate_mesh, estimate_alpha, frame_times, generated_video
from shared.errors import InputError

pytestmark = pytest.mark.timeout(60)

_spec = importlib.util.spec_from_file_location(
    "moving_scenes_for_mvdiff", Path(__file__).resolve().parents[1] / "gaussians4d" / "moving_scenes.py"
)
scenes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenes)

SIZE = 40
TIMES = frame_times(3)
FOV = np.radians(40.0)


@pytest.fixture(scope="module")
def hinge():
    """(frames (V,F,H,W,3), true alphas (V,F,H,W), c2w (V,4,4), rest mesh, true vertex frames (F,N,3))."""
    torch.set_num_threads(1)
    cams = scenes.cameras(4, SIZE, elevation_deg=15.0)
    video = scenes.hinge_video(cams, TIMES, SIZE)  # entries time-major: t0 views, t1 views, ...
    v, f = len(cams), len(TIMES)
    frames = video.images.reshape(f, v, SIZE, SIZE, 3).transpose(1, 0, 2, 3, 4)
    alphas = video.alphas.reshape(f, v, SIZE, SIZE).transpose(1, 0, 2, 3)
    vertices, faces = scenes.hinge_mesh()
    truth = np.stack([scenes.hinge_pose(vertices, t) for t in TIMES]).astype(np.float32)
    return frames, alphas, nerf_c2w(cams).astype(np.float32), (vertices, faces), truth


def test_alpha_is_estimated_from_the_white_background(hinge):
    frames, alphas, *_ = hinge
    estimate = estimate_alpha(frames)
    assert estimate.shape == alphas.shape and estimate.dtype == np.float32
    assert estimate.min() == 0.0 and estimate.max() == 1.0
    solid, empty = alphas > 0.95, alphas < 0.01
    assert (estimate[solid] > 0.5).mean() > 0.95  # the object's colours are far from white
    assert (estimate[empty] == 0.0).all()


def test_the_generated_video_is_view_major_with_each_views_camera(hinge):
    frames, _, c2w, *_ = hinge
    video = generated_video(frames, None, c2w, FOV)
    assert len(video) == 4 * 3 and video.view_count() == 4
    # view 2, frame 1; pixels within ALPHA_LOW of white count as background (and become white)
    np.testing.assert_allclose(video.images[3 * 2 + 1], frames[2, 1], atol=ALPHA_LOW + 1e-6)
    np.testing.assert_allclose(nerf_c2w(video.cameras)[3 * 2 + 1], c2w[2], atol=1e-5)
    np.testing.assert_allclose(video.times[:3], TIMES)


def test_empty_or_misshaped_generations_are_input_errors(hinge):
    frames, _, c2w, *_ = hinge
    with pytest.raises(InputError, match="show no object"):
        generated_video(np.ones_like(frames), None, c2w, FOV)
    with pytest.raises(InputError, match="one camera"):
        generated_video(frames, None, c2w[:3], FOV)
    with pytest.raises(InputError, match=r"\(V, F, H, W, 3\)"):
        generated_video(frames[0], None, c2w, FOV)


def test_stage_one_moves_the_objects_own_mesh_towards_the_generated_motion(hinge):
    frames, _, c2w, mesh, truth = hinge
    positions, result = animate_mesh(frames, None, c2w, FOV, mesh, iterations=60)
    vertices = mesh[0]
    assert positions.shape == (3, len(vertices), 3) and positions.dtype == np.float32
    assert result.rest_mesh is not None and len(result.model) >= len(vertices)  # subdivided when coarse
    assert result.bound_faces.max() == len(result.model) - 1  # a term over the mesh reaches every Gaussian
    diagonal = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    error = np.linalg.norm(positions - truth, axis=-1).mean(axis=1) / diagonal
    motion = np.linalg.norm(truth - vertices, axis=-1).mean(axis=1) / diagonal
    assert error[-1] < 0.75 * motion[-1], (error, motion)  # followed part of the swing in 60 steps at 40²


def test_stage_two_sds_gradient_reaches_the_trajectories_and_lowers_the_sds_term(hinge):
    """A stand-in SDS whose target is the true last frame: refinement must lower it (the real 4D-SDS is in
    test_sds with the tiny model)."""
    frames, _, c2w, mesh, _ = hinge
    target = torch.as_tensor(frames)
    seen = []

    def sds(renders: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(renders.shape))
        assert renders.requires_grad
        return ((renders - target) ** 2).sum()

    out = animate(frames, None, c2w, FOV, mesh, iterations=30, sds=sds, sds_steps=12, sds_weight=1e-2)
    assert seen and seen[0] == (4, 3, SIZE, SIZE, 3)
    history = out.refine_history
    assert len(history) == 12 and {"recon", "arap", "sds", "loss"} <= set(history[0])
    assert history[-1]["sds"] < history[0]["sds"]
    assert out.fit.model.mean_ctrl.requires_grad is False  # handed back frozen, as fit leaves it


def test_path_two_without_a_mesh_gives_free_gaussians(hinge):
    frames, _, c2w, _, _ = hinge
    out = animate(frames, None, c2w, FOV, None, iterations=8, sds_steps=2)
    assert out.fit.rest_mesh is None and len(out.fit.model) > 0
    assert [h["step"] for h in out.refine_history] == [1, 2] and "arap" not in out.refine_history[0]
