"""Mesh path 1 helpers: Gaussians bound to a rest mesh's vertices move as-rigidly-as-possible and smoothly.

`Arap`: the as-rigid-as-possible energy (Sorkine & Alexa 2007) of per-time vertex positions against the rest
mesh over its edges; the per-vertex best rotations come from an SVD of each one-ring's edge covariance and
are held fixed while differentiating (ARAP's local step; by the envelope theorem the gradient is that of the
full energy).

`DeformationGraph`: the vertices' motion during the fit, as an embedded deformation graph (a few dozen nodes,
each with a rotation and translation trajectory, vertices blended from their nearest nodes). Optimising each
vertex's own trajectory instead does not work: every vertex's Adam step follows its own noisy photometric
gradient, the ARAP term then pins the surface, and large motions (a limb swinging several pixels per frame)
are never followed (measured on the hinge test: the tip stayed at rest; a Laplacian "large steps"
preconditioner of the per-vertex offsets moved it a third of the way). Node transforms pool the gradient of
every vertex they carry and are rigid by construction. The fitted motion is then baked into the per-vertex
trajectories of the DynamicGaussians model.

`vertex_normals`, `normal_quats`, `vertex_edge_lengths`: each vertex's Gaussian lies flat in the surface, its
thin axis along the vertex normal of the deformed mesh at every time, its size from the vertex's own edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from backend.gaussians4d.model import axis_angle_to_quat, spline_controls
from backend.gaussians4d.rasterize import quat_to_rotmat


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) int64 unique undirected edges (i < j) of a triangle mesh."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def vertex_edge_lengths(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) mean length of the face edges at each vertex (an edge counted once per face it borders); a vertex on
    no face gets the mesh's mean edge."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    lengths = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    ends = np.concatenate([e[:, 0], e[:, 1]])
    counts = np.bincount(ends, minlength=len(vertices))
    mean = np.bincount(ends, np.concatenate([lengths, lengths]), len(vertices)) / np.maximum(counts, 1)
    return np.where(counts > 0, mean, lengths.mean())


def vertex_normals(positions: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(..., V, 3) unit area-weighted vertex normals of positions (..., V, 3) over faces (F, 3); differentiable.
    A vertex on no face, or whose faces cancel, gets +z."""
    a, b, c = (positions[..., faces[:, k], :] for k in range(3))
    face_n = torch.linalg.cross(b - a, c - a)  # (..., F, 3), length = twice the area
    n = positions.new_zeros(positions.shape)
    for k in range(3):
        n = n.index_add(-2, faces[:, k], face_n)
    length = n.norm(dim=-1, keepdim=True)
    z = n.new_tensor([0.0, 0.0, 1.0]).expand_as(n)
    return torch.where(length > 1e-20, n / length.clamp_min(1e-20), z)


