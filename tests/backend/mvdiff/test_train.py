"""mvdiff train on the tiny random model and a tiny dataset written with numpy/PIL (the dataset render layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from backend.mvdiff.cameras import mvdream_cameras, to_world_cameras
from backend.mvdiff.checkpoint import load_pipeline, model_info, write_tiny
from backend.mvdiff.train import is_trainable, train
from shared.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

V, F, SIZE = 4, 4, 32


def write_clip(folder: Path, colour, seed: int) -> None:
    """A disc crossing the image over the frames, seen from V views (each view offset), RGBA on transparent."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    centre, distance = np.array([0.5, -0.2, 1.0]), 2.5
    c2w = to_world_cameras(mvdream_cameras(V), centre, distance)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    entries = []
    for v in range(V):
        for f in range(F):
            cx, cy = 6 + 6 * f + 2 * v, 12 + 3 * v + rng.integers(0, 2)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < 36
            rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
            rgba[inside] = (*colour, 255)
            name = f"images/v{v}_f{f:03d}.png"
            Image.fromarray(rgba).save(folder / name)
            entries.append(
                {"file_path": name, "transform_matrix": c2w[v].tolist(), "time": f / (F - 1), "view": v, "frame": f}
            )
    meta = {"camera_angle_x": 0.7, "w": SIZE, "h": SIZE, "center": centre.tolist(), "distance": distance}
    meta.update(prompt="a red disc", frames=entries)
    (folder / "transforms.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model = write_tiny(root / "model", views=V, frames=F, resolution=SIZE, seed=0)
    write_clip(root / "one" / "disc", (220, 30, 30), seed=0)
    write_clip(root / "two" / "a_disc", (220, 30, 30), seed=1)
    write_clip(root / "two" / "b_disc", (30, 200, 40), seed=2)
    return root, model


def unet_state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_loss_falls_and_only_motion_and_i2v_parameters_change(tiny):
    root, model = tiny
    out = root / "run"
    messages = []
    result = train(
        root / "one", model, out, steps=20, lr=1e-3, progress=lambda s, f, m: messages.append((s, f)), device="cpu"
    )
    assert result.step == 20 and len(result.losses) == 20
    assert result.eval_kind == "training"
    assert result.eval_after < 0.85 * result.eval_before, (result.eval_before, result.eval_after)
    before, after = unet_state(model), unet_state(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(is_trainable(k) for k in changed), sorted(k for k in changed if not is_trainable(k))[:3]
    assert any("i2v" in k for k in changed) and any("motion_modules." in k for k in changed)
    assert messages[-1] == ("train", 1.0)
    info = model_info(out)
    assert info["kind"] == "fine-tuned" and info["trained"] is False and info["source"] == str(model)
    load_pipeline(out, allow_untrained=True)  # a complete model folder
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 20 and record["training_loss_after"] == pytest.approx(result.eval_after)


def test_resume_continues_the_step_count_exactly(tiny):
    root, model = tiny
    straight = train(root / "two", model, root / "straight", steps=4, lr=1e-3, save_every=2, device="cpu")
    first = train(root / "two", model, root / "resumed", steps=2, lr=1e-3, device="cpu")
    assert first.step == 2
    second = train(root / "two", model, root / "resumed", steps=4, lr=1e-3, resume=True, device="cpu")
    assert second.step == 4 and len(second.losses) == 4
    assert second.losses == pytest.approx(straight.losses, abs=1e-6)
    assert second.eval_kind == "held-out"  # two clips: the last one is held out
    a, b = unet_state(root / "straight"), unet_state(root / "resumed")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_refusals_name_the_problem(tiny):
    root, model = tiny
    with pytest.raises(InputError, match="--resume"):
        train(root / "one", model, root / "nothing", steps=2, resume=True, device="cpu")
    train(root / "one", model, root / "once", steps=1, device="cpu")
    with pytest.raises(InputError, match="already holds a training run"):
        train(root / "one", model, root / "once", steps=2, device="cpu")
    with pytest.raises(InputError, match="already at step 1"):
        train(root / "one", model, root / "once", steps=1, resume=True, device="cpu")
    with pytest.raises(InputError, match="is the --checkpoint folder"):
        train(root / "one", model, model, steps=1, device="cpu")
    with pytest.raises(InputError, match="no clip folders"):
        train(root / "model", model, root / "x", steps=1, device="cpu")


def test_gradient_checkpointing_trains_the_same(tiny):
    root, model = tiny
    plain = train(root / "one", model, root / "plain", steps=2, lr=1e-3, device="cpu")
    saved = train(root / "one", model, root / "ckpt", steps=2, lr=1e-3, gradient_checkpointing=True, device="cpu")
    assert saved.losses == pytest.approx(plain.losses, abs=1e-6)


def test_cli_train(tiny):
    from typer.testing import CliRunner

    from backend.cli import app

    root, model = tiny
    args = ["mvdiff", "train", root / "two", "--checkpoint", model, "--out", root / "cli", "--steps", 2, "--lr", 1e-3]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and "held-out loss (fixed noise)" in result.output
    again = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert again.exit_code == 1 and "--resume" in again.output


def test_ip_adapter_model_trains_with_each_views_first_frame_as_image_prompt(tiny):
    root, _ = tiny
    model = write_tiny(root / "ip_model", views=V, frames=F, resolution=SIZE, seed=0, ip_adapter=True)
    result = train(root / "one", model, root / "ip_run", steps=3, lr=1e-3, device="cpu")
    assert result.step == 3 and all(np.isfinite(result.losses))
    before, after = unet_state(model), unet_state(root / "ip_run")
    assert all(torch.equal(before[k], after[k]) for k in before if "_ip." in k or k.startswith("encoder_hid_proj."))
    assert (root / "ip_run" / "image_encoder" / "model.safetensors").is_file()
    load_pipeline(root / "ip_run", allow_untrained=True)
