"""Clip libraries: the real folder loads, skeleton mismatches are named, split/windows/normalizer behave."""

import shutil

import numpy as np
import pytest
import torch
from synthetic_motion import BANDAI, REAL_CLIPS

from backend.motion.dataset import Normalizer, label_from_filename, load_library, split, windows
from shared.errors import InputError


@pytest.fixture(scope="module")
def library():
    return load_library(BANDAI, labels_from_filenames=True)


def test_all_real_clips_load_with_one_skeleton_and_labels(library):
    assert len(library) == 152
    assert library.skeleton.n_joints == 22
    assert library.fps == pytest.approx(30.0, abs=1e-3)
    assert all(m.skeleton.matches(library.skeleton) for m in library.motions)
    assert library.labels[library.files.index(BANDAI / "dataset-1_walk-back_tired_001.bvh")] == "walk back, tired"


def test_label_parsing():
    assert label_from_filename("dataset-1_walk_not-confident_012.bvh") == "walk, not confident"
    assert label_from_filename("My take.bvh") == "my take"  # other names: their words, numbers dropped
    assert label_from_filename("Walk_Tired-03.bvh") == "walk tired"
    assert label_from_filename("0042.bvh") is None


def test_split_is_deterministic_disjoint_and_covers_contents(library):
    train, held = split(library, 0.1, seed=0)
    again_train, again_held = split(library, 0.1, seed=0)
    assert [f.name for f in held.files] == [f.name for f in again_held.files]
    assert not {f.name for f in train.files} & {f.name for f in held.files}
    assert len(train) + len(held) == 152 and 8 <= len(held) <= 24
    assert {f.name for f in split(library, 0.1, seed=1)[1].files} != {f.name for f in held.files}
    assert split(library, 0.0)[1].files == []


def test_mismatched_skeleton_names_the_file(tmp_path):
    shutil.copy(REAL_CLIPS[0], tmp_path / "a.bvh")
    text = REAL_CLIPS[1].read_text().replace("JOINT Head", "JOINT Skull")
    (tmp_path / "b.bvh").write_text(text)
    with pytest.raises(InputError, match="b.bvh does not share the skeleton of a.bvh: joint 5 is 'Head' vs 'Skull'"):
        load_library(tmp_path)
    with pytest.raises(InputError, match="No .bvh files"):
        load_library(tmp_path / "empty")


def test_clips_in_subfolders_are_found_and_labelled_by_their_names(tmp_path):
    for name in ("walks/Walk_Tired_01.bvh", "walks/old/walk_happy.bvh", "Run 2.bvh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL_CLIPS[0], tmp_path / name)
    (tmp_path / "walks" / "._Walk_Tired_01.bvh").write_bytes(b"\x00\x05\x16\x07 Mac OS X")  # macOS's companion
    (tmp_path / ".trash").mkdir()
    shutil.copy(REAL_CLIPS[0], tmp_path / ".trash" / "old.bvh")
    library = load_library(tmp_path, labels_from_filenames=True)
    assert [f.relative_to(tmp_path).as_posix() for f in library.files] == [
        "Run 2.bvh",
        "walks/Walk_Tired_01.bvh",
        "walks/old/walk_happy.bvh",
    ]
    assert library.labels == ["run", "walk tired", "walk happy"]
    assert load_library(tmp_path).labels == [None, None, None]


def test_windows():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = windows(x, 4, 3)
    assert w.shape == (3, 4, 2)
    assert np.array_equal(w[1], x[3:7])
    assert windows(x, 11, 1).shape == (0, 11, 2)


def test_normalizer_round_trip_floor_and_save():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (100, 3)).astype(np.float32)
    x[:, 2] = 1.0  # constant column: floored std, no division by zero
    norm = Normalizer.fit([x[:50], x[50:]])
    y = norm.apply(x)
    assert np.allclose(y[:, :2].mean(0), 0, atol=1e-5) and np.allclose(y[:, :2].std(0), 1, atol=1e-4)
    assert np.all(y[:, 2] == 0) and norm.std[2] == pytest.approx(1e-2)
    assert np.allclose(norm.invert(y), x, atol=1e-5)
    again = Normalizer.from_dict(norm.to_dict())
    assert np.allclose(again.apply(torch.tensor(x)).numpy(), y, atol=1e-6)
