"""Differentiable rasterization of 3D Gaussians: gsplat on CUDA, a pure-PyTorch path everywhere else.

The torch path follows gsplat's "classic" rasterizer: EWA splatting (the 3D covariance R S Sᵀ Rᵀ is taken to
the camera and through the Jacobian of the perspective projection, plus a 0.3 px² low-pass `eps2d`),
front-to-back alpha compositing per pixel in depth order, alpha clamped at 0.999, pairs with alpha < 1/255
skipped (so each Gaussian reaches out to √(2 ln(255·opacity)) σ, at most 3.33σ: gsplat's opacity-aware
footprint), and a pixel stops before the Gaussian that would take its transmittance to 1e-4. These are
gsplat's rules, so the two paths agree to float precision (measured on an H200, tests/.../test_rasterize.py).
An earlier version cut every Gaussian at 3σ and clamped at 0.99: where a few footprints' rims overlapped,
its pixels differed from gsplat's by up to 0.012.

How the torch path is fast enough on a CPU:
- 4×4-px tiles. Each (tile, Gaussian) overlap of the footprints' boxes is listed, sorted by tile with the Gaussians
  front to back (one int32 sort of ~0.7 M entries for the benchmark scene). 4-px tiles evaluate ~2.2× the
  pixels inside the footprints; 16-px tiles evaluate ~7× and ran 1.5–2× slower in total.
- Tiles are taken in order of their Gaussian count and chunked, each chunk padded to its busiest tile and
  kept under MAX_TILE_ELEMENTS (tile × Gaussian × pixel) entries, so padding stays small and memory bounded.
- The exponent is a quadratic in the tile-local pixel coordinates, so σ for a whole chunk is one matrix
  product (T·K, 6) @ (6, P); transmittance is a cumulative product of (1 − α) along the Gaussians.
- The compositing step is a torch.autograd.Function with its backward written out (suffix sums of w·(c·g)),
  which keeps two (T, K, P) tensors instead of a dozen; projection and the per-(tile, Gaussian) coefficients
  stay on plain autograd.

Measured (benchmarks/bench_rasterize.py: 8 cameras × 128², Gaussians in a ball of radius 0.5 seen from 2.5 m,
σ ≈ 1–3 px, loss on rgb and alpha, forward + backward, median of 3, 2-core shared machine):

    .venv/bin/python benchmarks/bench_rasterize.py --threads 1

    N Gaussians          forward s  backward s  total s  CPU s
    1,000                    0.068       0.080    0.148  0.145
    2,000                    0.111       0.123    0.234  0.234
    5,000                    0.293       0.271    0.563  0.563
    10,000                   0.449       0.482    0.930  0.911
    dense reference, 500     2.300       2.485    4.786  4.747   (39× ours at 500)

One torch thread beside one other job (gsplat's footprint rules, which reach a little past 3σ). An earlier run
of the 3σ version, while other jobs kept the machine's load at 5–6, had wall times about twice the CPU time and
the same CPU time: ~0.55 s for 5,000 Gaussians. With 2 threads on that busy machine the times got 2–3× *worse*
(threads waiting on descheduled siblings): use 2 threads only when both cores are free.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from backend.motion.rotations import quat_to_matrix_torch
from shared.errors import InputError

log = logging.getLogger(__name__)

EPS2D = 0.3  # px², added to the projected covariance (gsplat's low-pass filter)
MAX_EXTENT = 3.33  # σ: the widest footprint (gsplat's); below it, alpha 1/255 is where a Gaussian ends
MAX_ALPHA = 0.999
MIN_ALPHA = 1.0 / 255.0
MIN_TRANSMITTANCE = 1e-4
TILE = 4  # px
MAX_TILE_ELEMENTS = 4_000_000  # tiles × padded Gaussians × tile pixels composited at once (bounds memory)
_GSPLAT_ERROR: list[str] = []  # why gsplat cannot be used in this process, once known ("auto" then uses torch)


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
    eps2d: float = EPS2D,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render N Gaussians into C cameras.

    Args:
        means (N, 3), quats (N, 4) wxyz (need not be normalised), scales (N, 3) positive, opacities (N,) in
        (0, 1), colors (N, D) or per camera (C, N, D); viewmats (C, 4, 4) world→camera (OpenCV), Ks (C, 3, 3);
        backgrounds (C, D) or None (black). eps2d: px² added to each projected covariance (a low-pass filter
        that keeps sub-pixel Gaussians visible; it also widens them, so a surface's silhouette overhangs).
        backend: "torch", "gsplat" (CUDA only) or "auto" (gsplat when the tensors are on CUDA and gsplat
        imports, else torch).

    Returns:
        rgb (C, H, W, D), alpha (C, H, W, 1), and meta with "means2d" (C, N, 2) projected centres in pixels
        (its `.grad` is filled by backward when the inputs require grad), "radii" (C, N) int32 (0 = not
        visible) and "depths" (C, N) camera-space z.

    A batch: B sets of N Gaussians (a scene at B times), each seen by its own C cameras, in one call. Every
    input but width and height gains a leading B axis (means (B, N, 3), ..., viewmats (B, C, 4, 4), backgrounds
    (B, C, D)) and so does every output. gsplat renders a batch in one go (one set of launches and waits for all
    B: what a fit's step costs on a GPU); the torch path renders its items one after the other.

    The means2d gradient is d loss / d (pixel position), on both backends; gsplat's densifier scales it by
    (W/2, H/2) and the number of images in the loss before comparing it with `grow_grad2d`.
    """
    batched = means.dim() == 3
    inputs = (means, quats, scales, opacities, colors, viewmats, Ks)
    if batched:
        _check_batch(*inputs, backgrounds)
        _check_inputs(*(x[0] for x in inputs), width, height, None if backgrounds is None else backgrounds[0])
    else:
        _check_inputs(*inputs, width, height, backgrounds)
    if backend not in ("auto", "torch", "gsplat"):
        raise InputError(f"Unknown rasterizer backend {backend!r}; use 'auto', 'torch' or 'gsplat'.")
    if backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available()):
        if not means.is_cuda:
            raise InputError("The gsplat rasterizer needs CUDA tensors; use backend='torch' on the CPU.")
        try:
            return _rasterize_gsplat(
                means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                backgrounds, near_plane, far_plane, eps2d,
            )  # fmt: skip
        except (ImportError, OSError) as exc:  # gsplat's CUDA extension failed to build or load
            if backend == "gsplat":
                raise InputError(f"gsplat could not load its CUDA kernels ({exc}); use backend='torch'.") from exc
            log.warning("gsplat could not load its CUDA kernels (%s); rasterizing with the PyTorch path", exc)
            _GSPLAT_ERROR.append(str(exc))

    if backgrounds is None:
        backgrounds = colors.new_zeros((*viewmats.shape[:-2], colors.shape[-1]))
    if not batched:
        inputs, backgrounds = tuple(x[None] for x in inputs), backgrounds[None]
    means, quats, scales, opacities, colors, viewmats, Ks = inputs
    options = {"near_plane": near_plane, "far_plane": far_plane, "eps2d": eps2d}
    projected = [
        project_gaussians(
            means[b], quats[b], scales[b], viewmats[b], Ks[b], width, height, opacities=opacities[b], **options
        )
        for b in range(means.shape[0])
    ]
    # the projected centres on the path to the images (a batch's in one tensor), so that their .grad, which
    # densification reads, is filled by backward
    if batched:
        means2d = torch.stack([p[0] for p in projected])
        centres = list(means2d)
    else:
        means2d = projected[0][0]
        centres = [means2d]
    if means2d.requires_grad:
        means2d.retain_grad()
    images = [
        _composite(centres[b], conics, depths, half_extent, opacities[b], colors[b], backgrounds[b], width, height)
        for b, (_, conics, depths, _, half_extent) in enumerate(projected)
    ]
    if not batched:
        (rgb, alpha), (_, _, depths, radii, _) = images[0], projected[0]
        return rgb, alpha, {"means2d": means2d, "radii": radii, "depths": depths}
    rgb, alpha = torch.stack([i[0] for i in images]), torch.stack([i[1] for i in images])
    radii, depths = torch.stack([p[3] for p in projected]), torch.stack([p[2] for p in projected])
    return rgb, alpha, {"means2d": means2d, "radii": radii, "depths": depths}


