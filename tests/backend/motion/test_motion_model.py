"""MotionModel operations on a tiny model built from configs in code (weights untrained: these tests check
what must hold for any weights: kept frames exact, only the chosen joints edited, files round trip, errors)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from synthetic_motion import REAL_CLIPS

from backend.motion.bvh import read_bvh
from backend.motion.dataset import Normalizer
from backend.motion.features import motion_root, motion_to_features
from backend.motion.matching import find_matches, gap_context, root_path
from backend.motion.mirror import mirror_partners
from backend.motion.model import MotionModel, parse_ranges
from backend.motion.parts import body_parts
from backend.motion.surgery import fill_by_interpolation
from shared.errors import InputError

TINY_TOKENIZER = {"group_width": 16, "width": 32, "depth": 1, "codebook_size": 32, "code_dim": 8}
TINY_TRANSFORMER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ff": 64}


@pytest.fixture(scope="module")
def clip():
    return read_bvh(REAL_CLIPS[0])


@pytest.fixture(scope="module", params=[1, 3], ids=["one-layer", "residual"])
def model(clip, request):
    torch.manual_seed(0)
    feats, _ = motion_to_features(clip)
    tokenizer = dict(TINY_TOKENIZER, n_quantizers=request.param)
    m = MotionModel.create(
        clip.skeleton, clip.fps, Normalizer.fit([feats]), body_parts(clip.skeleton), tokenizer, TINY_TRANSFORMER
    )
    m.trained = True  # marked so it loads; what is checked here holds for any weights
    return m


def test_parse_ranges():
    assert parse_ranges("0-9, 40-59,70", 100) == [(0, 9), (40, 59), (70, 70)]
    for text, match in [
        ("5-2", "backwards"),
        ("0-100", "outside"),
        ("0-9,5-12", "overlap"),
        ("a-b", "Bad frame"),
        ("", "No frame"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_ranges(text, 100)


@pytest.fixture(scope="module")
def matching_model(clip):
    """A tiny model that keeps a library (another real clip's tokens), so in-betweening matches by default."""
    torch.manual_seed(0)
    other = read_bvh(REAL_CLIPS[1])
    feats = [motion_to_features(m)[0] for m in (clip, other)]
    m = MotionModel.create(
        clip.skeleton, clip.fps, Normalizer.fit(feats), body_parts(clip.skeleton), TINY_TOKENIZER, TINY_TRANSFORMER
    )
    m.set_library([m.tokenize(other)], [other.n_frames])
    m.trained = True
    return m


@pytest.mark.parametrize("method", ["tokens", "match"])
def test_inbetween_keeps_kept_frames_bit_identical(model, matching_model, clip, method):
    if method == "match":
        model = matching_model
    keep = [(0, 9), (40, 59), (clip.n_frames - 10, clip.n_frames - 1)]
    out = model.inbetween(clip, keep, method=method)
    assert out.rotations.shape == clip.rotations.shape and out.skeleton is clip.skeleton
    for a, b in keep:
        assert np.array_equal(out.rotations[a : b + 1], clip.rotations[a : b + 1])
        assert np.array_equal(out.root_positions[a : b + 1], clip.root_positions[a : b + 1])
        assert np.array_equal(out.translations[a : b + 1], clip.translations[a : b + 1])
    generated = out.rotations[10:40]
    assert not np.allclose(generated, clip.rotations[10:40])  # the gap is made, not copied
    assert np.allclose(np.linalg.norm(out.rotations, axis=-1), 1.0, atol=1e-5)
    # the gap meets its kept neighbours: no jump at the seams larger than the source's biggest step
    pos, src = out.global_positions(), clip.global_positions()
    biggest = np.linalg.norm(np.diff(src, axis=0), axis=-1).max()
    for seam in (9, 39, 59):
        assert np.linalg.norm(pos[seam + 1] - pos[seam], axis=-1).max() <= 2 * biggest
    # Bandai-Namco's joint_Root sits still above the pelvis: generated frames leave it where the file has it
    r = motion_root(clip.skeleton)
    assert r != 0 and np.ptp(clip.root_positions, axis=0).max() == 0.0
    assert np.allclose(out.root_positions, clip.root_positions, atol=1e-6)
    assert np.allclose(np.abs(out.rotations[:, 0] @ clip.rotations[0, 0]), 1.0, atol=1e-6)


def top_joint_travelling(clip):
    """The clip as files with a travelling `root` bone over a rotation-only pelvis have it: the pelvis's travel
    moved onto joint_Root (which does not turn in these files, so its translation is the travel itself)."""
    from backend.motion.skeleton import Motion

    r = motion_root(clip.skeleton)
    assert r == 1 and np.allclose(np.abs(clip.rotations[:, 0, 0]), 1.0)
    trans = clip.local_translations()
    trans[:, 0] += trans[:, 1] - clip.skeleton.offsets[1]
    trans[:, 1:] = clip.skeleton.offsets[1:]
    channels = (clip.channels[0], tuple(c for c in clip.channels[1] if "rotation" in c), *clip.channels[2:])
    return Motion(clip.skeleton, clip.rotations, trans[:, 0], clip.fps, "top", None, channels)


@pytest.mark.parametrize("method", ["tokens", "match"])
def test_a_clip_whose_top_joint_travels_is_in_betweened_as_one_whose_pelvis_does(model, matching_model, clip, method):
    """The same motion in either layout gets the same in-between (not one walking in place), in its own layout."""
    if method == "match":
        model = matching_model
    top = top_joint_travelling(clip)
    np.testing.assert_allclose(top.global_positions()[:, 1:], clip.global_positions()[:, 1:], atol=1e-3)
    keep = [(0, 9), (40, 59)]
    out, expected = model.inbetween(top, keep, method=method), model.inbetween(clip, keep, method=method)
    assert out.translations is None and out.channels == top.channels  # the travel is on joint_Root again
    assert np.ptp(out.root_positions[60:, 0]) > 10  # still travels after the last kept frame
    np.testing.assert_allclose(out.global_positions()[:, 1:], expected.global_positions()[:, 1:], atol=2e-3)
    np.testing.assert_allclose(out.root_positions[:10], top.root_positions[:10], atol=1e-3)  # kept frames
    edited = model.edit(top, (20, 50), body_parts(clip.skeleton)["left_arm"], seed=3)
    assert edited.translations is None
    np.testing.assert_allclose(edited.root_positions, top.root_positions, atol=1e-3)


def test_a_clip_in_other_units_is_refused_with_the_factor(model, clip):
    from backend.motion.skeleton import Motion, Skeleton

    sk = clip.skeleton
    metres = Motion(
        Skeleton(sk.names, sk.parents, sk.offsets / 100, {j: e / 100 for j, e in sk.end_sites.items()}),
        clip.rotations,
        clip.root_positions / 100,
        clip.fps,
        "metres",
        clip.translations / 100,
    )
    with pytest.raises(InputError, match=r"0.01× the size of the model's.*Scale it by 100"):
        model.inbetween(metres, [(0, 9)])


def test_edit_changes_only_the_chosen_joints_in_the_range(model, clip):
    parts = body_parts(clip.skeleton)
    arm = parts["left_arm"]
    out = model.edit(clip, (20, 50), arm, seed=3)
    others = [j for j in range(clip.skeleton.n_joints) if j not in arm]
    assert np.array_equal(out.rotations[:, others], clip.rotations[:, others])
    assert np.array_equal(out.root_positions, clip.root_positions)
    assert np.array_equal(out.rotations[:20], clip.rotations[:20])
    assert np.array_equal(out.rotations[51:], clip.rotations[51:])
    assert not np.allclose(out.rotations[21:50, arm], clip.rotations[21:50, arm])
    again = model.edit(clip, (20, 50), arm, seed=3)
    assert np.array_equal(again.rotations, out.rotations)  # a seed gives the same take


def test_matching_is_the_default_with_a_library_and_the_library_round_trips(matching_model, clip, tmp_path):
    keep = [(0, 9), (40, 59), (clip.n_frames - 10, clip.n_frames - 1)]
    matched = matching_model.inbetween(clip, keep)
    assert np.array_equal(matched.rotations, matching_model.inbetween(clip, keep, method="match").rotations)
    assert not np.array_equal(matched.rotations, matching_model.inbetween(clip, keep, method="tokens").rotations)
    matching_model.save_pretrained(tmp_path / "m")
    loaded = MotionModel.from_pretrained(tmp_path / "m")
    assert np.array_equal(loaded.library_codes, matching_model.library_codes)
    assert np.array_equal(loaded.library_frames, matching_model.library_frames)
    assert np.array_equal(loaded.inbetween(clip, keep).rotations, matched.rotations)
    with pytest.raises(ValueError, match="do not cover"):
        loaded.set_library([loaded.library_codes[:3]], [100])
    damaged = MotionModel.from_pretrained(tmp_path / "m")
    damaged.library_codes = damaged.library_codes[:-1]
    with pytest.raises(InputError, match="library has .* token rows but its frame counts need .* damaged"):
        damaged.inbetween(clip, keep)


def test_the_library_holds_each_clip_and_its_mirror_image_and_a_call_can_leave_them_out(matching_model, clip):
    library = matching_model.library()
    assert len(library.motions) == 2 and "mirrored" in library.motions[1].name
    assert library.mirrored.tolist() == [False, True]
    plain, mirrored = library.motions
    assert mirrored.n_frames == plain.n_frames
    pos = plain.global_positions()
    assert np.abs(mirrored.global_positions()[:, :, 0] + pos[:, mirror_partners(plain.skeleton), 0]).max() < 1e-2
    keep = [(0, 9), (40, 59), (clip.n_frames - 10, clip.n_frames - 1)]
    wide = copy.copy(matching_model)  # more matches than one 99-frame clip offers: mirror images must be drawn
    wide.match_settings = dataclasses.replace(matching_model.match_settings, candidates=80)
    both = wide.inbetween(clip, keep)
    assert np.array_equal(both.rotations, wide.inbetween(clip, keep, mirror=True).rotations)
    unmirrored = wide.inbetween(clip, keep, mirror=False)
    assert not np.array_equal(unmirrored.rotations[10:40], both.rotations[10:40])  # (a tiny model's library is smooth)
    kept = np.zeros(clip.n_frames, bool)
    for a, b in keep:
        kept[a : b + 1] = True
    source = fill_by_interpolation(clip, kept)
    features = matching_model.normalizer.apply(motion_to_features(source)[0])
    gap = gap_context(kept, 10, 40, 10)
    for mirror in (True, False):
        settings = dataclasses.replace(wide.match_settings, mirror=mirror)
        clips = {c for c, _, _ in find_matches(library, features, kept, root_path(source), gap, settings)}
        assert clips == ({0, 1} if mirror else {0})


def test_generate_and_save_load_round_trip(model, clip, tmp_path):
    gen = model.generate(120, seed=1)
    assert gen.n_frames == 120 and gen.skeleton.names == clip.skeleton.names
    model.save_pretrained(tmp_path / "model")
    loaded = MotionModel.from_pretrained(tmp_path / "model")
    assert np.array_equal(loaded.tokenize(clip), model.tokenize(clip))
    assert np.array_equal(loaded.generate(120, seed=1).rotations, gen.rotations)
    assert loaded.parts == model.parts and loaded.window == model.window


def test_errors_name_the_problem(model, clip, tmp_path):
    with pytest.raises(InputError, match="at least 64"):
        model.inbetween(
            read_bvh(REAL_CLIPS[0]).__class__(
                clip.skeleton, clip.rotations[:30], clip.root_positions[:30], clip.fps, "short", clip.translations[:30]
            ),
            [(0, 5)],
        )
    other = read_bvh(REAL_CLIPS[0])
    from backend.motion.skeleton import Skeleton

    renamed = Skeleton(("Root",) + other.skeleton.names[1:], other.skeleton.parents, other.skeleton.offsets)
    with pytest.raises(InputError, match="skeleton"):
        model.tokenize(type(other)(renamed, other.rotations, other.root_positions, other.fps, "x", other.translations))
    with pytest.raises(InputError, match="without labels"):
        model.generate(100, text="walk, tired")
    with pytest.raises(InputError, match="between 64 and"):
        model.generate(10)
    with pytest.raises(InputError, match="does not exist"):
        MotionModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "model.bvh").write_text("HIERARCHY")
    with pytest.raises(InputError, match="is a file; a motion model is a folder"):
        MotionModel.from_pretrained(tmp_path / "model.bvh")
    with pytest.raises(InputError, match="Unknown in-betweening method 'nearest'"):
        model.inbetween(clip, [(0, 5)], method="nearest")
    with pytest.raises(InputError, match="keeps no library"):
        model.inbetween(clip, [(0, 5)], method="match")