def normal_quats(normals: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions (w, x, y, z): the shortest rotation taking +z to each unit normal (..., 3);
    180° about x for a normal along −z."""
    w = 1.0 + normals[..., 2:3]
    q = torch.cat([w, -normals[..., 1:2], normals[..., 0:1], torch.zeros_like(w)], -1)
    flipped = q.new_tensor([0.0, 1.0, 0.0, 0.0]).expand_as(q)
    q = torch.where(w > 1e-6, q, flipped)
    return q / q.norm(dim=-1, keepdim=True)


@dataclass
class Arap:
    """ARAP energy of positions (T, V, 3) against `rest` (V, 3), normalised by the mean squared edge length."""

    rest: torch.Tensor  # (V, 3)
    edges: torch.Tensor  # (2E, 2): every edge in both directions
    scale: float

    @classmethod
    def from_mesh(cls, rest: torch.Tensor, faces: np.ndarray) -> Arap:
        e = mesh_edges(faces)
        edges = torch.as_tensor(np.concatenate([e, e[:, ::-1]]), device=rest.device)
        lengths = (rest[edges[:, 0]] - rest[edges[:, 1]]).norm(dim=1)
        return cls(rest, edges, float((lengths**2).mean().clamp_min(1e-12)))

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        i, j = self.edges[:, 0], self.edges[:, 1]
        rest_e = self.rest[j] - self.rest[i]  # (2E, 3)
        cur_e = positions[:, j] - positions[:, i]  # (T, 2E, 3)
        with torch.no_grad():
            cov = positions.new_zeros(positions.shape[0], self.rest.shape[0], 3, 3)
            cov.index_add_(1, i, rest_e[None, :, :, None] * cur_e[:, :, None, :])
            u, _, vh = torch.linalg.svd(cov)
            flip = torch.det(vh.transpose(-1, -2) @ u.transpose(-1, -2)) < 0  # reflection → flip the last axis
            vh = torch.where(flip[..., None, None], vh * vh.new_tensor([1.0, 1.0, -1.0])[:, None], vh)
            rot = vh.transpose(-1, -2) @ u.transpose(-1, -2)  # (T, V, 3, 3)
        resid = cur_e - torch.einsum("teij,ej->tei", rot[:, i], rest_e)
        return resid.pow(2).sum(-1).mean() / self.scale


class DeformationGraph(nn.Module):
    """Embedded deformation (Sumner et al. 2007) of a rest mesh over time.

    `nodes` nodes are picked on the rest vertices by farthest-point sampling; each has a B-spline trajectory
    of a rotation (axis-angle about the node) and a translation, K control points each. A vertex follows its
    4 nearest nodes, blended with Sumner's weights (1 − d/d₅)². `regularizer` is Sumner's E_reg: each node's
    transform should carry its neighbours' positions to where their own transforms put them.
    """

    def __init__(self, rest: torch.Tensor, nodes: int, knots: int, neighbours: int = 4):
        super().__init__()
        points = rest.detach().cpu().double().numpy()
        count = max(1, min(int(nodes), len(points)))
        chosen = [0]
        dist = np.linalg.norm(points - points[0], axis=1)
        for _ in range(count - 1):
            chosen.append(int(dist.argmax()))
            dist = np.minimum(dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
        centres = points[chosen]
        k = min(neighbours, count)
        tree = cKDTree(centres)
        d, idx = tree.query(points, k=min(k + 1, count))
        d, idx = np.atleast_2d(d.T).T.reshape(len(points), -1), np.atleast_2d(idx.T).T.reshape(len(points), -1)
        if idx.shape[1] > k:  # Sumner: weights fall to zero at the (k+1)-th node
            w = (1.0 - d[:, :k] / np.maximum(d[:, k : k + 1], 1e-12)) ** 2
            idx = idx[:, :k]
        else:
            w = np.ones_like(d)
        w = np.where(w.sum(1, keepdims=True) > 1e-12, w, 1.0)
        w /= w.sum(1, keepdims=True)
        _, graph = tree.query(centres, k=min(neighbours + 1, count))
        graph = np.atleast_2d(graph.T).T.reshape(count, -1)[:, 1:]
        device, dtype = rest.device, rest.dtype
        self.register_buffer("rest", rest.detach().clone())
        self.register_buffer("centres", torch.as_tensor(centres, dtype=dtype, device=device))
        self.register_buffer("vertex_nodes", torch.as_tensor(idx, device=device))
        self.register_buffer("vertex_weights", torch.as_tensor(w, dtype=dtype, device=device))
        pairs = np.stack([np.repeat(np.arange(count), graph.shape[1]), graph.reshape(-1)], 1)
        self.register_buffer("pairs", torch.as_tensor(pairs, device=device))
        spacing = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1) if len(pairs) else np.ones(1)
        self.spacing2 = float(max((spacing**2).mean(), 1e-12))
        self.translation = nn.Parameter(torch.zeros(count, knots, 3, dtype=dtype, device=device))
        self.rotation = nn.Parameter(torch.zeros(count, knots, 3, dtype=dtype, device=device))

    def _transforms(self, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node rotations (T,M,3,3) and translations (T,M,3) for spline weights `basis` (T,K)."""
        rot = torch.einsum("tk,mkc->tmc", basis, self.rotation)
        return quat_to_rotmat(axis_angle_to_quat(rot)), torch.einsum("tk,mkc->tmc", basis, self.translation)

    def positions(self, basis: torch.Tensor) -> torch.Tensor:
        """(T, V, 3) vertex positions at the times whose spline weights are `basis` (T, K)."""
        rot, trans = self._transforms(basis)
        nodes = self.vertex_nodes  # (V, k)
        local = self.rest[:, None, :] - self.centres[nodes]  # (V, k, 3)
        moved = torch.einsum("tvkij,vkj->tvki", rot[:, nodes], local) + self.centres[nodes] + trans[:, nodes]
        return (moved * self.vertex_weights[None, :, :, None]).sum(2)

    def start_at(self, rotations: torch.Tensor, translations: torch.Tensor, centre: torch.Tensor, basis: torch.Tensor):
        """Set every node's trajectory to one rigid motion per time, x' = R_t (x − centre) + centre + τ_t, given
        as axis-angle `rotations` (T,3) and `translations` (T,3) at the times whose spline weights are `basis`
        (T,K): nearly exactly at those times when K = T, in the least-squares sense otherwise (spline_controls).
        Sumner's E_reg is zero for such a motion and ARAP does not see it, so the fit then only adds the non-rigid
        part."""
        with torch.no_grad():
            rot = quat_to_rotmat(axis_angle_to_quat(rotations.to(self.centres)))  # (T,3,3)
            local = self.centres - centre.to(self.centres)  # (M,3)
            node_t = (
                torch.einsum("tij,mj->tmi", rot, local)
                + centre.to(self.centres)
                + translations.to(self.centres)[:, None]
                - self.centres
            )  # (T,M,3)
            node_r = rotations.to(self.centres)[:, None].expand(-1, len(self.centres), -1)
            for param, values in ((self.translation, node_t), (self.rotation, node_r)):
                ctrl = spline_controls(basis, values.reshape(len(basis), -1))  # (K, M*3)
                param.copy_(ctrl.reshape(basis.shape[1], -1, 3).permute(1, 0, 2).to(param))

    def regularizer(self, basis: torch.Tensor) -> torch.Tensor:
        """Sumner's E_reg over the node graph, averaged over pairs and times, relative to the node spacing²."""
        if len(self.pairs) == 0:
            return self.translation.new_zeros(())
        rot, trans = self._transforms(basis)
        j, k = self.pairs[:, 0], self.pairs[:, 1]
        offset = self.centres[k] - self.centres[j]
        predicted = torch.einsum("tpij,pj->tpi", rot[:, j], offset) + self.centres[j] + trans[:, j]
        return (predicted - self.centres[k] - trans[:, k]).pow(2).sum(-1).mean() / self.spacing2
