"""`tessera4d rig` in a real process: rig file, --glb, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from scipy.spatial.transform import Rotation
from synthetic_rig import chain

from backend.formats.mesh_sequence import MeshSequence, write_npz, write_pc2
from backend.rig.metrics import e_rms
from backend.rig.rig_file import Rig

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "backend", "rig", *map(str, args)]
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""}
    )


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> tuple[Path, MeshSequence]:
    seq = chain(frames=8)
    from scipy.spatial import cKDTree

    _, nn = cKDTree(seq.rest).query(seq.rest, k=3)
    mesh = MeshSequence(rest=seq.rest, faces=nn.astype(np.int32), frames=seq.frames, name="chain", fps=24.0)
    path = tmp_path_factory.mktemp("seq") / "chain.npz"
    write_npz(path, mesh)
    return path, mesh


def accessor(gltf: pygltflib.GLTF2, index: int, dtype, width: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    data = np.frombuffer(blob[view.byteOffset : view.byteOffset + view.byteLength], dtype=dtype)
    return data.reshape(acc.count, width) if width > 1 else data


def test_rig_writes_a_rig_file_and_a_readable_glb(tmp_path, sequence) -> None:
    path, mesh = sequence
    out = cli(path, "--bones", 4, "--iterations", 8, "--out", tmp_path / "rig.npz", "--glb", tmp_path / "rig.glb")
    assert out.returncode == 0, out.stderr
    assert "E_RMS" in out.stdout and " s " in out.stdout
    rig = Rig.load(tmp_path / "rig.npz")
    assert rig.mode == "skeleton" and rig.bone_count == 4 and rig.fps == 24.0
    assert e_rms(mesh.frames, rig.reconstruct(mesh.rest), mesh.rest) == pytest.approx(rig.e_rms, rel=1e-3, abs=1e-3)

    gltf = pygltflib.GLTF2.load(str(tmp_path / "rig.glb"))
    skin = gltf.skins[0]
    assert len(skin.joints) == 4 and len(gltf.animations[0].channels) == 4 + 1  # rotations + root translation
    names = [gltf.nodes[j].name for j in skin.joints]
    assert names == rig.bone_names
    children = {c for j in skin.joints for c in gltf.nodes[j].children}
    assert children == {skin.joints[b] for b in np.flatnonzero(rig.parents >= 0)}
    prim = gltf.meshes[0].primitives[0]
    assert np.array_equal(accessor(gltf, prim.attributes.POSITION, np.float32, 3), mesh.rest)
    ibm = accessor(gltf, skin.inverseBindMatrices, np.float32, 16).reshape(-1, 4, 4).transpose(0, 2, 1)
    assert np.allclose(ibm, np.linalg.inv(rig.rest_matrices.astype(np.float64)), atol=1e-5)
    weights = accessor(gltf, prim.attributes.WEIGHTS_0, np.float32, 4)
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    times = accessor(gltf, gltf.animations[0].samplers[0].input, np.float32, 1)
    assert np.allclose(times, np.arange(8) / 24.0)

    # the animation, composed down the node hierarchy, gives back the rig's skinning transforms
    anim = gltf.animations[0]
    pose = np.zeros((8, 4, 4, 4))
    for j, node in enumerate(skin.joints):
        trs = np.tile(np.eye(4), (8, 1, 1))
        trs[:, :3, 3] = gltf.nodes[node].translation
        for ch in (c for c in anim.channels if c.target.node == node):
            width = 4 if ch.target.path == "rotation" else 3
            values = accessor(gltf, anim.samplers[ch.sampler].output, np.float32, width)
            if ch.target.path == "rotation":
                trs[:, :3, :3] = Rotation.from_quat(values).as_matrix()
            else:
                trs[:, :3, 3] = values
        parent = rig.parents[j]
        pose[:, j] = trs if parent < 0 else pose[:, parent] @ trs
    assert np.allclose(pose @ ibm, rig.pose_matrices @ np.linalg.inv(rig.rest_matrices), atol=1e-4)

    import trimesh

    scene = trimesh.load(tmp_path / "rig.glb")
    assert len(scene.geometry) == 1


def test_free_mode_and_more_than_four_influences(tmp_path, sequence) -> None:
    path, _ = sequence
    out = cli(
        path,
        "--bones",
        4,
        "--mode",
        "free",
        "--max-influences",
        6,
        "--iterations",
        3,
        "--out",
        tmp_path / "f",
        "--glb",
        tmp_path / "f.glb",
    )
    assert out.returncode == 0, out.stderr
    rig = Rig.load(tmp_path / "f.npz")
    assert rig.mode == "free" and rig.weight_index.shape[1] == 6 and (rig.parents == -1).all()
    gltf = pygltflib.GLTF2.load(str(tmp_path / "f.glb"))
    assert len(gltf.animations[0].channels) == 8  # every free bone is a root: rotation + translation


def test_pc2_needs_its_rest_mesh(tmp_path, sequence) -> None:
    _, mesh = sequence
    pc2 = write_pc2(tmp_path / "chain.pc2", mesh.frames)
    out = cli(pc2, "--bones", 4, "--out", tmp_path / "r.npz")
    assert out.returncode == 1 and "--rest-mesh" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.npz", "--bones", "4"], "does not exist"),
        (["SEQ", "--bones", "4", "--mode", "loose"], "--mode must be"),
        (["SEQ", "--bones", "100000"], "use at most"),
        (["SEQ", "--bones", "2", "--glb", "TMP/r.gltf"], "name the file .glb"),
        (["SEQ", "--bones", "2", "--out", "TMP"], "is a folder: give the rig file's name"),
        (["SEQ", "--bones", "2", "--out", "TMP/afile/r.npz"], "afile"),
    ],
)
def test_bad_input_exits_1_with_one_line(tmp_path, sequence, args, message) -> None:
    (tmp_path / "afile").write_text("not a folder")
    args = [str(sequence[0]) if a == "SEQ" else a.replace("TMP", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "r.npz")]
    out = cli(*args)
    assert out.returncode == 1 and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_fewer_bones_than_asked_are_reported_as_such(tmp_path, sequence) -> None:
    """The chain's 240 vertices give no vertex to some of 30 free bones: the skeleton drops them and says so."""
    path, _ = sequence
    out = cli(path, "--bones", 30, "--iterations", 8, "--out", tmp_path / "rig.npz")
    assert out.returncode == 0, out.stderr
    got = Rig.load(tmp_path / "rig.npz").bone_count
    assert got < 30 and f"{got} bones (of 30 asked: bones that carried no vertex were dropped)" in out.stdout
