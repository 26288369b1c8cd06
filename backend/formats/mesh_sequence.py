"""Mesh sequences: one topology, many frames of vertex positions.

Sources (DESIGN.md §6): the npz layout of `data/mesh-sequences/` (`rest` (V,3) float32,
`faces` (F,3) int32, `frames` (T,V,3) float32), a folder of OBJ files (one per frame,
sorted naturally by the number in their names), and PC2 point caches plus a rest mesh.

`open_mesh_sequence` returns a `MeshSequenceReader`: rest mesh and frame count up front,
frames on demand in chunks (OBJ folders load one file at a time, PC2 is memory-mapped),
so big sequences stream without being loaded whole. `load_mesh_sequence` reads it all.
Positions are in the source's units; no axis conversion. Every bad input raises
`shared.errors.InputError` with a message that says what to fix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import InputError

from .paths import files_with_suffix, require_dir, require_file

SUPPORTED = "an .npz file (rest, faces, frames), a folder of .obj files, or a .pc2 file with a rest mesh"
PC2_MAGIC = b"POINTCACHE2\0"
PC2_HEADER = np.dtype(
    [("magic", "S12"), ("version", "<i4"), ("points", "<i4"), ("start", "<f4"), ("rate", "<f4"), ("samples", "<i4")]
)  # 32 bytes, then float32 positions (samples, points, 3), little endian


@dataclass
class MeshSequence:
    """A whole mesh sequence in memory.

    rest (V,3) float32 reference pose, faces (F,3) int32 triangles (F may be 0),
    frames (T,V,3) float32 positions per frame, fps frames per second when known.
    """

    rest: np.ndarray
    faces: np.ndarray
    frames: np.ndarray
    name: str = ""
    fps: float | None = None

    @property
    def vertex_count(self) -> int:
        return int(self.rest.shape[0])

    @property
    def frame_count(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class MeshSequenceReader:
    """A mesh sequence whose frames are read on demand.

    `read_frames(start, stop)` returns positions (stop-start, V, 3) float32, C-contiguous,
    already checked to be finite; `iter_chunks` walks the whole sequence.
    """

    rest: np.ndarray
    faces: np.ndarray
    frame_count: int
    name: str
    fps: float | None
    source: Path
    _read: Callable[[int, int], np.ndarray]

    @property
    def vertex_count(self) -> int:
        return int(self.rest.shape[0])

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Positions of frames start..stop-1 as (N,V,3) float32."""
        if not 0 <= start < stop <= self.frame_count:
            raise IndexError(f"frames {start}..{stop} outside 0..{self.frame_count}")
        pos = np.ascontiguousarray(self._read(start, stop), dtype=np.float32)
        _check_finite_frames(pos, start, self.source)
        return pos

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, positions (N,V,3) float32) with N ≤ chunk_frames, covering every frame."""
        step = max(1, int(chunk_frames))
        for start in range(0, self.frame_count, step):
            yield start, self.read_frames(start, min(start + step, self.frame_count))

    def read_all(self) -> MeshSequence:
        """Load every frame into a `MeshSequence`."""
        return MeshSequence(self.rest, self.faces, self.read_frames(0, self.frame_count), self.name, self.fps)


def frames_per_chunk(vertex_count: int, budget_bytes: int = 4 << 20) -> int:
    """How many (V,3) float32 frames fit in `budget_bytes` (at least 1)."""
    return max(1, budget_bytes // max(1, vertex_count * 12))


# ---------------------------------------------------------------------------------- checks


def _check_finite_frames(pos: np.ndarray, start: int, source: Path) -> None:
    bad = ~np.isfinite(pos).all(axis=2)
    if bad.any():
        f, v = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{source.name}: frame {start + f} has a NaN or infinite position at vertex {v}; "
            "fix or re-export the sequence."
        )


def _rest_and_faces(vertices: np.ndarray, faces: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a rest mesh: vertices (V,3) finite, faces (F,3) integer in range."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] == 0:
        raise InputError(f"{source}: rest vertices must have shape (V, 3) with V ≥ 1, got {vertices.shape}.")
    if vertices.dtype.kind not in "iuf":
        raise InputError(f"{source}: rest vertices must be numbers, got dtype {vertices.dtype}.")
    if faces.size == 0:
        faces = faces.reshape(0, 3)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"{source}: faces must be triangles with shape (F, 3), got {faces.shape}.")
    if faces.dtype.kind not in "iu":
        raise InputError(f"{source}: faces must be integer vertex indices, got dtype {faces.dtype}.")
    rest = np.ascontiguousarray(vertices, dtype=np.float32)
    bad = ~np.isfinite(rest).all(axis=1)
    if bad.any():
        raise InputError(f"{source}: the rest mesh has a NaN or infinite position at vertex {int(np.argmax(bad))}.")
    v = rest.shape[0]
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        worst = int(faces.min()) if faces.min() < 0 else int(faces.max())
        face = int(np.argwhere((faces < 0) | (faces >= v))[0][0])
        raise InputError(f"{source}: face {face} refers to vertex {worst}, but the mesh has {v} vertices (0..{v - 1}).")
    return rest, np.ascontiguousarray(faces, dtype=np.int32)


# ---------------------------------------------------------------------------------- readers


def open_mesh_sequence(path: str | Path, rest_mesh: str | Path | None = None) -> MeshSequenceReader:
    """Open an .npz, a folder of .obj files or a .pc2 file (which needs `rest_mesh`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Mesh sequence {str(path)!r} does not exist; expected {SUPPORTED}.")
    suffix = path.suffix.lower()
    if rest_mesh and suffix != ".pc2":
        raise InputError(
            f"A rest mesh is only for a .pc2 point cache; {path.name} has its own rest pose and faces: "
            "leave the rest mesh out."
        )
    if path.is_dir():
        return open_obj_folder(path)
    if suffix == ".npz":
        return open_npz(path)
    if suffix == ".pc2":
        if not rest_mesh:
            raise InputError(
                f"{path.name} is a PC2 point cache, which holds positions only: give the mesh (OBJ, PLY, npz, ...) "
                "whose vertices it animates as its rest mesh (`--rest-mesh` on the command line)."
            )
        return open_pc2(path, rest_mesh)
    raise InputError(f"Cannot read {path.name!r}: unknown extension {suffix or '(none)'!r}; supported is {SUPPORTED}.")


def load_mesh_sequence(path: str | Path, rest_mesh: str | Path | None = None) -> MeshSequence:
    """Read a whole mesh sequence (see `open_mesh_sequence`)."""
    return open_mesh_sequence(path, rest_mesh).read_all()


def open_npz(path: str | Path) -> MeshSequenceReader:
    """The data/mesh-sequences layout: rest (V,3), faces (F,3), frames (T,V,3); optional scalar fps."""
    path = require_file(Path(path), "Mesh sequence")
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path.name} is not an npz file (npz files are zip archives of .npy arrays, written by numpy.savez)."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("rest", "faces", "frames") if k not in data.files]
            if missing:
                raise InputError(
                    f"{path.name} is missing the array(s) {', '.join(missing)}; a mesh sequence npz needs "
                    f"rest (V,3), faces (F,3) and frames (T,V,3) (it has: {', '.join(data.files) or 'nothing'})."
                )
            rest, faces = _rest_and_faces(data["rest"], data["faces"], path.name)
            frames = data["frames"]
            fps = float(data["fps"]) if "fps" in data.files and np.asarray(data["fps"]).size == 1 else None
    except InputError:
        raise
    except Exception as exc:  # zipfile, pickle refusal, corrupt data
        raise InputError(f"{path.name} is not a readable npz file: {exc}") from exc
    v = rest.shape[0]
    if frames.ndim != 3 or frames.shape[2] != 3 or frames.shape[0] == 0:
        raise InputError(f"{path.name}: 'frames' must have shape (T, V, 3) with T ≥ 1, got {frames.shape}.")
    if frames.shape[1] != v:
        raise InputError(
            f"{path.name}: 'frames' has {frames.shape[1]} vertices per frame but 'rest' has {v}; "
            "a mesh sequence needs one topology for all frames."
        )
    if frames.dtype.kind not in "iuf":
        raise InputError(f"{path.name}: 'frames' must be numbers, got dtype {frames.dtype}.")
    frames = frames.astype(np.float32, copy=False)
    return MeshSequenceReader(rest, faces, frames.shape[0], path.stem, fps, path, lambda a, b: frames[a:b])


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V,3) f64, triangles (F,3) i64) of an OBJ file: every `v` line in file order, whether or not a
    face uses it, and every `f` line (`i`, `i/j`, `i//k`, `i/j/k`, negative indices) fan-triangulated, so quads
    and n-gons (Blender's OBJ export default) load. Groups, objects, UVs, normals and materials are ignored.

    Our own few lines rather than trimesh's OBJ loader: an animation's point cache is indexed by the file's
    vertex order, and trimesh splits vertices at UV seams or drops trailing loose ones depending on the file."""
    vertices: list[list[float]] = []
    triangles: list[tuple[int, int, int]] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            try:
                if parts[0] == b"v":
                    vertices.append([float(x) for x in parts[1:4]])
                    if len(vertices[-1]) != 3:
                        raise ValueError("a vertex needs x, y and z")
                elif parts[0] == b"f":
                    corners = [int(p.split(b"/")[0]) for p in parts[1:]]
                    corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
                    if len(corners) < 3:
                        raise ValueError("a face needs 3 or more vertex indices")
                    triangles.extend((corners[0], corners[i], corners[i + 1]) for i in range(1, len(corners) - 1))
            except ValueError as exc:
                text = raw.strip()[:60].decode("utf-8", "replace")
                raise InputError(f"{path.name!r} line {number} is not valid OBJ ({exc}): {text!r}") from None
    return np.asarray(vertices, np.float64).reshape(-1, 3), np.asarray(triangles, np.int64).reshape(-1, 3)


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of a mesh file, in file order (no merging, splitting or reordering; STL, which stores
    each triangle's corners apart, has its equal corners merged into vertices): OBJ through
    `read_obj`, an npz with `rest` and `faces` (a mesh-sequence npz), other formats (PLY, STL, glTF, OFF, ...)
    through trimesh.load. InputError when it has no vertices."""
    if path.suffix.lower() == ".obj":
        vertices, faces = read_obj(path)
    elif path.suffix.lower() == ".npz":
        vertices, faces = _npz_mesh(path)
    else:
        import trimesh

        try:
            mesh = trimesh.load(path, process=False, maintain_order=True, force="mesh")
            if path.suffix.lower() == ".stl":
                mesh.merge_vertices()  # STL stores every triangle's corners apart: no shared vertices, no order
        except Exception as exc:
            raise InputError(
                f"Cannot read mesh {path.name!r}: {exc}. Meshes are read from OBJ, PLY, STL, OFF, glTF/GLB or a "
                "mesh-sequence npz (export FBX, Alembic or .blend meshes as OBJ or glTF first)."
            ) from exc
        vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))))
        faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3), np.int64)))
    if vertices.shape[0] == 0:
        raise InputError(f"Mesh {path.name!r} has no vertices.")
    return vertices, faces


