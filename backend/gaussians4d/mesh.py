"""Animated mesh from dynamic Gaussians (path 2): one canonical mesh, moved by the Gaussians' motion.

`extract_mesh` samples the Gaussians' density at a reference time on a regular grid,

    D(x) = Σ_i opacity_i · exp(−½ (x − μ_i)ᵀ Σ_i⁻¹ (x − μ_i)),   Σ_i = R_i diag(s_i²) R_iᵀ,

and runs marching cubes (scikit-image) on it. Each Gaussian is splatted into the voxels of the ball
that holds its 3σ ellipsoid (Gaussians grouped by that ball's radius in voxels, Mahalanobis distances of a
group as one matmul, sums with `np.bincount`), so the cost grows with the number of Gaussians times their
size in voxels, not with grid × Gaussians. Two choices keep the field usable:

- scales are clamped below at one voxel, so a sheet of flat surface Gaussians (one scale near zero, common
  in a fitted 3DGS) becomes a slab about two voxels thick that marching cubes sees as closed, instead of a
  film slipping between grid points and leaving holes; the mesh is then the slab's outer side, about 1.5
  voxels outside the sheet (a shell of radius 0.5 at 96³ comes out at 0.517, closed, with no inner wall);
- the default level is half the typical density at the Gaussians' own centres (the opacity-weighted
  median of D interpolated at the centres). Inside a dense cloud D is about constant, c, and falls to c/2
  on the cloud's boundary, so this level puts the surface on the boundary whatever the Gaussians' count,
  size or opacity; a fixed level (DreamGaussian uses 1) would sit further out the denser the cloud.

The grid spans the centres of the visible Gaussians (opacity ≥ 1/255) plus 3 × the 95th percentile of
their largest σ, with `resolution` voxels along its longest side; a zero layer around it closes the
surface. Of the marching-cubes output only the largest connected component (by face count) is kept:
floaters and inner walls of hollow clouds go away.

`deform_mesh` moves the canonical vertices over time: each vertex follows its k nearest Gaussians (centres
at t_ref; nearly transparent ones, opacity < 0.05, are skipped because fitting barely constrains their
motion), each moved rigidly from t_ref to t (rotation = change of its quaternion, translation = motion of
its centre), blended linearly with normalised inverse-distance weights. One topology for all frames.

Measured with `benchmarks/bench_gaussian_mesh.py` (one thread, 20,000 Gaussians of σ 0.07 filling a
ball of radius 1, 96³ grid): the density grid takes 0.6 s of CPU, the whole extract_mesh 1.0-1.1 s
(wall 1.1 s on an idle core, 2.6 s on the 2 cores shared at load 4) for 27k vertices / 54k faces whose
distance to the centre is 0.994 ± 0.015; deform_mesh of those vertices over 16 frames (k = 8) 0.3 s CPU.
Cost grows with Gaussians × voxels per 3σ box, so halving σ or the resolution is about 8× cheaper.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from shared.errors import InputError

from .export import GaussianModel, check_time, check_times, gaussians_at

log = logging.getLogger(__name__)

VISIBLE_OPACITY = 1.0 / 255.0  # below this a Gaussian changes no 8-bit pixel: ignored for the grid
FOLLOW_OPACITY = 0.05  # deform_mesh: vertices follow Gaussians at least this opaque (if k of them exist)
SIGMA_CUT = 3.0  # each Gaussian is evaluated inside its 3σ box
MAX_RADIUS_VOXELS = 16  # bigger Gaussians are cut at 16 voxels (they carry little detail)
EVAL_CHUNK = 2_000_000  # Gaussian × voxel evaluations per vectorised step (memory ≈ 100 MB)
MIN_RESOLUTION, MAX_RESOLUTION = 16, 512


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (N,3,3) of unit quaternions (N,4) w,x,y,z."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


class DensityGrid:
    """The density D(x) on a regular grid: values[i, j, k] at origin + (i, j, k) · spacing (x, y, z order)."""

    def __init__(self, values: np.ndarray, origin: np.ndarray, spacing: float):
        self.values = values
        self.origin = origin
        self.spacing = spacing

    def sample(self, points: np.ndarray) -> np.ndarray:
        """D at `points` (P,3) by trilinear interpolation (0 outside the grid)."""
        from scipy.ndimage import map_coordinates

        coords = ((np.asarray(points, np.float64) - self.origin) / self.spacing).T
        return map_coordinates(self.values, coords, order=1, mode="constant", cval=0.0)


def density_grid(g: dict[str, np.ndarray], resolution: int) -> DensityGrid:
    """Splat the visible Gaussians of `g` (see `gaussians_at`) into a grid with `resolution` voxels on its
    longest side. Scales are clamped below at one voxel (module docstring)."""
    keep = g["opacities"] >= VISIBLE_OPACITY
    means, quats, opac = g["means"][keep], g["quats"][keep], g["opacities"][keep]
    sigma_max = g["scales"][keep].max(axis=1)
    pad = SIGMA_CUT * float(np.percentile(sigma_max, 95))
    lo, hi = means.min(axis=0) - pad, means.max(axis=0) + pad
    extent = float((hi - lo).max())
    if not extent > 0:
        raise InputError("All Gaussians sit on one point with zero size; there is no volume to mesh.")
    # 2 voxels of margin on each side, so the zero layer added later is not against the density
    h = extent / (resolution - 5)
    origin = lo - 2 * h
    dims = np.minimum(np.ceil((hi - lo) / h).astype(int) + 5, resolution)
    scales = np.maximum(g["scales"][keep], h)

    # m = dᵀ P d with d = o·h + δ (o: integer voxel offset from the Gaussian's nearest voxel, δ: that voxel
    # minus the mean) expands into one matmul per chunk: (G,10) Gaussian terms @ (10,B) offset monomials.
    rot = quat_to_matrix(quats)
    precision = np.einsum("nij,nj,nkj->nik", rot, 1.0 / scales**2, rot)  # R diag(1/s²) Rᵀ
    radius = np.clip(np.ceil(SIGMA_CUT * scales.max(axis=1) / h).astype(int), 1, MAX_RADIUS_VOXELS)
    border = MAX_RADIUS_VOXELS + 1  # the splat grid is padded so no box leaves it: no bounds checks
    padded = dims + 2 * border
    voxel = np.rint((means - origin) / h).astype(np.int64)
    delta = origin + voxel * h - means
    p_delta = np.einsum("nij,nj->ni", precision, delta)
    terms = np.concatenate(
        [
            h * h * precision[:, [0, 1, 2], [0, 1, 2]],
            2 * h * h * precision[:, [0, 0, 1], [1, 2, 2]],
            2 * h * p_delta,
            np.einsum("ni,ni->n", delta, p_delta)[:, None],
        ],
        axis=1,
    ).astype(np.float32)
    strides = np.array([padded[1] * padded[2], padded[2], 1], np.int64)
    flat_voxel = (voxel + border) @ strides
    total = int(np.prod(padded))
    density = np.zeros(total, np.float64)
    for r in np.unique(radius):
        span = np.arange(-r, r + 1)
        offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
        offsets = offsets[(offsets**2).sum(axis=1) <= (r + 1) ** 2]  # the 3σ ellipsoid fits in this ball
        o = offsets.astype(np.float32)
        monomials = np.concatenate([o**2, o[:, [0, 0, 1]] * o[:, [1, 2, 2]], o, np.ones((len(o), 1), np.float32)], 1)
        members = np.flatnonzero(radius == r)
        step = max(1, EVAL_CHUNK // len(offsets))
        for start in range(0, len(members), step):
            ids = members[start : start + step]
            m = terms[ids] @ monomials.T  # (G,B) squared Mahalanobis distances
            values = opac[ids, None].astype(np.float32) * np.exp(-0.5 * m)
            flat = flat_voxel[ids, None] + offsets @ strides
            density += np.bincount(flat.ravel(), weights=values.ravel(), minlength=total)
    density = density.reshape(tuple(padded))[border:-border, border:-border, border:-border]
    return DensityGrid(np.ascontiguousarray(density), origin, h)


def default_level(grid: DensityGrid, g: dict[str, np.ndarray]) -> float:
    """Half the opacity-weighted median of the density at the visible Gaussians' centres."""
    keep = g["opacities"] >= VISIBLE_OPACITY
    at_centres = grid.sample(g["means"][keep])
    weights = g["opacities"][keep]
    order = np.argsort(at_centres)
    cumulative = np.cumsum(weights[order])
    median = at_centres[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    return 0.5 * float(median)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected component with the most faces, vertices renumbered in their original order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_labels = labels[faces[:, 0]]
    biggest = np.argmax(np.bincount(face_labels))
    faces = faces[face_labels == biggest]
    used = np.unique(faces)
    remap = np.full(n, -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def extract_mesh(
    model: GaussianModel, t_ref: float = 0.0, *, resolution: int = 96, level: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical mesh of the model at `t_ref`: vertices (V,3) float32 (world units), faces (F,3) int32.

    Marching cubes of the Gaussians' density (module docstring) on a grid with `resolution` voxels along
    its longest side; `level` None picks half the typical density at the Gaussians' centres. Faces wind
    counter-clockwise seen from outside (normals point out). Only the largest connected component is kept.
    InputError for an empty or fully transparent model, a bad time or resolution, or a level no part of
    the density reaches (the message gives the density's peak and a level that works).
    """
    import trimesh
    from skimage.measure import marching_cubes

    t_ref = check_time(t_ref, "t_ref")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise InputError(f"resolution must be a whole number of voxels, got {resolution!r}.")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InputError(f"resolution must be in {MIN_RESOLUTION}..{MAX_RESOLUTION} voxels, got {resolution}.")
    if level is not None and not (np.isfinite(level) and level > 0):
        raise InputError(f"level must be a positive density (or None for automatic), got {level!r}.")
    g = gaussians_at(model, t_ref)
    peak_opacity = float(g["opacities"].max())
    if peak_opacity < VISIBLE_OPACITY:
        raise InputError(
            f"The model is transparent at t={t_ref}: its most opaque Gaussian has opacity {peak_opacity:.2g} "
            f"(below 1/255), so there is no surface to mesh. Fit it longer or check the input frames' alpha."
        )
    grid = density_grid(g, int(resolution))
    if level is None:
        level = default_level(grid, g)
    level = float(level)
    peak = float(grid.values.max())
    if not peak > level:
        raise InputError(
            f"No surface at level {level:.4g}: the density at t={t_ref} peaks at {peak:.4g}. "
            f"Pass a lower level, e.g. level={0.5 * peak:.3g}, or level=None for the automatic one."
        )
    values = np.pad(grid.values, 1)  # a zero layer all round: the surface closes at the grid's edge
    verts, faces, _normals, _ = marching_cubes(
        values,
        level=level,
        spacing=(grid.spacing,) * 3,
        gradient_direction="ascent",  # density grows inward
    )
    verts = verts + (grid.origin - grid.spacing)
    mesh = trimesh.Trimesh(verts, faces, process=True)  # merges duplicate vertices
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise InputError(
            f"Marching cubes found no faces at level {level:.4g} (density peak {peak:.4g}); "
            f"raise the resolution above {resolution} or pass a lower level, e.g. level={0.5 * level:.3g}."
        )
    vertices, faces = largest_component(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    log.info(
        "extract_mesh: t_ref=%s level=%.4g grid %s voxel %.4g -> %d vertices, %d faces",
        t_ref,
        level,
        grid.values.shape,
        grid.spacing,
        len(vertices),
        len(faces),
    )
    return vertices.astype(np.float32), faces.astype(np.int32)


def deform_mesh(
    model: GaussianModel,
    vertices: np.ndarray,
    times: float | Sequence[float] | np.ndarray,
    *,
    k: int = 8,
    t_ref: float = 0.0,
) -> np.ndarray:
    """Positions (T,V,3) float32 of `vertices` (V,3) at each of `times`, moved by the Gaussians' motion.

    Vertex v at time t = Σ_j w_vj (R_j(t) (v − μ_j(t_ref)) + μ_j(t)), over its k nearest Gaussians j
    (centres at `t_ref`, the time the mesh was extracted at), w ∝ 1 / distance, normalised;
    R_j(t) = rot(q_j(t)) rot(q_j(t_ref))ᵀ. At t = t_ref every vertex stays where it is.
    """
    from scipy.spatial import cKDTree

    times = check_times(times)
    t_ref = check_time(t_ref, "t_ref")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k (Gaussians each vertex follows) must be a whole number ≥ 1, got {k!r}.")
    verts = np.asarray(vertices, dtype=np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.shape[0] == 0:
        raise InputError(f"vertices must have shape (V, 3) with V ≥ 1, got {verts.shape}.")
    if not np.isfinite(verts).all():
        raise InputError(f"vertex {int(np.argwhere(~np.isfinite(verts))[0][0])} is NaN or infinite.")

    ref = gaussians_at(model, t_ref)
    followed = np.flatnonzero(ref["opacities"] >= FOLLOW_OPACITY)
    if len(followed) < k:
        followed = np.flatnonzero(ref["opacities"] >= VISIBLE_OPACITY)
    if len(followed) == 0:
        raise InputError(
            f"The model is transparent at t_ref={t_ref} (every opacity below 1/255): no Gaussian to follow."
        )
    k = min(int(k), len(followed))
    mu_ref = ref["means"][followed]
    dist, nearest = cKDTree(mu_ref).query(verts, k=k)
    dist, nearest = dist.reshape(len(verts), k), nearest.reshape(len(verts), k)
    scene = float(np.linalg.norm(mu_ref.max(axis=0) - mu_ref.min(axis=0))) or 1.0
    weights = 1.0 / np.maximum(dist, 1e-9 * scene)
    weights /= weights.sum(axis=1, keepdims=True)
    offsets = verts[:, None, :] - mu_ref[nearest]  # (V,k,3), in the frame of t_ref
    rot_ref_t = np.swapaxes(quat_to_matrix(ref["quats"][followed]), 1, 2)

    out = np.empty((len(times), len(verts), 3), np.float32)
    for i, t in enumerate(times):
        cur = ref if t == t_ref else gaussians_at(model, t)
        if cur["means"].shape[0] != ref["means"].shape[0]:
            raise InputError(
                f"The model has {ref['means'].shape[0]} Gaussians at t_ref={t_ref} but "
                f"{cur['means'].shape[0]} at t={t}; deform_mesh needs the same Gaussians at every time."
            )
        rel = quat_to_matrix(cur["quats"][followed]) @ rot_ref_t  # (N,3,3) rotation from t_ref to t
        moved = np.einsum("vkij,vkj->vki", rel[nearest], offsets) + cur["means"][followed][nearest]
        out[i] = np.einsum("vk,vki->vi", weights, moved)
    return out
