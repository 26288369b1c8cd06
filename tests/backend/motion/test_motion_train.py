"""Training's held-out measurement (evaluate_tokenizer with all or only the first residual layers) and the
library of training clips a trained model keeps."""

from __future__ import annotations

import pytest
from synthetic_motion import motion_fixtures

from backend.motion.bvh import read_bvh
from backend.motion.model import MotionModel
from backend.motion.train import evaluate_tokenizer

TINY_CLIPS = motion_fixtures().TINY_CLIPS


def test_evaluate_tokenizer_decodes_from_the_layers_asked_for(tiny_model):
    model = MotionModel.from_pretrained(tiny_model)
    clips = [read_bvh(TINY_CLIPS[0])]
    layers = model.tokenizer.config.n_quantizers
    assert layers == 3
    full = evaluate_tokenizer(model, clips, 10.0)
    assert evaluate_tokenizer(model, clips, 10.0, layers=layers) == full
    base = evaluate_tokenizer(model, clips, 10.0, layers=1)
    assert base["frames"] == full["frames"] == clips[0].n_frames
    assert base["mpjpe_mm"] != full["mpjpe_mm"]  # the residual layers are decoded (or left out) as asked


def test_the_trained_model_keeps_its_training_clips_as_its_library(tiny_model):
    model = MotionModel.from_pretrained(tiny_model)
    held_out = set(model.meta["held_out"])
    train_frames = sorted(read_bvh(p).n_frames for p in TINY_CLIPS if p.name not in held_out)
    assert held_out and sorted(model.library_frames.tolist()) == train_frames
    library = model.library()
    assert [m.n_frames for m in library.motions] == 2 * model.library_frames.tolist()  # and their mirror images
    assert library.features.shape == (2 * sum(train_frames), model.normalizer.mean.shape[0])


def test_the_units_of_a_skeleton_are_guessed_from_its_size():
    from backend.motion.train import guess_units_to_mm

    assert guess_units_to_mm(1.8) == 1000.0  # metres
    assert guess_units_to_mm(183.7) == 10.0  # Bandai-Namco's centimetres
    assert guess_units_to_mm(1750.0) == 1.0  # millimetres
    assert guess_units_to_mm(35.0) == pytest.approx(1700.0 / 35.0)  # CMU's own units: taken as a 1.7 m person
