"""Image metrics for fitted renders: PSNR and SSIM (Wang et al. 2004, 11×11 Gaussian window, σ = 1.5).

`psnr`/`ssim` take one image pair (H, W, 3) in [0, 1] (numpy or torch) and return floats; `ssim_torch` is the
batched, differentiable form the fitter uses in its loss. SSIM uses 'valid' windows (no padding), as
scikit-image's `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
data_range=1)` does after cropping its border, so the two agree to a few 1e-3.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_C1 = 0.01**2
_C2 = 0.03**2


def _as_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(image.detach() if isinstance(image, torch.Tensor) else np.asarray(image))
    return t.to(torch.float64)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"expected (H, W, 3) images, got shape {tuple(a.shape)}")


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (any equal shapes); inf for identical images."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    _check_pair(ta, tb)
    mse = float(((ta - tb) ** 2).mean())
    return float("inf") if mse == 0.0 else float(-10.0 * np.log10(mse))


def _window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim_torch(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable mean SSIM per image: a, b (B, H, W, C) in [0, 1] → (B,). Needs H, W ≥ window."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (B, H, W, C) batches of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    channels = a.shape[-1]
    g = _window(window, sigma, a.dtype, a.device)
    x = torch.stack([a, b], 0).flatten(0, 1).permute(0, 3, 1, 2)  # (2B, C, H, W)

    def blur(img: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' windows
        img = F.conv2d(img, g.view(1, 1, 1, -1).expand(channels, 1, 1, window), groups=channels)
        return F.conv2d(img, g.view(1, 1, -1, 1).expand(channels, 1, window, 1), groups=channels)

    n = a.shape[0]
    mu = blur(x)
    mu_a, mu_b = mu[:n], mu[n:]
    xa, xb = x[:n], x[n:]
    sigma_a = blur(xa * xa) - mu_a * mu_a
    sigma_b = blur(xb * xb) - mu_b * mu_b
    sigma_ab = blur(xa * xb) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * sigma_ab + _C2)
    den = (mu_a * mu_a + mu_b * mu_b + _C1) * (sigma_a + sigma_b + _C2)
    return (num / den).mean(dim=(1, 2, 3))


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean SSIM of two (H, W, 3) images in [0, 1] (also (H, W)); 1.0 for identical images."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    _check_pair(ta, tb)
    if ta.ndim == 2:
        ta, tb = ta[..., None], tb[..., None]
    return float(ssim_torch(ta[None], tb[None])[0])
