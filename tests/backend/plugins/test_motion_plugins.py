"""The motion plugins run directly as generators with a real JobContext, on a tiny model trained once per
session (tests/backend/motion/conftest.py) and clips sent the way the add-on sends them: Blender's BVH
import drops the static joint_Root, so the wire has 21 joints with Hips as the root."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

from backend.motion.bvh import read_bvh
from backend.motion.model import MotionModel
from backend.plugin_host import JobContext, ModelCache, Output, Plugin, Progress, discover_plugins
from backend.plugins.motion import MotionEdit, MotionGenerate, MotionInbetween, MotionTokenize, MotionTrain
from shared.errors import InputError, JobCancelled
from shared.results import MOTION_CLIP, check_motion_clip
from shared.schemas import PluginSpec, validate_params

_spec = importlib.util.spec_from_file_location(
    "motion_test_fixtures", Path(__file__).resolve().parents[1] / "motion" / "conftest.py"
)
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)
TINY_CLIPS = fixtures.TINY_CLIPS


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return fixtures.tiny_model_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache()


def wire(path: Path, frames: int | None = None) -> tuple[dict, dict]:
    """(params, arrays) of a BVH clip as the add-on's collector sends it (no joint_Root; Hips the root)."""
    clip = read_bvh(path)
    sk = clip.skeleton
    offsets = sk.offsets[1:].copy()
    offsets[0] = sk.offsets[0] + sk.offsets[1]
    t = frames or clip.n_frames
    arrays = {
        "parents": np.r_[-1, sk.parents[2:] - 1].astype(np.int32),
        "offsets": offsets.astype(np.float32),
        "rotations": clip.rotations[:t, 1:].astype(np.float32),
        "root_positions": clip.global_positions()[:t, 1].astype(np.float32),
    }
    return {"joints": "\n".join(sk.names[1:]), "fps": 30.0}, arrays


def ctx(plugin: type[Plugin], tmp_path: Path, models: ModelCache, arrays=None, **params) -> JobContext:
    checked = validate_params(plugin.spec, params)
    return JobContext("job1", checked, dict(arrays or {}), tmp_path / "job", models=models)


def run(plugin: type[Plugin], context: JobContext) -> tuple[list[Output], list[Progress]]:
    events = list(plugin().run(context))
    return [e for e in events if isinstance(e, Output)], [e for e in events if isinstance(e, Progress)]


def test_registered_and_the_addons_params_are_accepted():
    found = discover_plugins()
    for cls in (MotionInbetween, MotionEdit, MotionGenerate, MotionTokenize, MotionTrain):
        assert found[cls.spec.name] is cls
        assert PluginSpec.from_wire(json.loads(json.dumps(cls.spec.to_wire()))) == cls.spec
    # exactly what blender_addon/operators.py sends
    common = {"model": "/m", "joints": "a\nb", "fps": 24.0}
    validate_params(MotionInbetween.spec, {**common, "keep": "0-0,12-12", "method": "auto", "mirror": False})
    validate_params(MotionEdit.spec, {**common, "frames": "2-5", "bones": "a", "seed": 0})
    validate_params(MotionGenerate.spec, {**common, "text": "walk", "frames": 120, "seed": 1})
    train = {"data": "", "out": "/m", "labels_from_filenames": True, "steps": 2000}
    validate_params(MotionTrain.spec, train)
    validate_params(MotionTrain.spec, {**train, "labels": "walk\nrun"})


