"""psnr / ssim against closed forms and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from backend.gaussians4d.metrics import psnr, ssim, ssim_torch


def test_psnr_of_a_constant_error_is_closed_form():
    a = np.full((8, 8, 3), 0.5, dtype=np.float32)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # −10 log10(0.01)
    assert psnr(a, a) == float("inf")


def test_ssim_matches_scikit_image_and_is_one_on_identical_images():
    rng = np.random.default_rng(1)
    a = rng.random((40, 36, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert ssim(a, b) == pytest.approx(ref, abs=2e-3)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ssim(a, b))


def test_ssim_torch_is_batched_and_differentiable():
    a = torch.rand(2, 16, 16, 3, requires_grad=True)
    b = torch.rand(2, 16, 16, 3)
    out = ssim_torch(a, b)
    assert out.shape == (2,)
    out.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
