"""`tessera4d mvdiff init-tiny` and `tessera4d mvdiff sample` on the tiny model (plumbing, not quality)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from backend.cli import app
from backend.mvdiff.checkpoint import model_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.timeout(90)


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "tiny"
    code, text = cli("mvdiff", "init-tiny", folder, "--views", 4, "--frames", 4, "--resolution", 32)
    assert code == 0, text
    assert "tests only" in text
    return folder


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> Path:
    """Four RGBA renders of a square at 48 px (resized to the model's 32 px, transparency over white)."""
    folder = tmp_path_factory.mktemp("renders")
    for v in range(4):
        rgba = np.zeros((48, 48, 4), np.uint8)
        rgba[12:36, 12 + v : 30 + v] = (200, 40 * v, 30, 255)
        Image.fromarray(rgba).save(folder / f"view_{v}.png")
    return folder


def test_init_tiny_writes_an_untrained_model(tiny):
    info = model_info(tiny)
    assert info["trained"] is False and info["views"] == 4 and info["resolution"] == 32


def test_sample_refuses_the_untrained_model(tiny, renders, tmp_path):
    code, text = cli(
        "mvdiff",
        "sample",
        "--checkpoint",
        tiny,
        "--images",
        renders,
        "--prompt",
        "x",
        "--out",
        tmp_path / "o",
        "--frames",
        3,
        "--steps",
        1,
        "--device",
        "cpu",
    )
    assert code == 1
    assert "random weights for tests" in text and not (tmp_path / "o").exists()


def test_sample_writes_every_view_and_frame(tiny, renders, tmp_path):
    out = tmp_path / "video"
    code, text = cli(
        "mvdiff",
        "sample",
        "--checkpoint",
        tiny,
        "--images",
        renders,
        "--prompt",
        "a box slides",
        "--out",
        out,
        "--frames",
        3,
        "--steps",
        2,
        "--seed",
        1,
        "--device",
        "cpu",
        "--allow-untrained",
    )
    assert code == 0, text
    assert "Wrote 12 frames (4 views × 3)" in text and "noise" in text
    for v in range(4):
        for f in range(3):
            image = Image.open(out / f"view_{v}" / f"frame_{f:04d}.png")
            assert image.size == (32, 32) and image.mode == "RGB"


def test_sample_takes_a_list_of_files_and_checks_their_count(tiny, renders, tmp_path):
    files = sorted(renders.iterdir())
    common = ["--prompt", "x", "--frames", 2, "--steps", 1, "--device", "cpu", "--allow-untrained"]
    args = [a for p in files[:3] for a in ("--images", p)]
    code, text = cli("mvdiff", "sample", "--checkpoint", tiny, *args, "--out", tmp_path / "three", *common)
    assert code == 1 and "needs 4 condition images" in text and "gave 3" in text
    args = [a for p in files for a in ("--images", p)]
    code, text = cli("mvdiff", "sample", "--checkpoint", tiny, *args, "--out", tmp_path / "four", *common)
    assert code == 0, text
    assert len(list((tmp_path / "four").rglob("*.png"))) == 8


def test_sample_with_a_missing_checkpoint_lists_the_files_needed(renders, tmp_path):
    code, text = cli(
        "mvdiff",
        "sample",
        "--checkpoint",
        tmp_path / "none",
        "--images",
        renders,
        "--prompt",
        "x",
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    )
    assert code == 1
    assert "does not exist" in text and "diffusion_pytorch_model.safetensors" in text
    assert "convert-animate3d" in text


def test_init_tiny_refuses_a_non_empty_folder(tiny):
    code, text = cli("mvdiff", "init-tiny", tiny)
    assert code == 1 and "not empty" in text


def test_sample_with_free_init_gives_another_video_of_the_same_layout(tiny, renders, tmp_path):
    common = ["--checkpoint", tiny, "--images", renders, "--prompt", "a box slides", "--frames", 3, "--steps", 2]
    common += ["--device", "cpu", "--allow-untrained"]
    code, text = cli("mvdiff", "sample", *common, "--out", tmp_path / "one")
    assert code == 0, text
    code, text = cli("mvdiff", "sample", *common, "--free-init", 2, "--out", tmp_path / "two")
    assert code == 0, text
    one = np.asarray(Image.open(tmp_path / "one" / "view_1" / "frame_0002.png"))
    two = np.asarray(Image.open(tmp_path / "two" / "view_1" / "frame_0002.png"))
    assert one.shape == two.shape and not np.array_equal(one, two)
