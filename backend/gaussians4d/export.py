"""Frames out of a dynamic Gaussian model: 3DGS PLY per time, `gaussians.frame` arrays, meshes.

`model` is anything with `.at(t)` returning a dict of torch tensors — means (N,3), quats (N,4) w,x,y,z,
scales (N,3) activated (positive), opacities (N,) activated in (0,1), colors (N,3) RGB — and `len()`
(`backend.gaussians4d.model.DynamicGaussians`). Times are in [0, 1].

The PLY and `gaussians.frame` layouts store raw parameters: log scales, logit opacities, unit quaternions
and degree-0 SH coefficients `sh_dc = (rgb − 0.5) / C0` (C0 = 0.28209479177387814, the constant of SH
band 0, so a renderer that adds 0.5 after evaluating SH gets `rgb` back).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backend.formats.gaussian_ply import GaussianFrame, write_gaussian_ply
from backend.formats.mesh_sequence import MeshSequence, write_npz
from backend.formats.paths import prepare_output_file, prepare_output_folder
from shared.errors import InputError
from shared.results import SH_C0, check_gaussians

OPACITY_EPS = 1e-6  # opacities are clipped to [eps, 1 − eps] before the logit so it stays finite
GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")


class GaussianModel(Protocol):
    """What the exporters and the mesh extractor need of a model."""

    def at(self, t: float) -> dict[str, Any]: ...

    def __len__(self) -> int: ...


def check_time(t: float, what: str = "time") -> float:
    """`t` as a float in [0, 1]; InputError otherwise."""
    try:
        value = float(t)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a number in [0, 1], got {t!r}.") from exc
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"{what} must be in [0, 1] (the clip's start to its end), got {value}.")
    return value


def check_times(times: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Times as a (T,) float64 array, T ≥ 1, each in [0, 1]; InputError names the first bad one."""
    arr = np.atleast_1d(np.asarray(times, dtype=object))
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"times must be a non-empty list of numbers in [0, 1], got shape {arr.shape}.")
    return np.array([check_time(t, f"times[{i}]") for i, t in enumerate(arr)], dtype=np.float64)