def test_inbetween_keeps_the_kept_frames_bit_for_bit_and_is_fast_once_loaded(tiny_model, models, tmp_path):
    params, arrays = wire(TINY_CLIPS[0])
    keep = [(0, 0), (40, 40), (100, 120), (246, 246)]
    text = ",".join(f"{a}-{b}" for a, b in keep)
    outs, progress = run(
        MotionInbetween, ctx(MotionInbetween, tmp_path, models, arrays, model=str(tiny_model), keep=text, **params)
    )
    assert [o.type for o in outs] == [MOTION_CLIP] and progress[-1].stage == "done"
    assert "by library match" in progress[0].message  # a trained model keeps its training clips
    assert any("decoding the model's library of 3 clips" in p.message for p in progress)
    out = outs[0]
    assert check_motion_clip(out.arrays, out.meta, 21) == (247, 21)
    assert out.meta["joints"] == params["joints"].split("\n") and out.meta["kept"] == [list(r) for r in keep]
    for a, b in keep:
        assert np.array_equal(out.arrays["rotations"][a : b + 1], arrays["rotations"][a : b + 1])
        assert np.array_equal(out.arrays["root_positions"][a : b + 1], arrays["root_positions"][a : b + 1])
    assert not np.allclose(out.arrays["rotations"][1:40], arrays["rotations"][1:40], atol=1e-3)
    timings = []
    for _ in range(3):  # cached model: no reload
        started = time.perf_counter()
        again, _ = run(
            MotionInbetween, ctx(MotionInbetween, tmp_path, models, arrays, model=str(tiny_model), keep=text, **params)
        )
        timings.append(time.perf_counter() - started)
    print(f"in-between of 247 frames after load: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    assert np.array_equal(again[0].arrays["rotations"], out.arrays["rotations"])  # seed 0 twice: the same take
    _, progress = run(
        MotionInbetween, ctx(MotionInbetween, tmp_path, models, arrays, model=str(tiny_model), keep=text, **params)
    )
    assert not any("decoding" in p.message for p in progress)  # decoded once per loaded model
    unmirrored, _ = run(
        MotionInbetween,
        ctx(MotionInbetween, tmp_path, models, arrays, model=str(tiny_model), keep=text, mirror=False, **params),
    )
    assert not np.array_equal(unmirrored[0].arrays["rotations"], out.arrays["rotations"])  # no mirror images drawn
    for a, b in keep:
        assert np.array_equal(unmirrored[0].arrays["rotations"][a : b + 1], arrays["rotations"][a : b + 1])
    assert min(timings) < 1.0  # ≈ 50 ms measured on 2 busy cores (the issue asks ≤ 100 ms); loose for CI


def test_edit_changes_only_the_chosen_bones_in_the_range(tiny_model, models, tmp_path):
    params, arrays = wire(TINY_CLIPS[0])
    names = params["joints"].split("\n")
    bones = ["UpperArm_L", "LowerArm_L", "Hand_L"]
    c = ctx(
        MotionEdit,
        tmp_path,
        models,
        arrays,
        model=str(tiny_model),
        frames="20-50",
        bones="\n".join(bones),
        seed=3,
        **params,
    )
    out = run(MotionEdit, c)[0][0]
    assert check_motion_clip(out.arrays, out.meta, 21) == (247, 21)
    assert out.meta["kept"] == [[0, 19], [51, 246]]
    chosen = [names.index(b) for b in bones]
    others = [j for j in range(21) if j not in chosen]
    rot = out.arrays["rotations"]
    assert np.array_equal(rot[:, others], arrays["rotations"][:, others])
    assert np.array_equal(out.arrays["root_positions"], arrays["root_positions"])
    assert np.array_equal(rot[:20], arrays["rotations"][:20]) and np.array_equal(rot[51:], arrays["rotations"][51:])
    assert not np.allclose(rot[21:50, chosen], arrays["rotations"][21:50, chosen], atol=1e-3)
    by_part = ctx(
        MotionEdit, tmp_path, models, arrays, model=str(tiny_model), frames="20-50", parts="left_leg", **params
    )
    assert run(MotionEdit, by_part)[0][0].meta["kept"] == [[0, 19], [51, 246]]


def test_generate_follows_the_skeleton_sent(tiny_model, models, tmp_path):
    params, arrays = wire(TINY_CLIPS[1])
    skeleton = {k: arrays[k] for k in ("parents", "offsets")}
    c = ctx(MotionGenerate, tmp_path, models, skeleton, model=str(tiny_model), text="walk, tired", frames=64, **params)
    out = run(MotionGenerate, c)[0][0]
    assert check_motion_clip(out.arrays, out.meta, 21) == (64, 21)
    assert out.meta["name"] == "walk, tired" and out.meta["kept"] == []


def test_tokenize_writes_the_token_grid(tiny_model, models, tmp_path):
    dest = tmp_path / "tokens.npz"
    _, progress = run(
        MotionTokenize,
        ctx(MotionTokenize, tmp_path, models, model=str(tiny_model), input=str(TINY_CLIPS[0]), out=str(dest)),
    )
    with np.load(dest) as z:
        assert z["tokens"].shape == (62, 5, 3) and list(z["parts"])[0] == "torso" and int(z["downsample"]) == 4
        from_file = z["tokens"]
    assert "62 × 5 × 3 tokens (time × parts × layers)" in progress[-1].message
    params, arrays = wire(TINY_CLIPS[0])
    run(MotionTokenize, ctx(MotionTokenize, tmp_path, models, arrays, model=str(tiny_model), **params))
    with np.load(tmp_path / "job" / "tokens.npz") as z:
        assert np.array_equal(z["tokens"], from_file)  # the wire clip is the file's motion


TINY_JSON = json.dumps({k: v for k, v in fixtures.TINY_CONFIG.items() if not k.endswith("_steps")})


def test_train_cancels_keeping_its_checkpoint_and_resumes(tmp_path):
    data = fixtures.tiny_clip_dir(tmp_path)
    out = tmp_path / "model"
    params = dict(data=str(data), out=str(out), labels_from_filenames=False, steps=56, config=TINY_JSON)
    c = ctx(MotionTrain, tmp_path, ModelCache(), **params)
    with pytest.raises(JobCancelled), fixtures.one_thread():
        for event in MotionTrain().run(c):
            if event.stage == "tokenizer":
                c.cancel_event.set()
    assert (out / "checkpoint.safetensors").is_file() and not (out / "model.safetensors").exists()
    with fixtures.one_thread():
        outs, progress = run(MotionTrain, ctx(MotionTrain, tmp_path, ModelCache(), **params))
    assert outs == []
    resumed = [p.message for p in progress if p.stage == "resume"]
    assert resumed and "at step 2" in resumed[0]  # 56 steps: 32 tokenizer (reported at 25), 24 transformer
    assert progress[-1].stage == "done" and "held out" in progress[-1].message
    model = MotionModel.from_pretrained(out)
    assert model.trained and model.window == 32 and model.skeleton.n_joints == 22


def test_train_on_the_clips_sent(tmp_path):
    parts = [wire(p, 99) for p in TINY_CLIPS[:3]]
    params = parts[0][0]
    arrays = {
        "parents": parts[0][1]["parents"],
        "offsets": parts[0][1]["offsets"],
        "rotations": np.concatenate([a["rotations"] for _, a in parts]),
        "root_positions": np.concatenate([a["root_positions"] for _, a in parts]),
        "clip_lengths": np.array([99, 99, 99], np.int32),
    }
    c = ctx(MotionTrain, tmp_path, ModelCache(), arrays, out=str(tmp_path / "m"), steps=4, config=TINY_JSON, **params)
    with fixtures.one_thread():
        outs, progress = run(MotionTrain, c)
    assert outs == [] and progress[-1].stage == "done"
    model = MotionModel.from_pretrained(tmp_path / "m")
    assert model.skeleton.names[0] == "Hips" and model.skeleton.n_joints == 21
    bad = dict(arrays, clip_lengths=np.array([99, 99], np.int32))
    with pytest.raises(InputError, match="clip_lengths"):
        run(MotionTrain, ctx(MotionTrain, tmp_path, ModelCache(), bad, out=str(tmp_path / "m2"), **params))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keep": "0-0,300-310"}, "outside the clip's frames 0-246"),
        ({"keep": "0-9,5-12"}, "overlap"),
        ({"model": "/nowhere/model"}, "does not exist"),
        ({"drop": "Toes_L"}, "20 bones, the model's skeleton 22 joints: missing Toes_L"),
        ({"frames": 20}, "has 20 frames; this model needs at least 32.*'{\"window\": 20}'"),
        ({"frames": 13, "keep": "0-0,12-12"}, "has 13 frames.*no model takes fewer than 16 frames"),
    ],
)
def test_inbetween_errors_say_what_is_wrong(tiny_model, models, tmp_path, change, message):
    params, arrays = wire(TINY_CLIPS[0], change.pop("frames", None))
    params.update(model=str(tiny_model), keep="0-0,19-19")
    if "drop" in change:
        names = params["joints"].split("\n")
        j = names.index(change.pop("drop"))  # a leaf: no parent index changes below it
        keep = [k for k in range(len(names)) if k != j]
        params["joints"] = "\n".join(names[k] for k in keep)
        arrays = {
            k: (v[:, keep] if k == "rotations" else v[keep] if k != "root_positions" else v) for k, v in arrays.items()
        }
        arrays["parents"] = np.array([p - (p > j) for p in arrays["parents"]], np.int32)
    params.update(change)
    with pytest.raises(InputError, match=message):
        run(MotionInbetween, ctx(MotionInbetween, tmp_path, models, arrays, **params))


