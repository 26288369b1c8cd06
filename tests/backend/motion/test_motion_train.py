"""Training's held-out measurement: evaluate_tokenizer with all or only the first residual layers."""

from __future__ import annotations

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