def gaussians_at(model: GaussianModel, t: float) -> dict[str, np.ndarray]:
    """The model's Gaussians at time `t` as float64 numpy arrays (activated values, unit quaternions).

    Keys means (N,3), quats (N,4) w,x,y,z normalised, scales (N,3), opacities (N,), colors (N,3).
    InputError if the model has no Gaussians or returns missing, misshapen or non-finite values.
    """
    import torch

    t = check_time(t)
    if len(model) == 0:
        raise InputError("The Gaussian model is empty (0 Gaussians); fit it to some frames first.")
    with torch.no_grad():
        raw = model.at(t)
    missing = [k for k in GAUSSIAN_KEYS if k not in raw]
    if missing:
        raise InputError(f"The model's Gaussians at t={t} lack {', '.join(missing)}; expected {GAUSSIAN_KEYS}.")
    out = {k: torch.as_tensor(raw[k]).detach().to("cpu", torch.float64).numpy() for k in GAUSSIAN_KEYS}
    n = out["means"].shape[0]
    widths = {"means": 3, "quats": 4, "scales": 3, "colors": 3}
    for key, width in widths.items():
        if out[key].shape != (n, width):
            raise InputError(f"The model's {key} at t={t} have shape {out[key].shape}; expected ({n}, {width}).")
    out["opacities"] = out["opacities"].reshape(-1)
    if out["opacities"].shape != (n,):
        raise InputError(f"The model's opacities at t={t} have {out['opacities'].size} values for {n} Gaussians.")
    for key, value in out.items():
        if not np.isfinite(value).all():
            raise InputError(f"The model's {key} at t={t} hold NaN or infinite values; the fit diverged.")
    norms = np.linalg.norm(out["quats"], axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise InputError(f"Gaussian {int(np.argmin(norms))} has a zero quaternion at t={t}.")
    out["quats"] = out["quats"] / norms
    return out


def gaussian_frame_arrays(model: GaussianModel, t: float) -> dict[str, np.ndarray]:
    """The `gaussians.frame` arrays of shared/results.py at time `t` (all float32).

    means (N,3), scales (N,3) log scale, rotations (N,4) unit w,x,y,z, opacities (N,) logit, sh_dc (N,3), and
    sh_rest (N,K,3) for a model with view-dependent colour.
    """
    g = gaussians_at(model, t)
    opacity = np.clip(g["opacities"], OPACITY_EPS, 1.0 - OPACITY_EPS)
    arrays = {
        "means": g["means"],
        "scales": np.log(np.maximum(g["scales"], 1e-30)),
        "rotations": g["quats"],
        "opacities": np.log(opacity) - np.log1p(-opacity),
        "sh_dc": (g["colors"] - 0.5) / SH_C0,
    }
    sh_rest = getattr(model, "sh_rest", None)  # view-dependent colour: 3DGS's f_rest, the same basis (sh.py)
    if sh_rest is not None:
        arrays["sh_rest"] = sh_rest.detach().cpu().numpy()
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    check_gaussians(arrays, what=f"Gaussian frame at t={t}")
    return arrays


def export_frames_ply(
    model: GaussianModel, times: float | Sequence[float] | np.ndarray, folder: str | Path, prefix: str = "frame_"
) -> list[Path]:
    """Write one standard 3DGS PLY per time into `folder` (created if missing); return the paths in order.

    Files are `frame_0001.ply`, `frame_0002.ply`, … (zero-padded, 1-based, in the order of `times`). Frames of
    an earlier export there (`frame_NNNN.ply` files) are removed first, so the folder holds one sequence (a
    splat tool that loads the folder would otherwise play old frames after the new ones); other files stay.
    """
    times = check_times(times)
    folder = prepare_output_folder(folder, "PLY folder")
    for old in folder.glob(f"{prefix}*.ply"):
        if old.stem[len(prefix) :].isdigit():
            old.unlink()
    digits = max(4, len(str(len(times))))
    paths = []
    for i, t in enumerate(times):
        name = f"{prefix}{i + 1:0{digits}d}"
        frame = GaussianFrame(**gaussian_frame_arrays(model, t), name=name)
        paths.append(write_gaussian_ply(folder / f"{name}.ply", frame))
    return paths


def _mesh(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 (V,3) vertices and int32 (F,3) faces."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise InputError(f"{what}: vertices must have shape (V, 3) with V ≥ 1, got {v.shape}.")
    if not np.isfinite(v).all():
        raise InputError(f"{what}: vertex {int(np.argwhere(~np.isfinite(v))[0][0])} is NaN or infinite.")
    if f.size == 0:
        f = f.reshape(0, 3)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise InputError(f"{what}: faces must be integer triangles of shape (F, 3), got {f.dtype} {f.shape}.")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise InputError(f"{what}: faces refer to vertices outside 0..{v.shape[0] - 1}.")
    return np.ascontiguousarray(v, np.float32), np.ascontiguousarray(f, np.int32)


def export_mesh_sequence(
    path_npz: str | Path, rest: np.ndarray, faces: np.ndarray, frames: np.ndarray, fps: float | None = None
) -> Path:
    """Write a mesh sequence npz (DESIGN §6: rest (V,3) f32, faces (F,3) i32, frames (T,V,3) f32); returns the
    path written (".npz" is added when `path_npz` lacks it; its folder is created)."""
    path_npz = Path(path_npz)
    if path_npz.suffix.lower() != ".npz":
        path_npz = path_npz.with_name(path_npz.name + ".npz")
    prepare_output_file(path_npz, "Mesh sequence file")
    rest, faces = _mesh(rest, faces, "Mesh sequence")
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] == 0 or frames.shape[1:] != rest.shape:
        raise InputError(
            f"Mesh sequence: frames must have shape (T, {rest.shape[0]}, 3) with T ≥ 1 (one topology for all "
            f"frames), got {frames.shape}."
        )
    if not np.isfinite(frames).all():
        t, v = (int(i) for i in np.argwhere(~np.isfinite(frames).all(axis=2))[0])
        raise InputError(f"Mesh sequence: frame {t} has a NaN or infinite position at vertex {v}.")
    return write_npz(path_npz, MeshSequence(rest, faces, frames.astype(np.float32), Path(path_npz).stem, fps))


MESH_FILE_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".off")


def check_mesh_target(path: str | Path) -> Path:
    """`path` checked as where export_obj may write (a known suffix, its folder made, writable), before any work.

    An existing OBJ with UVs or faces of more than three corners is refused: this export writes triangles
    without UVs, so that file is someone's own mesh (often the one the fit followed), not an earlier export."""
    path = Path(path)
    if path.suffix.lower() not in MESH_FILE_SUFFIXES:
        raise InputError(
            f"Cannot write a mesh as {path.name!r}: name the file with one of {', '.join(MESH_FILE_SUFFIXES)}."
        )
    prepare_output_file(path, "Mesh file")
    if path.suffix.lower() == ".obj" and path.is_file() and _richer_obj(path):
        raise InputError(
            f"{str(path)!r} holds UVs or faces of four or more corners, which writing the rest mesh there would "
            "replace with the fitted triangles: this option writes a mesh, it does not read one. Give a new file "
            "name (or delete that file first)."
        )
    return path


def _richer_obj(path: Path) -> bool:
    """Whether an OBJ has texture coordinates or a face of more than three corners."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("vt ") or (line.startswith("f ") and len(line.split()) > 4):
                return True
    return False


def export_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write one triangle mesh in the format its suffix names: OBJ (9 digits, no normals), or PLY, STL, GLB or
    OFF through trimesh; vertex order kept. Its folder is created."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FILE_SUFFIXES:
        raise InputError(
            f"Cannot write a mesh as {path.name!r}: name the file with one of {', '.join(MESH_FILE_SUFFIXES)}."
        )
    vertices, faces = _mesh(vertices, faces, "Mesh export")
    prepare_output_file(path, "Mesh file")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    if suffix == ".obj":
        path.write_text(trimesh.exchange.obj.export_obj(mesh, include_normals=False, digits=9))
    else:
        mesh.export(path)
    return path