def _check_batch(means, quats, scales, opacities, colors, viewmats, Ks, backgrounds):
    """A batch's inputs all have the same leading B axis (see `rasterize`)."""
    batch = means.shape[0]
    named = {"quats": quats, "scales": scales, "opacities": opacities, "colors": colors, "viewmats": viewmats,
             "Ks": Ks, "backgrounds": backgrounds}  # fmt: skip
    for name, tensor in named.items():
        if tensor is not None and (tensor.dim() < 2 or tensor.shape[0] != batch):
            raise InputError(
                f"{name} must have a leading batch axis of {batch} like means (B, N, 3), got {tuple(tensor.shape)}."
            )


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz quaternions (normalised here) → (N, 3, 3) rotation matrices."""
    return quat_to_matrix_torch(F.normalize(quats, dim=-1))


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
    opacities: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of N Gaussians into C pinhole cameras.

    Returns means2d (C, N, 2) pixels, conics (C, N, 3) = upper triangle (a, b, c) of the inverse 2D covariance,
    depths (C, N), radii (C, N) int32 (0 = culled: outside the near/far range, degenerate, off-image, or fainter
    than alpha 1/255) and half_extent (C, N, 2): the footprint's half-widths in x and y (no grad), out to where
    its alpha falls to 1/255 (√(2 ln(255·opacity)) σ, at most 3.33σ, as gsplat; 3.33σ without `opacities`).
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
        extent = torch.full_like(z[:1], MAX_EXTENT)
        if opacities is not None:  # gsplat's opacity-aware footprint
            extent = (2 * torch.log(opacities.detach().clamp_min(MIN_ALPHA) / MIN_ALPHA)).sqrt().clamp_max(MAX_EXTENT)
            valid = valid & (opacities.detach() >= MIN_ALPHA)
        half_extent = extent[..., None] * torch.stack([a, c], -1).clamp_min(0).sqrt()
        axis_radii = torch.ceil(half_extent)  # whole pixels, as gsplat culls and reports them
        on_image = (means2d + axis_radii > 0).all(-1)
        on_image &= (means2d[..., 0] - axis_radii[..., 0] < width) & (means2d[..., 1] - axis_radii[..., 1] < height)
        valid = valid & on_image
        radii = torch.where(valid, axis_radii.amax(-1), torch.zeros_like(z)).to(torch.int32)
        half_extent = half_extent * valid[..., None]
    return means2d, conics, z, radii, half_extent


def _composite(means2d, conics, depths, half_extent, opacities, colors, backgrounds, width, height, tile=TILE):
    """Front-to-back alpha compositing on small tiles, each with its depth-sorted Gaussians padded per chunk."""
    C, N = depths.shape
    D = colors.shape[-1]
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    P = tile * tile
    gauss_of, counts = _tile_lists(means2d, depths, half_extent, tile, tiles_x, tiles_y)
    starts = torch.cumsum(counts, 0) - counts
    # Pixel centres relative to the tile's corner, and the quadratic basis of the exponent there.
    ly, lx = torch.meshgrid(
        torch.arange(tile, device=depths.device), torch.arange(tile, device=depths.device), indexing="ij"
    )
    lx, ly = lx.reshape(-1).to(means2d.dtype) + 0.5, ly.reshape(-1).to(means2d.dtype) + 0.5
    basis = torch.stack([lx * lx, ly * ly, lx * ly, lx, ly, torch.ones_like(lx)])  # (6, P)
    # Everything a tile needs of a camera-Gaussian in one row, so each chunk gathers (and its backward
    # scatters) once: mx, my, conic a b c, opacity, colour, and a 1 that makes the compositor sum alpha too.
    per_cam = lambda x: x.expand(C, N, x.shape[-1])  # noqa: E731
    rows = torch.cat(
        [means2d, conics, per_cam(opacities[:, None]), per_cam(colors), means2d.new_ones(C, N, 1)], -1
    ).reshape(C * N, 7 + D)
    img = means2d.new_zeros(C * tiles_y * tiles_x * P, D + 1)  # colour and accumulated alpha, tile-major
    for tiles, k_pad in _tile_chunks(counts, P):
        k = torch.arange(k_pad, device=counts.device)
        valid = k[None, :] < counts[tiles][:, None]  # (T, K)
        g = gauss_of[torch.where(valid, starts[tiles][:, None] + k, starts[tiles][:, None])]  # (T, K) into C·N
        cam = torch.div(tiles, tiles_x * tiles_y, rounding_mode="floor")
        in_cam = tiles - cam * tiles_x * tiles_y
        ox = ((in_cam % tiles_x) * tile).to(means2d.dtype)[:, None]
        oy = (torch.div(in_cam, tiles_x, rounding_mode="floor") * tile).to(means2d.dtype)[:, None]
        r = rows[g]  # (T, K, 7 + D)
        mx, my, a, b, c = r[..., 0] - ox, r[..., 1] - oy, r[..., 2], r[..., 3], r[..., 4]
        # σ = ½a(x−mx)² + ½c(y−my)² + b(x−mx)(y−my) expanded in powers of the tile-local x and y.
        coef = torch.stack(
            [
                0.5 * a,
                0.5 * c,
                b,
                -a * mx - b * my,
                -c * my - b * mx,
                0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my,
            ],
            -1,
        )
        opac = r[..., 5] * valid  # padding slots get opacity 0
        out = _SplatTiles.apply(coef, opac, r[..., 6:], basis)
        pix = tiles[:, None] * P + torch.arange(P, device=tiles.device)
        img = img.index_add(0, pix.reshape(-1), out.reshape(-1, D + 1))
    if not img.requires_grad and rows.requires_grad:  # nothing visible: stay in the graph with zero gradients
        img = img + 0 * rows.sum()
    img = img.reshape(C, tiles_y, tiles_x, tile, tile, D + 1).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(C, tiles_y * tile, tiles_x * tile, D + 1)[:, :height, :width]
    rgb, acc = img[..., :D], img[..., D:]
    return rgb + (1 - acc) * backgrounds[:, None, None, :], acc


@torch.no_grad()
def _tile_lists(means2d, depths, half_extent, tile, tiles_x, tiles_y):
    """The Gaussians overlapping each tile, front to back: gauss_of (I,) indices into the flattened (C·N)
    camera-Gaussian list, grouped by global tile (camera·tiles_y·tiles_x + row·tiles_x + col), and counts
    (C·tiles_y·tiles_x,) of Gaussians per tile."""
    C, N = depths.shape
    vis = half_extent[..., 0] > 0
    order = torch.argsort(torch.where(vis, depths.detach(), torch.inf), dim=1, stable=True)
    sel = torch.arange(N, device=depths.device)[None, :] < vis.sum(1)[:, None]
    cam, rank = torch.nonzero(sel, as_tuple=True)
    flat = cam * N + order[cam, rank]  # visible camera-Gaussians, front to back per camera
    m, h = means2d.detach().reshape(C * N, 2)[flat], half_extent.reshape(C * N, 2)[flat]
    lo = torch.floor((m - h) / tile).long()
    hi = torch.floor((m + h) / tile).long()
    x0, x1 = lo[:, 0].clamp(0, tiles_x - 1), hi[:, 0].clamp(-1, tiles_x - 1)
    y0, y1 = lo[:, 1].clamp(0, tiles_y - 1), hi[:, 1].clamp(-1, tiles_y - 1)
    bw, bh = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    n_tiles = bw * bh
    owner = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), n_tiles)
    local = torch.arange(len(owner), device=flat.device) - (torch.cumsum(n_tiles, 0) - n_tiles)[owner]
    bw_o = bw[owner]
    tx = x0[owner] + local % bw_o
    ty = y0[owner] + torch.div(local, bw_o, rounding_mode="floor")
    tile_id = (cam[owner] * tiles_y + ty) * tiles_x + tx
    tile_id, perm = torch.sort(tile_id.int(), stable=True)  # stable: keeps the depth order within a tile
    counts = torch.bincount(tile_id, minlength=C * tiles_y * tiles_x)
    return flat[owner[perm]], counts


def _tile_chunks(counts: torch.Tensor, pixels: int):
    """Busy tiles in order of Gaussian count, in chunks padded to their busiest tile and kept under the
    element budget: yields (tile indices, padded count)."""
    busy = torch.nonzero(counts > 0).squeeze(1)
    busy = busy[torch.argsort(counts[busy])]
    busy_counts = counts[busy].tolist()
    i = 0
    while i < len(busy):
        j = i + 1
        while j < len(busy) and (j + 1 - i) * busy_counts[j] * pixels <= MAX_TILE_ELEMENTS:
            j += 1
        yield busy[i:j], busy_counts[j - 1]
        i = j


class _SplatTiles(torch.autograd.Function):
    """Front-to-back compositing of K depth-sorted Gaussians over the P pixels of each of T tiles.

    Inputs: coef (T, K, 6) coefficients of the exponent σ = coef · (x², y², xy, x, y, 1) at the tile's pixel
    centres, opac (T, K) opacities (0 for padding), col (T, K, D) colours with a last column of ones, basis
    (6, P). Output (T, P, D) = Σ_k w_k col_k with w_k = α_k Π_{j<k} (1 − α_j): the colour and, in the last
    channel, the accumulated alpha.
    The backward pass is written out (suffix sums of w·(c·g)) rather than recorded by autograd: it keeps two
    (T, K, P) tensors instead of a dozen and runs about twice as fast.
    """

    @staticmethod
    def forward(ctx, coef, opac, col, basis):
        T, K, _ = coef.shape
        sigma = (coef.reshape(T * K, 6) @ basis).reshape(T, K, -1)  # (T, K, P)
        alpha = torch.exp(sigma.neg_()).mul_(opac[..., None])
        # A Gaussian ends where its alpha falls below 1/255 (its box, from project_gaussians, holds all of that).
        alpha = alpha.clamp_max_(MAX_ALPHA).mul_(alpha >= MIN_ALPHA)
        del sigma
        keep = 1 - alpha
        trans = torch.cumprod(keep, 1)  # transmittance after each Gaussian
        # A pixel stops before the Gaussian that would take its transmittance to 1e-4 (as gsplat does).
        alpha.mul_(trans > MIN_TRANSMITTANCE)
        trans.div_(keep)  # transmittance before each Gaussian (1 − α ≥ 0.001)
        del keep
        out = (alpha * trans).transpose(1, 2) @ col  # (T, P, D)
        ctx.save_for_backward(alpha, trans, opac, col, basis)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        alpha, trans, opac, col, basis = ctx.saved_tensors
        T, K, P = alpha.shape
        weight = alpha * trans
        grad_col = weight @ grad_out  # (T, K, D)
        v = col @ grad_out.transpose(1, 2)  # (T, K, P): d loss / d w_k
        q = weight.mul_(v)
        later = q.sum(1, keepdim=True) - torch.cumsum(q, 1)  # Σ_{j>k} w_j v_j
        del q, weight
        grad_alpha = (trans * v).sub_(later.div_(1 - alpha))
        del later, v
        grad_alpha.mul_((alpha > 0) & (alpha < MAX_ALPHA))  # cut, clamped and stopped pairs pass no gradient
        grad_sigma = grad_alpha.mul_(alpha)  # α = o·exp(−σ): dα/dσ = −α, dα/do = α / o
        grad_opac = grad_sigma.sum(-1) / torch.where(opac > 0, opac, torch.ones_like(opac))
        grad_coef = -(grad_sigma.reshape(T * K, P) @ basis.T).reshape(T, K, 6)
        return grad_coef, grad_opac, grad_col, None


def composite_dense(means2d, conics, depths, radii, opacities, colors, backgrounds, width, height):
    """Reference compositor for tests and benchmarks: every pixel against every visible Gaussian, same rules
    as the tile compositor (alpha clamp and threshold, early stop), O(C·H·W·N) memory.
    colors (N, D) or (C, N, D), backgrounds (C, D); returns rgb (C, H, W, D) and alpha (C, H, W, 1)."""
    C, N = depths.shape
    colors = colors.expand(C, N, colors.shape[-1]) if colors.dim() == 2 else colors
    order = torch.argsort(torch.where(radii > 0, depths, torch.inf).detach(), dim=1)
    take = lambda x: torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    m, k, col = take(means2d), take(conics), take(colors)
    vis = torch.gather(radii > 0, 1, order)
    op = opacities[order]
    ys, xs = torch.meshgrid(torch.arange(height, device=m.device), torch.arange(width, device=m.device), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(m.dtype) + 0.5  # (P, 2)
    d = pix[None, :, None, :] - m[:, None, :, :]  # (C, P, N, 2)
    kk = k[:, None]
    sigma = 0.5 * (kk[..., 0] * d[..., 0] ** 2 + kk[..., 2] * d[..., 1] ** 2) + kk[..., 1] * d[..., 0] * d[..., 1]
    raw = op[:, None, :] * torch.exp(-sigma)
    inside = vis[:, None, :] & (sigma >= 0) & (raw >= MIN_ALPHA)
    alpha = torch.where(inside, raw.clamp_max(MAX_ALPHA), torch.zeros_like(raw))
    log_t = torch.cumsum(torch.log1p(-alpha), -1) - torch.log1p(-alpha)
    keep = (log_t + torch.log1p(-alpha)).detach() > math.log(MIN_TRANSMITTANCE)
    weight = alpha * torch.exp(log_t) * keep
    acc = weight.sum(-1, keepdim=True)  # (C, P, 1)
    rgb = torch.einsum("cpn,cnd->cpd", weight, col) + (1 - acc) * backgrounds[:, None, :]
    return rgb.reshape(C, height, width, -1), acc.reshape(C, height, width, 1)


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
    if _GSPLAT_ERROR:
        return False
    try:
        import gsplat  # noqa: F401
    except Exception as exc:  # absent, or broken (gsplat also needs `packaging`, which it does not declare)
        _GSPLAT_ERROR.append(str(exc))
        return False
    return True


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, near_plane, far_plane, eps2d
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
        eps2d=eps2d,
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
