"""Differentiable rasterization of 3D Gaussians: gsplat on CUDA, a pure-PyTorch path everywhere else.

The torch path follows gsplat's "classic" rasterizer: EWA splatting (the 3D covariance R S Sᵀ Rᵀ is taken to
the camera and through the Jacobian of the perspective projection, plus a 0.3 px² low-pass `eps2d`), each
Gaussian cut at 3σ, front-to-back alpha compositing per pixel in depth order, alpha clamped at 0.99, pairs
with alpha < 1/255 skipped, and a pixel stops once its transmittance would fall to 1e-4. gsplat clamps alpha
at 0.999 and cuts at an opacity-dependent radius of up to 3.33σ, so the two differ by at most ~1e-2 at the
rims of footprints and at saturated pixels.

Instead of 16-px tiles padded to the busiest tile's count, the torch path works on the exact list of
(pixel, Gaussian) pairs inside each Gaussian's 3σ ellipse: pairs are generated per Gaussian in depth order,
grouped by pixel with one stable integer sort, and composited with a segmented cumulative sum of
log(1 − alpha) (float64, so long pixel runs keep their precision). Every tensor is as long as the number of
real pairs — no padding and no pixels outside a footprint — and plain autograd through it is fast enough,
so there is no custom backward. Cameras are processed in groups to bound memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shared.errors import InputError

EPS2D = 0.3  # px², added to the projected covariance (gsplat's low-pass filter)
CUTOFF_SIGMA = 3.0  # Gaussians are cut at this Mahalanobis radius
MAX_ALPHA = 0.99
MIN_ALPHA = 1.0 / 255.0
MIN_TRANSMITTANCE = 1e-4
MAX_PAIRS_PER_GROUP = 8_000_000  # (pixel, Gaussian) candidates generated at once; bounds the index memory


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    backgrounds: torch.Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render N Gaussians into C cameras.

    Args:
        means (N, 3), quats (N, 4) wxyz (need not be normalised), scales (N, 3) positive, opacities (N,) in
        (0, 1), colors (N, D) or per camera (C, N, D); viewmats (C, 4, 4) world→camera (OpenCV), Ks (C, 3, 3);
        backgrounds (C, D) or None (black).
        backend: "torch", "gsplat" (CUDA only) or "auto" (gsplat when the tensors are on CUDA and gsplat
        imports, else torch).

    Returns:
        rgb (C, H, W, D), alpha (C, H, W, 1), and meta with "means2d" (C, N, 2) projected centres in pixels
        (its `.grad` is filled by backward when the inputs require grad), "radii" (C, N) int32 (0 = not
        visible) and "depths" (C, N) camera-space z.
    """
    N, C = _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    if backend not in ("auto", "torch", "gsplat"):
        raise InputError(f"Unknown rasterizer backend {backend!r}; use 'auto', 'torch' or 'gsplat'.")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available())
    if use_gsplat:
        if not means.is_cuda:
            raise InputError("The gsplat rasterizer needs CUDA tensors; use backend='torch' on the CPU.")
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, near_plane, far_plane
        )

    means2d, conics, depths, radii, half_extent = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, near_plane=near_plane, far_plane=far_plane
    )
    if means2d.requires_grad:
        means2d.retain_grad()
    if backgrounds is None:
        backgrounds = torch.zeros(C, colors.shape[-1], dtype=colors.dtype, device=colors.device)
    rgb, alpha = _composite(means2d, conics, depths, half_extent, opacities, colors, backgrounds, width, height)
    return rgb, alpha, {"means2d": means2d, "radii": radii, "depths": depths}


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz quaternions (normalised here) → (N, 3, 3) rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*quats.shape[:-1], 3, 3)


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = EPS2D,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of N Gaussians into C pinhole cameras.

    Returns means2d (C, N, 2) pixels, conics (C, N, 3) = upper triangle (a, b, c) of the inverse 2D covariance,
    depths (C, N), radii (C, N) int32 (0 = culled: outside the near/far range, degenerate, or off-image) and
    half_extent (C, N, 2): the 3σ half-widths in x and y of the footprint (no grad).
    """
    M = quat_to_rotmat(quats) * scales[:, None, :]  # (N, 3, 3): columns are the scaled principal axes
    cov3d = M @ M.transpose(-1, -2)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    cov_cam = R[:, None] @ cov3d[None] @ R.transpose(-1, -2)[:, None]  # (C, N, 3, 3)
    x, y, z = p.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    valid = (z > near_plane) & (z < far_plane)
    z_safe = torch.where(valid, z, torch.ones_like(z))
    # Like gsplat, the Jacobian is taken at a point clamped to 1.3× the field of view, so Gaussians far off
    # screen do not blow up into huge footprints.
    lim_x_pos = (width - cx) / fx + 0.3 * width / (2 * fx)
    lim_x_neg = cx / fx + 0.3 * width / (2 * fx)
    lim_y_pos = (height - cy) / fy + 0.3 * height / (2 * fy)
    lim_y_neg = cy / fy + 0.3 * height / (2 * fy)
    tx = z_safe * torch.minimum(torch.maximum(x / z_safe, -lim_x_neg), lim_x_pos)
    ty = z_safe * torch.minimum(torch.maximum(y / z_safe, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z_safe, zero, -fx * tx / z_safe**2, zero, fy / z_safe, -fy * ty / z_safe**2], -1).reshape(
        *z.shape, 2, 3
    )
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], -1)
    with torch.no_grad():
        half_extent = CUTOFF_SIGMA * torch.stack([a, c], -1).clamp_min(0).sqrt()
        on_image = (means2d + half_extent > 0).all(-1)
        on_image &= (means2d[..., 0] - half_extent[..., 0] < width) & (means2d[..., 1] - half_extent[..., 1] < height)
        valid = valid & on_image
        radii = torch.where(valid, torch.ceil(half_extent.amax(-1)), torch.zeros_like(z)).to(torch.int32)
        half_extent = half_extent * valid[..., None]
    return means2d, conics, z, radii, half_extent


def _composite(means2d, conics, depths, half_extent, opacities, colors, backgrounds, width, height):
    """Front-to-back alpha compositing of the projected Gaussians over exact (pixel, Gaussian) pairs."""
    C, N = depths.shape
    D = colors.shape[-1]
    rgb_out, alpha_out = [], []
    for cams in _camera_groups(half_extent, width, height):
        pix, cam, gid = _pairs(means2d, conics, depths, half_extent, opacities, cams, width, height)
        flat = cam * N + gid  # index into the (C·N) flattened per-camera tensors
        m2d = means2d.reshape(C * N, 2)[flat]
        con = conics.reshape(C * N, 3)[flat]
        px = (pix % width).to(m2d.dtype) + 0.5
        py = torch.div(pix % (width * height), width, rounding_mode="floor").to(m2d.dtype) + 0.5
        dx, dy = px - m2d[:, 0], py - m2d[:, 1]
        sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
        alpha = (opacities[gid] * torch.exp(-sigma)).clamp_max(MAX_ALPHA)
        log_t, starts = _exclusive_segment_logsum(torch.log1p(-alpha), pix)
        with torch.no_grad():  # gsplat stops a pixel before the Gaussian that would take T to 1e-4
            keep = (log_t + torch.log1p(-alpha)) > math.log(MIN_TRANSMITTANCE)
        weight = alpha * torch.exp(log_t) * keep
        local = pix - cams[0] * width * height
        n_pix = len(cams) * width * height
        acc = torch.zeros(n_pix, dtype=weight.dtype, device=weight.device).index_add(0, local, weight)
        col = colors[gid] if colors.dim() == 2 else colors.reshape(C * N, D)[flat]
        img = torch.zeros(n_pix, D, dtype=col.dtype, device=col.device).index_add(0, local, weight[:, None] * col)
        img = img.reshape(len(cams), height * width, D)
        acc = acc.reshape(len(cams), height * width, 1)
        img = img + (1 - acc) * backgrounds[cams][:, None, :]
        rgb_out.append(img.reshape(len(cams), height, width, D))
        alpha_out.append(acc.reshape(len(cams), height, width, 1))
    return torch.cat(rgb_out), torch.cat(alpha_out)


def composite_dense(means2d, conics, depths, radii, opacities, colors, backgrounds, width, height):
    """Reference compositor for tests and benchmarks: every pixel against every visible Gaussian, same rules
    as the pair compositor (3σ cut, alpha clamp and threshold, early stop), O(C·H·W·N) memory.
    colors (N, D) or (C, N, D), backgrounds (C, D); returns rgb (C, H, W, D) and alpha (C, H, W, 1)."""
    C, N = depths.shape
    colors = colors.expand(C, N, colors.shape[-1]) if colors.dim() == 2 else colors
    order = torch.argsort(torch.where(radii > 0, depths, torch.inf).detach(), dim=1)
    take = lambda x: torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    m, k, col = take(means2d), take(conics), take(colors)
    vis = torch.gather(radii > 0, 1, order)
    op = opacities[order]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(m.dtype) + 0.5  # (P, 2)
    d = pix[None, :, None, :] - m[:, None, :, :]  # (C, P, N, 2)
    kk = k[:, None]
    sigma = 0.5 * (kk[..., 0] * d[..., 0] ** 2 + kk[..., 2] * d[..., 1] ** 2) + kk[..., 1] * d[..., 0] * d[..., 1]
    raw = op[:, None, :] * torch.exp(-sigma)
    inside = vis[:, None, :] & (sigma >= 0) & (sigma <= 0.5 * CUTOFF_SIGMA**2) & (raw >= MIN_ALPHA)
    alpha = torch.where(inside, raw.clamp_max(MAX_ALPHA), torch.zeros_like(raw))
    log_t = torch.cumsum(torch.log1p(-alpha), -1) - torch.log1p(-alpha)
    keep = (log_t + torch.log1p(-alpha)).detach() > math.log(MIN_TRANSMITTANCE)
    weight = alpha * torch.exp(log_t) * keep
    acc = weight.sum(-1, keepdim=True)  # (C, P, 1)
    rgb = torch.einsum("cpn,cnd->cpd", weight, col) + (1 - acc) * backgrounds[:, None, :]
    return rgb.reshape(C, height, width, -1), acc.reshape(C, height, width, 1)


def _camera_groups(half_extent: torch.Tensor, width: int, height: int) -> list[torch.Tensor]:
    """Consecutive camera indices grouped so that each group generates at most MAX_PAIRS_PER_GROUP candidates."""
    with torch.no_grad():
        box = (2 * half_extent[..., 0] + 1).clamp_max(width) * (2 * half_extent[..., 1] + 1).clamp_max(height)
        per_cam = (box * (half_extent[..., 0] > 0)).sum(-1).tolist()
    groups, current, load = [], [], 0.0
    for c, n in enumerate(per_cam):
        if current and load + n > MAX_PAIRS_PER_GROUP:
            groups.append(current)
            current, load = [], 0.0
        current.append(c)
        load += n
    groups.append(current)
    return [torch.tensor(g, device=half_extent.device) for g in groups]


@torch.no_grad()
def _pairs(means2d, conics, depths, half_extent, opacities, cams, width, height):
    """(pixel, camera, Gaussian) triples for the cameras `cams` whose alpha passes the cut-offs, grouped by
    global pixel index (camera·H·W + row·W + col) and front to back within each pixel."""
    N = depths.shape[1]
    m2d, con, he = means2d[cams].detach(), conics[cams].detach(), half_extent[cams]
    vis = he[..., 0] > 0
    # Front-to-back order: sort each camera's visible Gaussians by depth (invisible ones go last).
    order = torch.argsort(torch.where(vis, depths[cams].detach(), torch.inf), dim=1, stable=True)
    n_vis = vis.sum(1)
    sel = torch.arange(N, device=order.device)[None, :] < n_vis[:, None]
    cam_local, rank = torch.nonzero(sel, as_tuple=True)
    gid = order[cam_local, rank]
    m, h, k = m2d[cam_local, gid], he[cam_local, gid], con[cam_local, gid]
    # Pixels whose centres (j + 0.5, i + 0.5) lie inside the 3σ box.
    x0 = torch.ceil(m[:, 0] - h[:, 0] - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(m[:, 0] + h[:, 0] - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(m[:, 1] - h[:, 1] - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(m[:, 1] + h[:, 1] - 0.5).clamp(-1, height - 1).long()
    bw, bh = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    counts = bw * bh
    owner = torch.repeat_interleave(torch.arange(len(gid), device=gid.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(owner), device=owner.device) - start[owner]
    bw_o = bw[owner]
    px = x0[owner] + local % bw_o
    py = y0[owner] + torch.div(local, bw_o, rounding_mode="floor")
    dx = px.to(m.dtype) + 0.5 - m[owner, 0]
    dy = py.to(m.dtype) + 0.5 - m[owner, 1]
    ko = k[owner]
    sigma = 0.5 * (ko[:, 0] * dx * dx + ko[:, 2] * dy * dy) + ko[:, 1] * dx * dy
    g_owner = gid[owner]
    alpha = opacities.detach()[g_owner] * torch.exp(-sigma)
    keep = (sigma >= 0) & (sigma <= 0.5 * CUTOFF_SIGMA**2) & (alpha >= MIN_ALPHA)
    owner, px, py, g_owner = owner[keep], px[keep], py[keep], g_owner[keep]
    cam = cams[cam_local[owner]]
    pix = (cam * height + py) * width + px
    # Pairs were made front to back; a stable sort by pixel keeps that order within each pixel.
    pix, perm = torch.sort(pix, stable=True)
    return pix, cam[perm], g_owner[perm]


def _exclusive_segment_logsum(values: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For `values` grouped in runs of equal `segments`, the sum of the earlier values of the same run
    (float64 cumulative sum, returned in the values' dtype), and the index of each run's first element."""
    with torch.no_grad():
        is_start = torch.ones_like(segments, dtype=torch.bool)
        is_start[1:] = segments[1:] != segments[:-1]
        idx = torch.arange(len(segments), device=segments.device)
        starts = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), 0).values
    total = torch.cumsum(values.double(), 0)
    exclusive = total - values.double()
    return (exclusive - exclusive[starts]).to(values.dtype), starts


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds):
    if means.dim() != 2 or means.shape[-1] != 3:
        raise InputError(f"means must have shape (N, 3), got {tuple(means.shape)}.")
    N = means.shape[0]
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise InputError(f"viewmats must have shape (C, 4, 4), got {tuple(viewmats.shape)}.")
    C = viewmats.shape[0]
    expected = {
        "quats": (quats, (N, 4)),
        "scales": (scales, (N, 3)),
        "opacities": (opacities, (N,)),
        "Ks": (Ks, (C, 3, 3)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise InputError(
                f"{name} must have shape {shape} for {N} Gaussians and {C} cameras, got {tuple(tensor.shape)}."
            )
    if not (colors.dim() == 2 and colors.shape[0] == N) and not (colors.dim() == 3 and colors.shape[:2] == (C, N)):
        raise InputError(f"colors must have shape (N, D) or (C, N, D) with N={N}, C={C}, got {tuple(colors.shape)}.")
    if backgrounds is not None and tuple(backgrounds.shape) != (C, colors.shape[-1]):
        raise InputError(f"backgrounds must have shape ({C}, {colors.shape[-1]}), got {tuple(backgrounds.shape)}.")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"Image size must be positive, got {width}×{height}.")
    return N, C


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # gsplat absent or its CUDA extension failing to load
        return False
    return True


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, near_plane, far_plane
):
    try:
        import gsplat
    except ImportError as exc:
        raise InputError("backend='gsplat' needs the gsplat package (pip install gsplat==1.5.3 packaging).") from exc
    rgb, alpha, info = gsplat.rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=EPS2D,
        backgrounds=backgrounds,
        packed=False,
    )
    means2d = info["means2d"]  # (C, N, 2), non-leaf; gsplat fills its grad in backward
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = info["radii"]
    if radii.dim() == 3:  # gsplat ≥ 1.5 gives per-axis radii (C, N, 2)
        radii = torch.where((radii > 0).all(-1), radii.amax(-1), torch.zeros_like(radii[..., 0]))
    return rgb, alpha, {"means2d": means2d, "radii": radii.to(torch.int32), "depths": info["depths"]}
