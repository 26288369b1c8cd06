"""The rig.from_motion plugin's generator: progress, one checked `rig` result, input errors, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_rig import chain

from backend.plugin_host import JobContext, Output, Progress
from backend.plugins.rig import RigFromMotion
from backend.rig.metrics import e_rms
from backend.rig.rig_file import Rig
from shared.errors import InputError, JobCancelled
from shared.results import RIG, check_rig
from shared.schemas import validate_params

CAT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mesh-sequences" / "cat-poses.npz"


def context(tmp_path: Path, arrays: dict | None = None, **params) -> JobContext:
    checked = validate_params(RigFromMotion.spec, params)
    return JobContext(job_id="rig-test", params=checked, arrays=arrays or {}, job_dir=tmp_path)


def run(ctx: JobContext) -> tuple[list[Progress], list[Output]]:
    events = list(RigFromMotion().run(ctx))
    return [e for e in events if isinstance(e, Progress)], [e for e in events if isinstance(e, Output)]


@pytest.mark.parametrize("mode", ["skeleton", "free"])
def test_synthetic_sequence_gives_one_checked_rig(tmp_path, mode) -> None:
    seq = chain(frames=10)
    arrays = {"rest": seq.rest, "frames": seq.frames, "labels": seq.labels}
    progress, outputs = run(context(tmp_path, arrays, bones=4, mode=mode, iterations=8, name="chain"))
    assert len(outputs) == 1 and outputs[0].type == RIG
    meta, out = outputs[0].meta, outputs[0].arrays
    assert check_rig(out, meta, vertex_count=len(seq.rest)) == 4
    assert meta["mode"] == mode and meta["name"] == "chain"
    assert any("E_RMS" in p.message for p in progress) and any(p.stage == "solve" for p in progress)
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    recon = Rig.from_result(meta, out).reconstruct(seq.rest)
    assert e_rms(seq.frames, recon, seq.rest) == pytest.approx(meta["e_rms"], rel=1e-3, abs=1e-3)
    assert meta["e_rms"] < 0.5
    if mode == "skeleton":  # a chain: one root, every bone joined to at most two others
        parents = out["parents"]
        degree = np.bincount(parents[parents >= 0], minlength=4) + (parents >= 0)
        assert (parents == -1).sum() == 1 and degree.max() <= 2


def test_real_cat_sequence_from_a_path(tmp_path) -> None:
    progress, outputs = run(context(tmp_path, path=str(CAT), bones=6, iterations=6))
    meta, out = outputs[0].meta, outputs[0].arrays
    with np.load(CAT) as data:
        rest, frames = data["rest"], data["frames"]
    assert check_rig(out, meta, vertex_count=len(rest)) >= 5 and meta["name"] == "cat-poses"
    assert (out["parents"] == -1).sum() == 1  # one skeleton
    recon = Rig.from_result(meta, out).reconstruct(rest)
    assert e_rms(frames, recon, rest) == pytest.approx(meta["e_rms"], rel=1e-3)
    assert meta["e_rms"] < 80.0  # 6 bones on a cat: a coarse rig, but a rig (measured ≈ 45)


def test_auto_bone_count_takes_the_smallest_that_meets_the_tolerance(tmp_path) -> None:
    seq = chain(frames=8)
    arrays = {"rest": seq.rest, "frames": seq.frames}
    _, outputs = run(context(tmp_path, arrays, bones=0, tolerance=1000.0, mode="free", iterations=3))
    assert len(outputs[0].arrays["parents"]) == 4  # AUTO_BONES starts at 4


def bad(tmp_path: Path, arrays: dict, match: str, **params) -> None:
    with pytest.raises(InputError, match=match):
        run(context(tmp_path, arrays, **params))


def test_bad_inputs_say_what_to_fix(tmp_path) -> None:
    seq = chain(frames=4)
    rest, frames = seq.rest, seq.frames
    bad(tmp_path, {}, "needs the arrays rest")
    bad(tmp_path, {"rest": rest}, "frames missing")
    bad(tmp_path, {"rest": rest, "frames": frames}, "not both", path=str(CAT))
    bad(tmp_path, {"rest": rest, "frames": frames[:, :-1]}, "Topology mismatch")
    bad(tmp_path, {"rest": rest, "frames": frames[:1]}, "at least 2 frames")
    bad(tmp_path, {"rest": rest, "frames": np.repeat(rest[None], 3, axis=0)}, "nothing moves")
    nan = frames.copy()
    nan[1, 5, 0] = np.nan
    bad(tmp_path, {"rest": rest, "frames": nan}, "NaN")
    bad(tmp_path, {"rest": rest, "frames": frames}, "only", bones=len(rest) + 1)
    bad(tmp_path, {"rest": rest, "frames": frames, "labels": seq.labels[:-1]}, "one integer part label")
    bad(tmp_path, {"rest": rest, "frames": frames, "faces": np.array([[0, 1, len(rest)]], np.int32)}, "faces")
    bad(tmp_path, {}, "does not exist", path=str(tmp_path / "missing.npz"))


def test_cancel_stops_the_solver(tmp_path) -> None:
    seq = chain(frames=6)
    ctx = context(tmp_path, {"rest": seq.rest, "frames": seq.frames}, bones=4, iterations=50)
    gen = RigFromMotion().run(ctx)
    next(gen)  # "reading"
    ctx.cancel_event.set()
    with pytest.raises(JobCancelled):
        list(gen)
