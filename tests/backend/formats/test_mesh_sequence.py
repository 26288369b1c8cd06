"""Mesh sequence readers and writers: round trips on real and procedural data, and every refusal."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.formats.mesh_sequence import (
    MeshSequence,
    frames_per_chunk,
    load_mesh_sequence,
    open_mesh_sequence,
    pc2_header,
    read_pc2_header,
    write_npz,
    write_obj_folder,
    write_pc2,
)
from backend.samples import twisting_bar
from shared.errors import InputError

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mesh-sequences"


@pytest.fixture(scope="module")
def bar() -> MeshSequence:
    return twisting_bar(frames=12, subdivisions=3)  # 386 vertices, 768 triangles


def _write_rest(path: Path, seq: MeshSequence) -> Path:
    trimesh.Trimesh(seq.rest, seq.faces, process=False).export(path)
    return path


# ------------------------------------------------------------------------------ real data


@pytest.mark.parametrize("name", ["cat-poses.npz", "horse-gallop.npz"])
def test_real_npz_round_trips_through_npz_and_pc2(tmp_path: Path, name: str) -> None:
    src = load_mesh_sequence(DATA / name)
    raw = np.load(DATA / name)
    assert np.array_equal(src.rest, raw["rest"]) and np.array_equal(src.faces, raw["faces"])
    assert np.array_equal(src.frames, raw["frames"])
    assert src.rest.dtype == np.float32 and src.faces.dtype == np.int32 and src.frames.dtype == np.float32

    again = load_mesh_sequence(write_npz(tmp_path / "copy.npz", src))
    assert np.array_equal(again.frames, src.frames) and np.array_equal(again.faces, src.faces)

    rest = _write_rest(tmp_path / "rest.ply", src)
    pc2 = load_mesh_sequence(write_pc2(tmp_path / "anim.pc2", src.frames), rest_mesh=rest)
    assert np.array_equal(pc2.frames, src.frames)
    assert np.array_equal(pc2.rest, src.rest) and np.array_equal(pc2.faces, src.faces)


def test_real_npz_round_trips_through_obj_folder(tmp_path: Path) -> None:
    src = load_mesh_sequence(DATA / "cat-poses.npz")
    write_obj_folder(tmp_path / "cat", src)
    back = load_mesh_sequence(tmp_path / "cat")
    assert back.frame_count == 9 and back.vertex_count == 7207
    assert np.array_equal(back.faces, src.faces)
    np.testing.assert_allclose(back.frames, src.frames, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(back.rest, back.frames[0])  # an OBJ folder's rest is its first file


# ------------------------------------------------------------------------------ procedural


def test_twisting_bar_is_deterministic_and_moves() -> None:
    a, b = twisting_bar(frames=8, subdivisions=2), twisting_bar(frames=8, subdivisions=2)
    assert np.array_equal(a.frames, b.frames)
    assert a.frames.shape == (8, a.vertex_count, 3) and a.faces.max() < a.vertex_count
    assert np.array_equal(a.frames[0], a.rest)
    assert np.abs(a.frames[2] - a.rest).max() > 0.1
    assert twisting_bar(frames=2).vertex_count == 6146


def test_obj_folder_sorts_naturally_and_streams_chunks(tmp_path: Path, bar: MeshSequence) -> None:
    paths = write_obj_folder(tmp_path, bar)
    assert [p.name for p in paths][:3] == ["frame_1.obj", "frame_2.obj", "frame_3.obj"]
    (tmp_path / "._frame_1.obj").write_bytes(b"\x00\x05\x16\x07 Mac OS X")  # macOS's companion file: not a frame
    reader = open_mesh_sequence(tmp_path)
    assert reader.frame_count == 12 and reader.name == tmp_path.name
    chunks = list(reader.iter_chunks(5))
    assert [s for s, _ in chunks] == [0, 5, 10] and [c.shape[0] for _, c in chunks] == [5, 5, 2]
    np.testing.assert_allclose(np.concatenate([c for _, c in chunks]), bar.frames, atol=1e-6)


def test_pc2_is_memory_mapped_and_header_round_trips(tmp_path: Path, bar: MeshSequence) -> None:
    write_pc2(tmp_path / "a.pc2", bar.frames, start_frame=5.0, sample_rate=0.5)
    assert read_pc2_header(tmp_path / "a.pc2") == (bar.vertex_count, 12, 5.0, 0.5)
    assert (tmp_path / "a.pc2").read_bytes()[:12] == b"POINTCACHE2\0"
    reader = open_mesh_sequence(tmp_path / "a.pc2", _write_rest(tmp_path / "rest.obj", bar))
    chunk = reader.read_frames(3, 7)
    assert chunk.flags.c_contiguous and chunk.dtype == np.float32
    assert type(chunk) is np.ndarray and chunk.flags.owndata  # a copy, not a view of the memory map
    assert np.array_equal(chunk, bar.frames[3:7])


def test_npz_keeps_fps(tmp_path: Path, bar: MeshSequence) -> None:
    write_npz(tmp_path / "b.npz", bar)
    assert load_mesh_sequence(tmp_path / "b.npz").fps == pytest.approx(24.0)


def test_frames_per_chunk() -> None:
    assert frames_per_chunk(8431) == (4 << 20) // (8431 * 12)
    assert frames_per_chunk(10_000_000) == 1


# ------------------------------------------------------------------------------ refusals


def _raises(match: str, *args, **kwargs) -> None:
    with pytest.raises(InputError, match=match):
        load_mesh_sequence(*args, **kwargs)


def test_missing_path_names_it(tmp_path: Path) -> None:
    _raises(r"nope\.npz' does not exist", tmp_path / "nope.npz")


def test_empty_folder(tmp_path: Path) -> None:
    _raises(r"has no \.obj files \(it is empty\)", tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    _raises(r"has no \.obj files \(found \.txt files\)", tmp_path)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "anim.abc").write_bytes(b"x")
    _raises(r"unknown extension '\.abc'.*\.npz.*\.obj.*\.pc2", tmp_path / "anim.abc")


def test_npz_missing_keys_named(tmp_path: Path, bar: MeshSequence) -> None:
    np.savez(tmp_path / "a.npz", rest=bar.rest, verts=bar.frames)
    _raises(r"missing the array\(s\) faces, frames.*it has: rest, verts", tmp_path / "a.npz")


def test_npz_wrong_shapes(tmp_path: Path, bar: MeshSequence) -> None:
    np.savez(tmp_path / "a.npz", rest=bar.rest, faces=bar.faces, frames=bar.frames[:, :, :2])
    _raises(r"'frames' must have shape \(T, V, 3\).*\(12, 386, 2\)", tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", rest=bar.rest, faces=bar.faces, frames=bar.frames[:, :-1])
    _raises(r"'frames' has 385 vertices per frame but 'rest' has 386", tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", rest=bar.rest[:, :2], faces=bar.faces, frames=bar.frames)
    _raises(r"rest vertices must have shape \(V, 3\)", tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", rest=bar.rest, faces=bar.faces[:, :2], frames=bar.frames)
    _raises(r"faces must be triangles", tmp_path / "d.npz")


def test_npz_faces_out_of_range(tmp_path: Path, bar: MeshSequence) -> None:
    faces = bar.faces.copy()
    faces[7, 1] = 386
    np.savez(tmp_path / "a.npz", rest=bar.rest, faces=faces, frames=bar.frames)
    _raises(r"face 7 refers to vertex 386, but the mesh has 386 vertices \(0\.\.385\)", tmp_path / "a.npz")
    faces[7, 1] = -2
    np.savez(tmp_path / "b.npz", rest=bar.rest, faces=faces, frames=bar.frames)
    _raises(r"face 7 refers to vertex -2", tmp_path / "b.npz")


def test_non_finite_names_frame_and_vertex(tmp_path: Path, bar: MeshSequence) -> None:
    frames = bar.frames.copy()
    frames[4, 123, 2] = np.inf
    frames[9, 5, 0] = np.nan
    np.savez(tmp_path / "a.npz", rest=bar.rest, faces=bar.faces, frames=frames)
    _raises(r"frame 4 has a NaN or infinite position at vertex 123", tmp_path / "a.npz")
    reader = open_mesh_sequence(tmp_path / "a.npz")
    assert reader.read_frames(0, 4).shape == (4, 386, 3)  # streaming reads the good frames before the bad one
    with pytest.raises(InputError, match="frame 9 .* vertex 5"):
        reader.read_frames(5, 12)
    rest = bar.rest.copy()
    rest[17] = np.nan
    np.savez(tmp_path / "b.npz", rest=rest, faces=bar.faces, frames=bar.frames)
    _raises(r"rest mesh has a NaN or infinite position at vertex 17", tmp_path / "b.npz")


def test_obj_folder_vertex_count_change(tmp_path: Path, bar: MeshSequence) -> None:
    write_obj_folder(tmp_path, bar, prefix="walk_")
    smaller = trimesh.Trimesh(bar.frames[10][:-1], bar.faces[bar.faces.max(axis=1) < 385], process=False)
    (tmp_path / "walk_11.obj").write_text(trimesh.exchange.obj.export_obj(smaller, include_normals=False))
    reader = open_mesh_sequence(tmp_path)  # opening reads only the first file
    chunks = reader.iter_chunks(4)
    assert [next(chunks)[0], next(chunks)[0]] == [0, 4]  # frames before the bad file stream fine
    with pytest.raises(
        InputError,
        match=r"changes vertex count at frame 10 \(walk_11\.obj: 386 → 385\); a mesh sequence needs one topology",
    ):
        reader.read_all()


def test_pc2_needs_rest_mesh(tmp_path: Path, bar: MeshSequence) -> None:
    write_pc2(tmp_path / "a.pc2", bar.frames)
    _raises(r"a\.pc2 is a PC2 point cache.*as its rest mesh", tmp_path / "a.pc2")
    _raises(r"Rest mesh '.*missing\.obj' does not exist", tmp_path / "a.pc2", rest_mesh=tmp_path / "missing.obj")


def test_pc2_rest_mesh_vertex_count_must_match(tmp_path: Path, bar: MeshSequence) -> None:
    write_pc2(tmp_path / "a.pc2", bar.frames[:, :100])
    rest = _write_rest(tmp_path / "rest.ply", bar)
    _raises(r"a\.pc2 animates 100 points but the rest mesh rest\.ply has 386 vertices", tmp_path / "a.pc2", rest)


def test_pc2_truncated_and_bad_header(tmp_path: Path, bar: MeshSequence) -> None:
    rest = _write_rest(tmp_path / "rest.obj", bar)
    data = write_pc2(tmp_path / "a.pc2", bar.frames).read_bytes()
    (tmp_path / "cut.pc2").write_bytes(data[:-10])
    cut = r"cut\.pc2 is truncated: 386 points × 12 samples need 55616 bytes, the file has 55606"
    _raises(cut, tmp_path / "cut.pc2", rest)
    (tmp_path / "long.pc2").write_bytes(data + b"\0" * 4)
    _raises(r"longer than its header says", tmp_path / "long.pc2", rest)
    (tmp_path / "short.pc2").write_bytes(data[:20])
    _raises(r"too short to be a PC2 file \(20 bytes", tmp_path / "short.pc2", rest)
    (tmp_path / "magic.pc2").write_bytes(b"POINTCACHE3\0" + data[12:])
    _raises(r"not a PC2 file: it does not start with 'POINTCACHE2'", tmp_path / "magic.pc2", rest)
    (tmp_path / "v2.pc2").write_bytes(data[:12] + np.int32(2).tobytes() + data[16:])
    _raises(r"PC2 version 2 is not supported", tmp_path / "v2.pc2", rest)
    (tmp_path / "zero.pc2").write_bytes(pc2_header(386, 0))
    _raises(r"386 points and 0 samples", tmp_path / "zero.pc2", rest)


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    _raises(r"bad\.npz is not an npz file \(npz files are zip archives", tmp_path / "bad.npz")
    with zipfile.ZipFile(tmp_path / "broken.npz", "w") as z:
        for name in ("rest", "faces", "frames"):
            npy = io.BytesIO()
            np.save(npy, np.zeros((8, 3), np.float32))
            z.writestr(f"{name}.npy", npy.getvalue()[:-20])  # cut short
    _raises(r"broken\.npz is not a readable npz file", tmp_path / "broken.npz")
    cat = DATA / "cat-poses.npz"
    _raises(r"only for a \.pc2 point cache; cat-poses\.npz has its own rest pose", cat, tmp_path / "rest.obj")
    folder = tmp_path / "objs"
    folder.mkdir()
    (folder / "f_1.obj").write_text("# nothing here\n")
    _raises(r"f_1\.obj", folder)


def _seamed_obj(z: float) -> str:
    """An OBJ as Blender writes it: vt and vn, with vertex 1 used with two different UVs (a seam)."""
    return (
        f"o bar\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 {z}\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 0.5 0.5\nvn 0 0 1\nvn 1 0 0\ns 0\n"
        "f 1/1/1 2/2/1 3/3/1 4/4/1\nf 1/5/2 2/2/2 5/5/2\n"
    )


def test_obj_with_uv_seams_keeps_file_vertex_order(tmp_path: Path) -> None:
    for i, z in enumerate([1.0, 2.0, 3.0]):
        (tmp_path / f"f{i + 1}.obj").write_text(_seamed_obj(z))
    seq = load_mesh_sequence(tmp_path)
    assert seq.vertex_count == 5  # not split at the UV seam
    assert np.array_equal(seq.frames[:, 4, 2], [1.0, 2.0, 3.0])
    assert sorted(map(sorted, seq.faces.tolist())) == [[0, 1, 2], [0, 1, 4], [0, 2, 3]]  # quad triangulated


def test_pc2_rest_mesh_unreadable(tmp_path: Path, bar: MeshSequence) -> None:
    write_pc2(tmp_path / "a.pc2", bar.frames)
    (tmp_path / "rest.xyz123").write_text("nothing")
    _raises(r"Cannot read mesh 'rest\.xyz123'", tmp_path / "a.pc2", rest_mesh=tmp_path / "rest.xyz123")


def test_a_mesh_sequence_npz_is_a_rest_mesh_for_a_pc2(tmp_path: Path, bar: MeshSequence) -> None:
    write_pc2(tmp_path / "a.pc2", bar.frames)
    np.savez(tmp_path / "bar.npz", rest=bar.rest, faces=bar.faces, frames=bar.frames[:1])
    got = load_mesh_sequence(tmp_path / "a.pc2", rest_mesh=tmp_path / "bar.npz")
    np.testing.assert_array_equal(got.faces, bar.faces)
    np.testing.assert_array_equal(got.frames, bar.frames)
    np.savez(tmp_path / "other.npz", points=bar.rest)
    _raises(r"other\.npz holds no mesh: .* rest \(V,3\) and faces \(F,3\).*it has: points", tmp_path / "a.pc2",
            rest_mesh=tmp_path / "other.npz")  # fmt: skip
    (tmp_path / "broken.npz").write_text("not a zip")
    broken = tmp_path / "broken.npz"
    _raises(r"Cannot read mesh 'broken\.npz': not a readable npz", tmp_path / "a.pc2", rest_mesh=broken)


def test_obj_keeps_every_vertex_line_and_triangulates_quads_and_ngons(tmp_path: Path) -> None:
    """Blender's OBJ export writes quads, UVs and normals; a loose vertex at the end is still vertex 6."""
    text = "\n".join(
        [
            "# Blender export", "o grid", "v 0 0 0", "v 1 0 0", "v 1 1 0", "v 0 1 0", "v 2 0 0", "v 2 1 0",
            "v 9 9 9", "vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "vn 0 0 1", "s off", "usemtl skin",
            "f 1/1/1 2/2/1 3/3/1 4/4/1", "f -6//1 5//1 6//1 3//1 -5//1",
        ]
    )  # fmt: skip
    for i in range(2):
        (tmp_path / f"f{i}.obj").write_text(text.replace("v 9 9 9", f"v 9 9 {i}"))
    seq = load_mesh_sequence(tmp_path)
    assert seq.vertex_count == 7 and np.array_equal(seq.frames[:, 6], [[9, 9, 0], [9, 9, 1]])
    assert seq.faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2], [1, 2, 2]]
    (tmp_path / "f1.obj").write_text(text.replace("v 2 1 0", "v 2 one 0"))
    _raises(r"'f1.obj' line 8 is not valid OBJ", tmp_path)


def test_an_stl_mesh_has_its_triangles_corners_merged_into_vertices(tmp_path: Path) -> None:
    """STL keeps every triangle's corners apart; read as they are, a box would be 36 loose corners (a mesh-bound fit
    would hold 12 separate triangles, not a surface)."""
    from backend.formats.mesh_sequence import read_mesh

    trimesh.creation.box().export(tmp_path / "box.stl")
    vertices, faces = read_mesh(tmp_path / "box.stl")
    assert vertices.shape == (8, 3) and faces.shape == (12, 3)