def _npz_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`rest` and `faces` of an npz (a mesh-sequence npz's rest pose); InputError when it has no such arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "rest" in data.files and "faces" in data.files:
                return np.asarray(data["rest"]), np.asarray(data["faces"])
            arrays = ", ".join(data.files) or "none"
    except Exception as exc:  # not a zip, pickled objects, corrupt data
        raise InputError(f"Cannot read mesh {path.name!r}: not a readable npz file ({exc}).") from exc
    raise InputError(
        f"{path.name} holds no mesh: a mesh npz has the arrays rest (V,3) and faces (F,3), as a mesh-sequence npz "
        f"does (it has: {arrays})."
    )


def open_obj_folder(folder: str | Path) -> MeshSequenceReader:
    """A folder of .obj files, one per frame, sorted naturally (frame_2 before frame_10).

    The first file gives rest and faces; every file must have the same vertex count.
    """
    folder = require_dir(Path(folder), "Mesh sequence folder")
    files = files_with_suffix(folder, ".obj")
    if not files:
        others = sorted({p.suffix.lower() for p in folder.iterdir() if p.is_file()} - {""})
        found = f" (found {', '.join(others)} files)" if others else " (it is empty)"
        raise InputError(
            f"Folder {str(folder)!r} has no .obj files{found}; a mesh sequence folder holds one OBJ per frame."
        )
    vertices, faces = read_mesh(files[0])
    rest, faces = _rest_and_faces(vertices, faces, files[0].name)
    v = rest.shape[0]

    def read(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, v, 3), np.float32)
        for i in range(start, stop):
            verts = rest if i == 0 else read_mesh(files[i])[0]
            if verts.shape[0] != v:
                raise InputError(
                    f"Mesh sequence changes vertex count at frame {i} ({files[i].name}: {v} → {verts.shape[0]}); "
                    "a mesh sequence needs one topology for all frames."
                )
            out[i - start] = verts
        return out

    return MeshSequenceReader(rest, faces, len(files), folder.name, None, folder, read)