def test_fill_windows_cover_each_editable_row_once_within_the_context():
    from backend.motion.model import _fill_windows

    rows = np.array([3, 4, 5] + list(range(20, 70)))  # a short gap and one longer than the context
    windows = _fill_windows(rows, 80, 24)
    filled = [r for lo, hi, a, b in windows for r in range(a, b + 1)]
    assert sorted(filled) == rows.tolist()  # every editable row exactly once
    for lo, hi, a, b in windows:
        assert hi - lo == 24 and 0 <= lo <= a <= b < hi <= 80
    short = windows[0]
    assert short[0] < 3 and short[1] > 6  # the short gap sees kept rows on both sides
    for lo, _, a, _ in windows[2:]:
        assert a - lo >= 6  # later chunks of the long gap keep a quarter of the window as context


def test_generated_positions_get_residual_codes_and_older_folders_load_without_them(model, clip, tmp_path, monkeypatch):
    import backend.motion.model as model_module

    codes = model.tokenize(clip)
    editable = np.zeros(codes.shape[:2], bool)
    editable[5:12] = True
    filled = model._fill(codes, editable, None, seed=0, temperature=0.0)
    assert np.array_equal(filled[~editable], codes[~editable])
    if codes.ndim == 2:  # one quantizer layer: nothing residual to fill
        assert model.residual is None
        return
    # with the default confidence gate a generated position has its layers up to some point, then none
    residual = filled[editable][:, 1:]
    absent = residual < 0
    assert (absent[:, 1:] >= absent[:, :-1]).all() and (residual[~absent] < model.tokenizer.config.codebook_size).all()
    monkeypatch.setattr(model_module, "RESIDUAL_MIN_CONFIDENCE", 0.0)
    filled = model._fill(codes, editable, None, seed=0, temperature=0.0)
    assert model.residual is not None and (filled[editable] >= 0).all()  # ungated: every layer filled

    # a folder saved before the residual transformer existed: it loads, and generated positions decode from
    # their base codes (residual layers absent, -1), as such models always did
    import json

    model.save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["modules"].remove("residual")
    del config["configs"]["residual"]
    config_path.write_text(json.dumps(config))
    older = MotionModel.from_pretrained(tmp_path / "model")
    assert older.residual is None
    filled = older._fill(codes, editable, None, seed=0, temperature=0.0)
    assert (filled[editable][:, 1:] == -1).all() and np.array_equal(filled[~editable], codes[~editable])


def test_smoothed_decoding_has_no_larger_steps_and_keeps_the_clip(model, clip):
    codes = model.tokenize(clip)
    plain = model.decode(codes, clip.n_frames, like=clip)
    smooth = model.decode(codes, clip.n_frames, like=clip, smooth=True)
    assert smooth.rotations.shape == plain.rotations.shape and smooth.skeleton is plain.skeleton

    def jerk(motion):  # mean second difference of the joints' positions: what a step at a token boundary makes
        return float(np.abs(np.diff(motion.global_positions(), n=2, axis=0)).mean())

    assert jerk(smooth) < jerk(plain)
