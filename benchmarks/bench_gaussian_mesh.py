"""How fast path-2 meshes come out of dynamic Gaussians (backend/gaussians4d/mesh.py), on one thread.

20,000 Gaussians (σ 0.07, opacity 0.8) fill a ball of radius 1 that drifts along x; prints wall and CPU
time of the density grid alone, of extract_mesh at the given resolution (grid + marching cubes + cleanup),
and of deform_mesh over 16 frames, plus how round the mesh is (vertex distance to the centre).

    .venv/bin/python benchmarks/bench_gaussian_mesh.py [--gaussians 20000] [--resolution 96]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.gaussians4d.export import gaussians_at
from backend.gaussians4d.mesh import deform_mesh, density_grid, extract_mesh


class DriftingBall:
    """n Gaussians uniformly filling the unit ball, translating by (t, 0, 0)."""

    def __init__(self, n: int, sigma: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        points = rng.normal(size=(n, 3))
        points *= rng.uniform(size=(n, 1)) ** (1 / 3) / np.linalg.norm(points, axis=1, keepdims=True)
        self.points, self.sigma = points, sigma

    def __len__(self) -> int:
        return len(self.points)

    def at(self, t: float) -> dict[str, torch.Tensor]:
        n = len(self.points)
        return {
            "means": torch.tensor(self.points + [t, 0.0, 0.0], dtype=torch.float32),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            "scales": torch.full((n, 3), self.sigma),
            "opacities": torch.full((n,), 0.8),
            "colors": torch.full((n, 3), 0.5),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=20_000)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--sigma", type=float, default=0.07)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = DriftingBall(args.gaussians, args.sigma)

    clocks = [(time.perf_counter(), time.process_time())]
    grid = density_grid(gaussians_at(model, 0.0), args.resolution)
    clocks.append((time.perf_counter(), time.process_time()))
    vertices, faces = extract_mesh(model, 0.0, resolution=args.resolution)
    clocks.append((time.perf_counter(), time.process_time()))
    frames = deform_mesh(model, vertices, np.linspace(0, 1, 16))
    clocks.append((time.perf_counter(), time.process_time()))
    wall, cpu = np.diff(np.array(clocks), axis=0).T.tolist()
    radius = np.linalg.norm(vertices, axis=1)
    print(f"density_grid {grid.values.shape}, {len(model)} Gaussians: {wall[0]:.2f} s wall, {cpu[0]:.2f} s CPU")
    print(f"extract_mesh (grid + marching cubes + cleanup): {wall[1]:.2f} s wall, {cpu[1]:.2f} s CPU")
    print(f"  {len(vertices)} vertices, {len(faces)} faces; centre distance {radius.mean():.4f} ± {radius.std():.4f}")
    print(f"deform_mesh 16 frames, k=8: {wall[2]:.2f} s wall, {cpu[2]:.2f} s CPU -> {frames.shape}")


if __name__ == "__main__":
    main()