def read_pc2_header(path: Path) -> tuple[int, int, float, float]:
    """(points, samples, start_frame, sample_rate) of a PC2 file, checked against its size."""
    size = path.stat().st_size
    if size < PC2_HEADER.itemsize:
        raise InputError(f"{path.name} is too short to be a PC2 file ({size} bytes; the header alone is 32).")
    head = np.fromfile(path, dtype=PC2_HEADER, count=1)[0]
    if bytes(head["magic"]).ljust(12, b"\0") != PC2_MAGIC:
        raise InputError(f"{path.name} is not a PC2 file: it does not start with 'POINTCACHE2'.")
    version, points, samples = int(head["version"]), int(head["points"]), int(head["samples"])
    if version != 1:
        raise InputError(f"{path.name}: PC2 version {version} is not supported (only version 1).")
    if points <= 0 or samples <= 0:
        raise InputError(f"{path.name}: PC2 header says {points} points and {samples} samples; both must be ≥ 1.")
    expected = PC2_HEADER.itemsize + points * samples * 12
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise InputError(
            f"{path.name} is {state}: {points} points × {samples} samples need {expected} bytes, the file has {size}."
        )
    return points, samples, float(head["start"]), float(head["rate"])


def open_pc2(path: str | Path, rest_mesh: str | Path) -> MeshSequenceReader:
    """A PC2 point cache (memory-mapped) plus the rest mesh whose vertex order it animates."""
    path = require_file(Path(path), "PC2 file")
    rest_path = require_file(Path(rest_mesh), "Rest mesh")
    points, samples, _start, _rate = read_pc2_header(path)
    vertices, faces = read_mesh(rest_path)
    rest, faces = _rest_and_faces(vertices, faces, rest_path.name)
    if rest.shape[0] != points:
        raise InputError(
            f"{path.name} animates {points} points but the rest mesh {rest_path.name} has {rest.shape[0]} vertices; "
            "use the mesh the cache was written from (loaded without merging vertices)."
        )
    positions = np.memmap(path, dtype="<f4", mode="r", offset=PC2_HEADER.itemsize, shape=(samples, points, 3))
    # np.array copies: chunks are plain in-memory arrays, not views that keep the file mapped
    return MeshSequenceReader(rest, faces, samples, path.stem, None, path, lambda a, b: np.array(positions[a:b]))


