"""The benchmark's setting on the real sequences (20 bones, ≤ 4 influences, the solver defaults), asserting
the E_RMS that benchmarks/bench_rig.py reaches, with a margin, and the issue's targets against the Dem Bones
figures measured on this machine by the same script (py-dem-bones 0.13.1, 30 iterations).

Measured by the benchmark (README table): free 2.90 / 4.40 / 8.01, skeleton 3.61 / 6.75 / 15.07.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.rig.skeleton import build_skeleton
from backend.rig.ssdr import solve_free

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "mesh-sequences"
DEM_BONES = {"horse-gallop": 4.78, "samba": 6.46, "chickenCrossing": 73.13}  # E_RMS, 20 bones, 4 influences
OURS = {"horse-gallop": (2.90, 3.61), "samba": (4.40, 6.75), "chickenCrossing": (8.01, 15.07)}  # free, skeleton
MARGIN = 1.1  # run-to-run: the solver is deterministic, BLAS summation order is not


@pytest.mark.parametrize("name", list(DEM_BONES))
def test_twenty_bones_meet_the_benchmark_bounds(name: str) -> None:
    with np.load(DATA / f"{name}.npz") as data:
        rest, faces, frames = data["rest"], data["faces"], data["frames"]
    free = solve_free(rest, frames, 20, faces=faces, max_influences=4)
    skeleton = build_skeleton(rest, frames, free, faces=faces)
    print(f"{name}: free {free.e_rms:.2f}, skeleton {skeleton.e_rms:.2f} (Dem Bones {DEM_BONES[name]})")
    assert free.e_rms <= MARGIN * OURS[name][0]
    assert skeleton.e_rms <= MARGIN * OURS[name][1]
    assert free.e_rms <= 0.8 * DEM_BONES[name]  # the targets
    assert skeleton.e_rms <= 1.2 * DEM_BONES[name]
    assert (skeleton.parents == -1).sum() == 1 and len(skeleton.parents) == 20
