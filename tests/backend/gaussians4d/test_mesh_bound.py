"""Mesh path 1 helpers: surface normals and the frames of the flat Gaussians that lie in the surface."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from backend.gaussians4d.mesh_bound import normal_quats, vertex_edge_lengths, vertex_normals
from backend.gaussians4d.rasterize import quat_to_rotmat


def test_vertex_normals_of_a_sphere_point_outwards_and_carry_gradients():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    positions = torch.tensor(sphere.vertices, dtype=torch.float32, requires_grad=True)
    normals = vertex_normals(positions, torch.as_tensor(sphere.faces))
    radial = positions.detach() / positions.detach().norm(dim=1, keepdim=True)
    assert (normals.detach() * radial).sum(1).min() > np.cos(np.radians(3))
    normals[:, 2].sum().backward()
    assert torch.isfinite(positions.grad).all() and positions.grad.abs().sum() > 0


def test_a_vertex_on_no_face_gets_plus_z():
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    normals = vertex_normals(positions, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(normals, torch.tensor([[0.0, 0.0, 1.0]] * 4))


def test_normal_quats_turn_plus_z_onto_each_normal_including_minus_z():
    normals = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    normals = torch.cat([normals, torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])])
    rot = quat_to_rotmat(normal_quats(normals))
    torch.testing.assert_close(rot[:, :, 2], normals, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.det(rot), torch.ones(len(normals)), atol=1e-5, rtol=0)


def test_vertex_edge_lengths_average_each_vertexs_own_edges():
    # a unit right triangle and a stray vertex: corner 0 has edges 1 and 1, corner 1 has 1 and √2
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float32)
    lengths = vertex_edge_lengths(vertices, np.array([[0, 1, 2]]))
    np.testing.assert_allclose(lengths[:3], [1.0, (1 + 2**0.5) / 2, (1 + 2**0.5) / 2], rtol=1e-6)
    assert np.isclose(lengths[3], (2 + 2**0.5) / 3)  # the stray vertex: the mesh's mean edge