# ---------------------------------------------------------------------------------- writers


def write_npz(path: str | Path, seq: MeshSequence, compressed: bool = True) -> Path:
    """Write the data/mesh-sequences npz layout (plus fps when known)."""
    path = Path(path)
    arrays = {
        "rest": np.asarray(seq.rest, np.float32),
        "faces": np.asarray(seq.faces, np.int32),
        "frames": np.asarray(seq.frames, np.float32),
    }
    if seq.fps:
        arrays["fps"] = np.float32(seq.fps)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def pc2_header(points: int, samples: int, start_frame: float = 0.0, sample_rate: float = 1.0) -> bytes:
    """The 32-byte PC2 header."""
    head = np.zeros((), PC2_HEADER)
    head["magic"], head["version"], head["points"] = PC2_MAGIC, 1, points
    head["start"], head["rate"], head["samples"] = start_frame, sample_rate, samples
    return head.tobytes()


def write_pc2(path: str | Path, frames: np.ndarray, start_frame: float = 0.0, sample_rate: float = 1.0) -> Path:
    """Write positions (T,V,3) as a PC2 point cache (what Blender's Mesh Cache modifier reads)."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise InputError(f"PC2 frames must have shape (T, V, 3), got {frames.shape}.")
    with open(path, "wb") as f:
        f.write(pc2_header(frames.shape[1], frames.shape[0], start_frame, sample_rate))
        f.write(np.ascontiguousarray(frames, dtype="<f4").tobytes())
    return path


def write_obj_folder(folder: str | Path, seq: MeshSequence, prefix: str = "frame_") -> list[Path]:
    """Write one OBJ per frame (`frame_1.obj` … `frame_T.obj`, unpadded) with trimesh; returns the paths."""
    import trimesh

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, positions in enumerate(seq.frames):
        mesh = trimesh.Trimesh(vertices=positions, faces=seq.faces, process=False)
        p = folder / f"{prefix}{i + 1}.obj"
        p.write_text(trimesh.exchange.obj.export_obj(mesh, include_normals=False, digits=9))
        paths.append(p)
    return paths