def test_edit_errors_name_the_bone(tiny_model, models, tmp_path):
    params, arrays = wire(TINY_CLIPS[0])
    with pytest.raises(InputError, match="'Tail' is not one of the clip's joints"):
        run(
            MotionEdit,
            ctx(MotionEdit, tmp_path, models, arrays, model=str(tiny_model), frames="2-40", bones="Tail", **params),
        )
    with pytest.raises(InputError, match="Unknown body part 'tail'; this skeleton has: torso"):
        run(
            MotionEdit,
            ctx(MotionEdit, tmp_path, models, arrays, model=str(tiny_model), frames="2-40", parts="tail", **params),
        )


def test_train_steps_split_over_the_three_stages():
    from backend.plugins.motion import train_config

    default = train_config(4500)
    assert (default.tokenizer_steps, default.transformer_steps, default.residual_steps) == (2000, 1500, 1000)
    small = train_config(9)
    assert (small.tokenizer_steps, small.transformer_steps, small.residual_steps) == (4, 3, 2)
    two = train_config(2)
    assert two.tokenizer_steps == 1 and two.tokenizer_steps + two.transformer_steps + two.residual_steps == 2
    assert train_config(9, {"residual_steps": 0}).residual_steps == 0
    with pytest.raises(InputError, match="Unknown training setting 'residul_steps'"):
        train_config(9, {"residul_steps": 0})
