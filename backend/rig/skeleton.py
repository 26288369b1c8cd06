"""`skeleton` mode: rigid parts of a free solve → a bone hierarchy with joints and constant bone lengths.

Steps (../shared/reference/anchors-motion-rig.md §7.2):

1. parts: every vertex belongs to the free bone that weighs it most (a bone that dominates none gets its
   heaviest vertex); bones without weight go.
2. adjacency: mesh edges whose ends lie in two parts (or k-nearest rest neighbours without faces); parts
   the mesh does not connect are linked at their closest vertices, so the tree spans every part.
3. joints: for adjacent parts a, b the rest-space point p that both move to the same place in every frame,
   least squares on (R_a − R_b) p = t_b − t_a stacked over frames, regularised toward the centroid of their
   boundary (hinges and parts that never articulate have no unique answer: the regulariser picks the
   point of the axis / boundary nearest that centroid).
4. tree: minimum spanning tree over cost = joint residual + distance of the joint from the boundary.
   Root: the part with the most skin weight (the body of an animal, the torso of a character): it carries
   the global motion, and the heaviest part keeps the chains to the extremities short.
5. bones: head at the joint to the parent (root: its part's weight centroid), Y axis toward the children's
   joints (a leaf: toward its part's centroid), rigid rest matrices bone → object.
6. transforms re-solved under the joint constraints, SSDR style (Le & Deng 2014): start from the free
   rotations with every child pinned to where its parent carries its joint; then Gauss–Seidel over bones,
   parents first: the best rotation of each bone's whole subtree about its joint (the root: the best rigid
   motion of everything), then the joint slides in the rest pose to where it best explains the residual.
   Subtrees move rigidly, so joints never separate and bone lengths stay constant by construction; each
   step is exact from the moment matrices and never raises the error. Weights are re-fit with those
   transforms (the free solver's sparse convex weight step), alternating up to `iterations` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from shared.errors import InputError

from .metrics import bbox_diagonal, e_rms_from_sse
from .ssdr import FreeSolve
from .weights import smoothing_operator, solve_sparse_weights

Progress = Callable[[str, float, str], None]

_KNN = 8  # neighbours per vertex for part adjacency when there are no faces
_JOINT_MU = 1e-3  # joint regulariser, relative to trace(Σ DᵀD)/3 (reference §7.2 step 2)
_SWEEPS = 8  # Gauss–Seidel sweeps over bones per iteration (cheap: moments only)


@dataclass
class SkeletonSolve:
    """Result of `build_skeleton`, in the caller's units. Bones are in breadth-first order (parents[b] < b).

    parents       (B,) int32, -1 for the root
    bone_names    B names: "root", "part_01", ...
    rest_matrices (B,4,4) float32, bone → object in the rest pose, rigid (Y axis along the bone)
    pose_matrices (T,B,4,4) float32, bone → object per frame, rigid
    weight_index  (V,K) int32, weight_value (V,K) float32 (≥ 0, rows sum to 1)
    joints        (B,3) float64 rest-space bone heads (= joints to the parents; root: its part's centroid)
    source_bone   (B,) int32: the free-solve bone each bone came from
    e_rms         final E_RMS (Kavan et al. 2010); history: after each iteration
    """

    parents: np.ndarray
    bone_names: list[str]
    rest_matrices: np.ndarray
    pose_matrices: np.ndarray
    weight_index: np.ndarray
    weight_value: np.ndarray
    joints: np.ndarray
    source_bone: np.ndarray
    e_rms: float
    history: list[float] = field(default_factory=list)


def build_skeleton(
    rest: np.ndarray,
    frames: np.ndarray,
    free: FreeSolve,
    faces: np.ndarray | None = None,
    root: int | None = None,
    *,
    iterations: int = 30,
    tolerance: float = 1e-3,
    progress: Progress | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> SkeletonSolve:
    """Hierarchy from a free solve: rest (V,3), frames (T,V,3), free (its transforms and weights).

    faces (F,3) int, optional: part adjacency from mesh edges (else k-nearest rest neighbours) and weight
    smoothing. root: a free-solve bone index to use as the root (default: the one with the most weight).
    iterations: alternations of constrained transforms and weights; stops early once E_RMS improves by
    less than `tolerance` (relative). progress(stage, fraction, message); check_cancelled() raises.
    """
    report = progress or (lambda stage, fraction, message: None)
    check = check_cancelled or (lambda: None)
    rest64 = np.asarray(rest, dtype=np.float64)
    frames64 = np.asarray(frames, dtype=np.float64)
    t, v = frames64.shape[:2]
    centre = rest64.mean(axis=0)
    sigma = float(np.sqrt(((rest64 - centre) ** 2).sum(axis=1).mean())) or 1.0
    u = (rest64 - centre) / sigma
    uh = np.concatenate([u, np.ones((v, 1))], axis=1)
    x = np.ascontiguousarray(((frames64 - centre) / sigma).transpose(1, 0, 2).reshape(v, 3 * t))
    xt = np.ascontiguousarray(x.T)
    bb = np.einsum("vk,vk->v", x, x)

    # 1. parts: dominant bone per vertex; drop bones without weight.
    dense = _dense(free.weight_index, free.weight_value, free.transforms.shape[1])
    lab_free = np.argmax(dense, axis=1)
    orphans = np.flatnonzero((np.bincount(lab_free, minlength=dense.shape[1]) == 0) & (dense.max(axis=0) > 0))
    lab_free[np.argmax(dense[:, orphans], axis=0)] = orphans  # a bone that dominates nothing: its heaviest vertex
    kept = np.unique(lab_free)
    nb = kept.size
    remap = np.full(dense.shape[1], -1)
    remap[kept] = np.arange(nb)
    lab = remap[lab_free]
    w = dense[:, kept]
    w /= w.sum(axis=1, keepdims=True)
    m_free = np.asarray(free.transforms, dtype=np.float64)[:, kept]
    m = np.concatenate([m_free[..., :3], ((m_free[..., :3] @ centre + m_free[..., 3] - centre) / sigma)[..., None]], -1)

    report("skeleton", 0.0, f"joints between {nb} parts")
    pairs, strength, boundary = part_adjacency(u, lab, nb, faces)
    joints, resid = estimate_joints(m, pairs, boundary)
    cost = resid + np.linalg.norm(joints - boundary, axis=1) + 1e-9

    # 4. tree and root; bones renumbered breadth first from the root.
    mass = w.sum(axis=0)
    if root is None:
        root_part = int(np.argmax(mass))
    else:
        if not 0 <= root < remap.size or remap[root] < 0:
            raise InputError(f"Root bone {root} is not one of the solve's parts (0..{remap.size - 1} with vertices).")
        root_part = int(remap[root])
    graph = sp.coo_matrix((cost, (pairs[:, 0], pairs[:, 1])), shape=(nb, nb)).tocsr()
    tree = minimum_spanning_tree(graph)
    order, pred = breadth_first_order(tree + tree.T, root_part, directed=False)
    new_of = np.empty(nb, np.int64)
    new_of[order] = np.arange(nb)
    parents = np.where(pred[order] < 0, -1, new_of[np.maximum(pred[order], 0)]).astype(np.int32)
    w, m, lab = w[:, order], m[:, order], new_of[lab]
    edge_of = {(int(a), int(b)): i for i, (a, b) in enumerate(pairs)}
    heads = np.empty((nb, 3))
    centroid = (w.T @ u) / np.maximum(w.sum(axis=0), 1e-300)[:, None]
    heads[0] = centroid[0]
    for b in range(1, nb):
        a, c = sorted((int(order[parents[b]]), int(order[b])))
        heads[b] = joints[edge_of[(a, c)]]

    # 6. joint-constrained transforms ⇄ weights.
    smooth = smoothing_operator(u, x, faces) if faces is not None and len(faces) else None
    k = int(np.asarray(free.weight_index).shape[1])
    index, value = _sparse(w, k)
    history: list[float] = []
    m = pin_joints(m, heads, parents)
    for it in range(1, max(1, iterations) + 1):
        m, heads = hierarchical_transforms(*weight_moments(xt, uh, w), m, heads, parents, _SWEEPS)
        index, value, sse = solve_sparse_weights(x, uh, bb, m, index, value, k, smooth)
        w = _dense(index, value, nb)
        history.append(e_rms_from_sse(sse, t, v, bbox_diagonal(u)))
        report("skeleton", it / iterations, f"iteration {it}/{iterations}: E_RMS {history[-1]:.3f}")
        check()
        if len(history) > 1 and history[-2] - history[-1] < tolerance * history[-2]:
            break

    rest_rot = bone_frames(u, lab, heads, parents, centroid)
    # Back to the caller's units: x' = R x + (σ t + c − R c); heads σ h + c.
    rot = m[..., :3]
    trans = sigma * m[..., 3] + centre - rot @ centre
    skin = _homogeneous(np.concatenate([rot, trans[..., None]], axis=-1))  # (T,B,4,4) rest → frame
    rest_m = np.tile(np.eye(4), (nb, 1, 1))
    rest_m[:, :3, :3] = rest_rot
    rest_m[:, :3, 3] = heads * sigma + centre
    pose = skin @ rest_m[None]
    pad_i, pad_v = _pad(index, value, k)
    return SkeletonSolve(
        parents=parents,
        bone_names=["root"] + [f"part_{b:02d}" for b in range(1, nb)],
        rest_matrices=rest_m.astype(np.float32),
        pose_matrices=pose.astype(np.float32),
        weight_index=pad_i,
        weight_value=pad_v,
        joints=heads * sigma + centre,
        source_bone=kept[order].astype(np.int32),
        e_rms=history[-1],
        history=history,
    )


# ------------------------------------------------------------------------------------ array functions


def part_adjacency(
    u: np.ndarray, lab: np.ndarray, nb: int, faces: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent part pairs. u (V,3) rest, lab (V,) part per vertex in 0..nb-1, faces (F,≥3) or None.

    Returns pairs (E,2) int64 with a < b, strength (E,) = crossing edges, boundary (E,3) = mean midpoint of
    the crossing edges. Parts left disconnected are linked at their closest vertices (strength 0), so the
    part graph is always connected.
    """
    if faces is not None and len(faces):
        f = np.asarray(faces, dtype=np.int64)
        e = np.concatenate([f[:, [i, (i + 1) % f.shape[1]]] for i in range(f.shape[1])])
    else:
        k = min(_KNN + 1, u.shape[0])
        _, nbr = cKDTree(u).query(u, k=k)
        nbr = nbr.reshape(u.shape[0], -1)
        e = np.stack([np.repeat(np.arange(u.shape[0]), nbr.shape[1]), nbr.ravel()], axis=1)
    e = e[lab[e[:, 0]] != lab[e[:, 1]]]
    a, b = np.minimum(lab[e[:, 0]], lab[e[:, 1]]), np.maximum(lab[e[:, 0]], lab[e[:, 1]])
    key, inv, count = np.unique(a * nb + b, return_inverse=True, return_counts=True)
    mid = 0.5 * (u[e[:, 0]] + u[e[:, 1]])
    boundary = np.stack([np.bincount(inv, weights=mid[:, i], minlength=key.size) for i in range(3)], 1).astype(float)
    boundary /= np.maximum(count, 1)[:, None]
    pairs = np.stack([key // nb, key % nb], axis=1).astype(np.int64)
    strength = count.astype(np.float64)
    extra = _link_components(u, lab, nb, pairs)
    if extra:
        p, mids = zip(*extra, strict=True)
        pairs = np.concatenate([pairs.reshape(-1, 2), np.array(p, np.int64)])
        boundary = np.concatenate([boundary.reshape(-1, 3), np.array(mids)])
        strength = np.concatenate([strength, np.zeros(len(p))])
    return pairs, strength, boundary


def _link_components(u: np.ndarray, lab: np.ndarray, nb: int, pairs: np.ndarray) -> list:
    """Links ((a,b), midpoint) joining the part graph's components at their closest vertices."""
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(nb, nb)) if len(pairs) else None
    count, comp = connected_components(graph, directed=False) if graph is not None else (nb, np.arange(nb))
    links = []
    group = comp == comp[lab[0]] if count > 1 else None
    while count > 1 and group is not None and not group.all():
        inside = group[lab]
        tree = cKDTree(u[inside])
        dist, j = tree.query(u[~inside])
        i_out = np.flatnonzero(~inside)[np.argmin(dist)]
        i_in = np.flatnonzero(inside)[j[np.argmin(dist)]]
        a, b = sorted((int(lab[i_out]), int(lab[i_in])))
        links.append(((a, b), 0.5 * (u[i_out] + u[i_in])))
        group |= comp == comp[lab[i_out]]
    return links


def estimate_joints(m: np.ndarray, pairs: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint of each part pair: the rest point both transforms carry to the same place in every frame.

    m (T,B,3,4) rest → frame transforms, pairs (E,2), p0 (E,3) boundary centroids (regulariser target).
    Solves (Σ_t DᵀD + μI) p = Σ_t Dᵀe + μ p0 with D = R_a − R_b, e = t_b − t_a, μ = 1e-3·tr(Σ DᵀD)/3.
    Returns p (E,3) and the residual (E,) = sqrt(mean_t ‖D p − e‖²), both in m's units.
    """
    if len(pairs) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    ma, mb = m[:, pairs[:, 0]], m[:, pairs[:, 1]]
    d = ma[..., :3] - mb[..., :3]  # (T,E,3,3)
    e = mb[..., 3] - ma[..., 3]  # (T,E,3)
    a = np.einsum("teki,tekj->eij", d, d)
    rhs = np.einsum("teki,tek->ei", d, e)
    mu = _JOINT_MU * np.trace(a, axis1=1, axis2=2) / 3.0 + 1e-12
    p = np.linalg.solve(a + mu[:, None, None] * np.eye(3), (rhs + mu[:, None] * p0)[..., None])[..., 0]
    r = np.einsum("teij,ej->tei", d, p) - e
    return p, np.sqrt(np.einsum("tei,tei->e", r, r) / m.shape[0])


def bone_frames(
    u: np.ndarray, lab: np.ndarray, heads: np.ndarray, parents: np.ndarray, centroid: np.ndarray
) -> np.ndarray:
    """Rest rotations (B,3,3), columns = bone X, Y, Z axes; Y from the head toward the children's mean head
    (a leaf: its part's centroid; degenerate: the part's principal axis, then +Y)."""
    nb = heads.shape[0]
    has = np.bincount(parents[parents >= 0], minlength=nb)
    child_sum = np.zeros((nb, 3))
    np.add.at(child_sum, parents[parents >= 0], heads[parents >= 0])
    target = np.where(has[:, None] > 0, child_sum / np.maximum(has, 1)[:, None], centroid)
    y = target - heads
    for b in np.flatnonzero(np.linalg.norm(y, axis=1) < 1e-3):  # degenerate bones only (a handful)
        pts = u[lab == b] - heads[b]
        axis = np.linalg.svd(pts, full_matrices=False)[2][0] if len(pts) > 1 else np.array([0.0, 1.0, 0.0])
        y[b] = axis if np.linalg.norm(axis) > 0 else (0.0, 1.0, 0.0)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    helper = np.where(np.abs(y[:, 2:3]) > 0.9, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
    xa = np.cross(y, helper)
    xa /= np.linalg.norm(xa, axis=1, keepdims=True)
    za = np.cross(xa, y)
    return np.stack([xa, y, za], axis=2)


def weight_moments(xt: np.ndarray, uh: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moments of the skinning objective. xt (3T,V) frames, uh (V,4) rest, w (V,B) dense weights →
    c (T,B,3,4) = Σ_i w_ib v_ti ũ_iᵀ and g (B,B,4,4) = Σ_i w_ib w_il ũ_i ũ_iᵀ (one BLAS product each)."""
    b = w.shape[1]
    wu = (w[:, :, None] * uh[:, None, :]).reshape(-1, 4 * b)
    c = (xt @ wu).reshape(-1, 3, b, 4).transpose(0, 2, 1, 3)
    g = (wu.T @ wu).reshape(b, 4, b, 4).transpose(0, 2, 1, 3)
    return c, g


def pin_joints(m: np.ndarray, heads: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Make transforms (T,B,3,4) meet the joint constraints, parents first: keep each child's rotation and
    translate it so that its rest joint heads[b] lands where its parent carries it."""
    m = m.copy()
    for j in np.flatnonzero(parents >= 0):
        mp = m[:, parents[j]]
        m[:, j, :, 3] = mp[..., :3] @ heads[j] + mp[..., 3] - m[:, j, :, :3] @ heads[j]
    return m


def subtrees(parents: np.ndarray) -> np.ndarray:
    """(B,B) bool: row j marks bone j and its descendants (parents[b] < b)."""
    b = parents.shape[0]
    mask = np.eye(b, dtype=bool)
    for j in range(b - 1, 0, -1):
        if parents[j] >= 0:
            mask[parents[j]] |= mask[j]
    return mask


def hierarchical_transforms(
    c: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    heads: np.ndarray,
    parents: np.ndarray,
    sweeps: int,
    move_joints: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Joint-constrained transform step: the exact best rigid motion of each bone's whole subtree.

    c (T,B,3,4), g (B,B,4,4) from `weight_moments`; m (T,B,3,4) transforms that meet the constraints;
    heads (B,3) rest joints; parents (B,) with parents[b] < b. Parents first, bone j's subtree S turns
    rigidly about the joint's current place q = m[parent] @ heads[j] (the root: moves freely) by the
    rotation minimising Σ_t Σ_i ‖v_ti − Σ_b w_ib m_tb ũ_i‖², i.e. argmax tr(Rᵀ A) with
    A = Σ_i (r_i − W_i q)(s_i − W_i q)ᵀ, s_i = Σ_{l∈S} w_il m_l ũ_i, r_i = v_i − rec_i + s_i, W_i = Σ_{l∈S} w_il,
    every sum a contraction of the moments (no pass over vertices). With move_joints, each joint then slides
    (in the rest pose) to where it best explains the residual (Le & Deng 2014 re-fit joint locations too).
    Each update lowers the error or keeps it, and moving whole subtrees keeps every joint together and every
    bone length constant. Returns (transforms (T,B,3,4), heads (B,3)), s[0] == j so moved[:, 0] is bone j.
    """
    t, b = m.shape[:2]
    sub = subtrees(parents)
    gf = g.transpose(0, 2, 1, 3).reshape(4 * b, 4 * b)  # rows (bone, c), columns (bone, d)
    cf = c.transpose(0, 2, 1, 3).reshape(t, 3, 4 * b)
    m, heads = m.copy(), heads.copy()
    for _ in range(sweeps):
        for j in range(b):
            s = np.flatnonzero(sub[j])
            cols = (4 * s[:, None] + np.arange(4)).ravel()
            cols3 = 4 * s + 3
            w2 = gf[np.ix_(cols3, cols3)].sum()
            if w2 <= 1e-12:
                continue
            mf = m.transpose(0, 2, 1, 3).reshape(t, 3, 4 * b)
            ms_t = mf[:, :, cols].transpose(0, 2, 1)  # (T,4S,3)
            ss = (mf[:, :, cols] @ gf[np.ix_(cols, cols)]) @ ms_t  # Σ s sᵀ
            rs = (mf @ gf[:, cols]) @ ms_t  # Σ rec sᵀ
            vs = cf[:, :, cols] @ ms_t  # Σ v sᵀ
            ws = mf[:, :, cols] @ gf[np.ix_(cols, cols3)].sum(axis=1)  # Σ W s
            wr = cf[:, :, cols3].sum(axis=2) - mf @ gf[:, cols3].sum(axis=1) + ws  # Σ W r
            rst = vs - rs + ss  # Σ r sᵀ
            ms = m[:, s]
            if parents[j] < 0:
                q_src, q_dst = ws / w2, wr / w2  # free: about the centroids
            else:
                mp = m[:, parents[j]]
                q_src = q_dst = mp[..., :3] @ heads[j] + mp[..., 3]
            a = (
                rst
                - wr[:, :, None] * q_src[:, None, :]
                - q_dst[:, :, None] * ws[:, None, :]
                + w2 * q_dst[:, :, None] * q_src[:, None, :]
            )
            rot = _nearest_rotation(a + 1e-9 * (np.abs(a).sum(axis=(1, 2), keepdims=True) + w2) * np.eye(3))
            delta_t = q_dst - np.einsum("tij,tj->ti", rot, q_src)
            moved = np.einsum("tij,tljk->tlik", rot, ms)
            moved[..., 3] += delta_t[:, None]
            if move_joints and parents[j] >= 0:
                # Slide the joint: rest point heads[j] + δ shifts the subtree by D_t δ, D_t = R_parent − R_j;
                # δ minimises Σ_t Σ_i ‖e_ti − W_i D_t δ‖² (+ a small ridge), e the residual after the turn.
                d = m[:, parents[j], :, :3] - moved[:, 0, :, :3]
                ws_new = np.einsum("tij,tj->ti", rot, ws - w2 * q_src) + w2 * q_dst
                lhs = w2 * np.einsum("tki,tkj->ij", d, d)
                rhs = np.einsum("tki,tk->i", d, wr - ws_new)
                lhs += (_JOINT_MU * np.trace(lhs) / 3.0 + 1e-12 * w2) * np.eye(3)
                delta = np.linalg.solve(lhs, rhs)
                heads[j] += delta
                moved[..., 3] += (d @ delta)[:, None]
            m[:, s] = moved
    return m, heads


def _nearest_rotation(cov: np.ndarray) -> np.ndarray:
    """argmax_R tr(Rᵀ cov) over rotations, batched (...,3,3)."""
    uu, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(uu @ vt))
    d[d == 0] = 1.0
    uu[..., :, 2] *= d[..., None]
    return uu @ vt


def _homogeneous(m: np.ndarray) -> np.ndarray:
    out = np.zeros(m.shape[:-2] + (4, 4))
    out[..., :3, :] = m
    out[..., 3, 3] = 1.0
    return out


def _dense(index: np.ndarray, value: np.ndarray, b: int) -> np.ndarray:
    v, k = index.shape
    w = np.zeros((v, b))
    np.add.at(w, (np.repeat(np.arange(v), k), np.asarray(index).ravel()), np.asarray(value, np.float64).ravel())
    return w


def _sparse(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (V,B) weights → the k largest per vertex (V,k), renormalised."""
    k = min(k, w.shape[1])
    idx = np.argsort(-w, axis=1)[:, :k]
    val = np.take_along_axis(w, idx, axis=1)
    return idx, val / val.sum(axis=1, keepdims=True)


def _pad(index: np.ndarray, value: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    v = index.shape[0]
    idx = np.zeros((v, k), np.int32)
    val = np.zeros((v, k), np.float64)
    n = min(k, index.shape[1])
    idx[:, :n] = index[:, :n]
    val[:, :n] = np.maximum(value[:, :n], 0.0)
    val /= val.sum(axis=1, keepdims=True)
    return idx, val.astype(np.float32)
