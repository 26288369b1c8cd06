"""The sequence plugins, run directly as generators with a real JobContext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.formats.gaussian_ply import write_gaussian_ply
from backend.formats.mesh_sequence import write_npz, write_obj_folder, write_pc2
from backend.plugin_host import JobContext, Output, Plugin, Progress, discover_plugins
from backend.plugins.sequences import LoadGaussianSequence, LoadMeshSequence, subsample_indices
from backend.samples import gaussian_sample_sequence, twisting_bar
from shared.errors import InputError, JobCancelled, ParamError
from shared.results import check_gaussians, check_mesh_frames, check_mesh_rest
from shared.schemas import PluginSpec, validate_params

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mesh-sequences"
BAR = twisting_bar(frames=10, subdivisions=3)


def _ctx(plugin: type[Plugin], tmp_path: Path, **params) -> JobContext:
    checked = validate_params(plugin.spec, params)
    return JobContext(job_id="job1", params=checked, arrays={}, job_dir=tmp_path / "job")


def _run(plugin: type[Plugin], ctx: JobContext) -> tuple[list[Output], list[Progress]]:
    events = list(plugin().run(ctx))
    return [e for e in events if isinstance(e, Output)], [e for e in events if isinstance(e, Progress)]


def _frames(outputs: list[Output]) -> np.ndarray:
    rest = outputs[0]
    check_mesh_rest(rest.arrays, rest.meta)
    chunks = []
    for o in outputs[1:]:
        assert o.type == "mesh.frames"
        chunks.append(check_mesh_frames(o.arrays, o.meta, rest.arrays["rest"].shape[0]))
        assert o.meta["start"] == sum(c.shape[0] for c in chunks[:-1])
        assert chunks[-1].flags.c_contiguous
    return np.concatenate(chunks)


def test_registered_and_specs_round_trip_the_wire() -> None:
    found = discover_plugins()
    assert found["sequence.load_mesh"] is LoadMeshSequence
    assert found["sequence.load_gaussians"] is LoadGaussianSequence
    for cls in (LoadMeshSequence, LoadGaussianSequence):
        assert PluginSpec.from_wire(cls.spec.to_wire()) == cls.spec
        assert all(p.help for p in cls.spec.params)


def test_real_npz_streams_back_exactly(tmp_path: Path) -> None:
    src = np.load(DATA / "horse-gallop.npz")
    outs, progress = _run(LoadMeshSequence, _ctx(LoadMeshSequence, tmp_path, path=str(DATA / "horse-gallop.npz")))
    assert outs[0].type == "mesh.rest" and outs[0].meta == {"name": "horse-gallop", "frames": 48}
    assert np.array_equal(outs[0].arrays["rest"], src["rest"]) and np.array_equal(outs[0].arrays["faces"], src["faces"])
    assert np.array_equal(_frames(outs), src["frames"])
    per_chunk = (4 << 20) // (8431 * 12)  # automatic: about 4 MiB per chunk
    assert [o.arrays["positions"].shape[0] for o in outs[1:]] == [per_chunk] * (48 // per_chunk) + (
        [48 % per_chunk] if 48 % per_chunk else []
    )
    assert progress[0].stage == "reading" and progress[-1].fraction == 1.0
    assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)


@pytest.mark.parametrize("chunk", [1, 3, 10, 50])
def test_chunking_from_npz(tmp_path: Path, chunk: int) -> None:
    write_npz(tmp_path / "bar.npz", BAR)
    ctx = _ctx(LoadMeshSequence, tmp_path, path=str(tmp_path / "bar.npz"), chunk_frames=chunk)
    outs, _ = _run(LoadMeshSequence, ctx)
    assert len(outs) - 1 == -(-10 // chunk)
    assert np.array_equal(_frames(outs), BAR.frames)
    assert outs[0].meta["fps"] == pytest.approx(24.0)


def test_obj_folder_and_fps_param(tmp_path: Path) -> None:
    write_obj_folder(tmp_path / "objs", BAR)
    ctx = _ctx(LoadMeshSequence, tmp_path, path=str(tmp_path / "objs"), chunk_frames=4, fps=30)
    outs, _ = _run(LoadMeshSequence, ctx)
    assert outs[0].meta == {"name": "objs", "frames": 10, "fps": 30.0}
    np.testing.assert_allclose(_frames(outs), BAR.frames, atol=1e-6)


def test_pc2_with_rest_mesh(tmp_path: Path) -> None:
    write_pc2(tmp_path / "bar.pc2", BAR.frames)
    trimesh.Trimesh(BAR.rest, BAR.faces, process=False).export(tmp_path / "rest.obj")
    ctx = _ctx(LoadMeshSequence, tmp_path, path=str(tmp_path / "bar.pc2"), rest_mesh=str(tmp_path / "rest.obj"))
    outs, _ = _run(LoadMeshSequence, ctx)
    assert np.array_equal(_frames(outs), BAR.frames)
    assert np.array_equal(outs[0].arrays["faces"], BAR.faces)


def test_cancel_stops_between_chunks(tmp_path: Path) -> None:
    write_npz(tmp_path / "bar.npz", BAR)
    ctx = _ctx(LoadMeshSequence, tmp_path, path=str(tmp_path / "bar.npz"), chunk_frames=2)
    outs = []
    with pytest.raises(JobCancelled):
        for event in LoadMeshSequence().run(ctx):
            if isinstance(event, Output):
                outs.append(event)
                if len(outs) == 2:  # rest + first chunk
                    ctx.cancel_event.set()
    assert len(outs) == 2


def test_mesh_bad_inputs(tmp_path: Path) -> None:
    def fails(match: str, **params) -> None:
        with pytest.raises(InputError, match=match):
            _run(LoadMeshSequence, _ctx(LoadMeshSequence, tmp_path, **params))

    fails(r"missing\.npz' does not exist", path=str(tmp_path / "missing.npz"))
    write_pc2(tmp_path / "bar.pc2", BAR.frames)
    fails(r"PC2 point cache.*as its rest mesh", path=str(tmp_path / "bar.pc2"))
    (tmp_path / "x.fbx").write_bytes(b"")
    fails(r"unknown extension '\.fbx'", path=str(tmp_path / "x.fbx"))
    with pytest.raises(ParamError, match=r"needs parameter 'path'"):
        _ctx(LoadMeshSequence, tmp_path)
    with pytest.raises(ParamError, match=r"'chunk_frames' is -1; the smallest allowed is 0"):
        _ctx(LoadMeshSequence, tmp_path, path="x.npz", chunk_frames=-1)


def _gaussian_folder(folder: Path, frames: int = 5, n: int = 300, sh_degree: int = 1) -> list:
    folder.mkdir()
    seq = gaussian_sample_sequence(frames=frames, n=n, sh_degree=sh_degree)
    for i, f in enumerate(seq):
        write_gaussian_ply(folder / f"splat_{i}.ply", f)
    return seq


def test_gaussians_stream_every_frame(tmp_path: Path) -> None:
    seq = _gaussian_folder(tmp_path / "splats")
    ctx = _ctx(LoadGaussianSequence, tmp_path, directory=str(tmp_path / "splats"))
    outs, progress = _run(LoadGaussianSequence, ctx)
    assert len(outs) == 5 and len(progress) == 6 and progress[-1].fraction == 1.0
    for i, (o, want) in enumerate(zip(outs, seq, strict=True)):
        assert o.type == "gaussians.frame"
        assert o.meta == {"name": "splats", "frame": i, "frames": 5, "ply": f"splat_{i}.ply"}
        assert check_gaussians(o.arrays) == 300
        for name, arr in want.arrays().items():
            assert np.array_equal(o.arrays[name], arr), name


def test_gaussians_subsample_same_indices_every_frame(tmp_path: Path) -> None:
    seq = _gaussian_folder(tmp_path / "splats")
    ctx = _ctx(LoadGaussianSequence, tmp_path, directory=str(tmp_path / "splats"), max_gaussians=40)
    outs, _ = _run(LoadGaussianSequence, ctx)
    idx = subsample_indices(300, 40)
    assert len(idx) == 40 and len(np.unique(idx)) == 40 and np.all(np.diff(idx) > 0)
    for o, want in zip(outs, seq, strict=True):
        assert check_gaussians(o.arrays) == 40
        assert np.array_equal(o.arrays["means"], want.means[idx])
        assert np.array_equal(o.arrays["sh_rest"], want.sh_rest[idx])
    assert np.array_equal(subsample_indices(300, 40), idx)  # deterministic
    assert np.array_equal(subsample_indices(10, 40), np.arange(10))


def test_gaussians_cancel_and_bad_inputs(tmp_path: Path) -> None:
    _gaussian_folder(tmp_path / "splats", frames=4, n=20)
    ctx = _ctx(LoadGaussianSequence, tmp_path, directory=str(tmp_path / "splats"))
    gen = LoadGaussianSequence().run(ctx)
    seen = [e for e in (next(gen), next(gen)) if isinstance(e, Output)]
    ctx.cancel_event.set()
    with pytest.raises(JobCancelled):
        list(gen)
    assert len(seen) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"has no \.ply files"):
        _run(LoadGaussianSequence, _ctx(LoadGaussianSequence, tmp_path, directory=str(empty)))
    (tmp_path / "splats" / "splat_9.ply").write_text("garbage")
    with pytest.raises(InputError, match=r"splat_9\.ply is not a readable PLY file"):
        _run(LoadGaussianSequence, _ctx(LoadGaussianSequence, tmp_path, directory=str(tmp_path / "splats")))


def test_empty_optional_path_param_is_accepted(tmp_path: Path) -> None:
    params = validate_params(LoadMeshSequence.spec, {"path": "x.npz", "rest_mesh": ""})
    assert params["rest_mesh"] == ""
