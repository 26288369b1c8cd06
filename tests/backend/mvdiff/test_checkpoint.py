"""Model folders: tiny model writing, layout and tensor checks that name the problem, save/load round trip."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.mvdiff.cameras import mvdream_cameras
from backend.mvdiff.checkpoint import (
    MODEL_FILE,
    UntrainedModelError,
    check_state_dict,
    default_dtype,
    load_pipeline,
    model_info,
    write_model_info,
    write_tiny,
)
from shared.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", views=4, frames=4, resolution=32, seed=0)


@pytest.fixture
def copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "model")


def generate(pipe, steps=2, seed=0):
    rng = np.random.default_rng(1)
    images = rng.random((4, 4, 32, 32, 3), dtype=np.float32)
    mask = np.zeros((4, 4), bool)
    mask[:, 0] = True
    return pipe(
        "a horse",
        images,
        mask,
        mvdream_cameras(4),
        num_frames=4,
        num_inference_steps=steps,
        seed=seed,
        allow_untrained=True,
    ).frames


def test_tiny_folder_has_the_diffusers_layout_and_says_untrained(tiny):
    for path in [
        "model_index.json",
        MODEL_FILE,
        "unet/config.json",
        UNET_WEIGHTS,
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    ]:
        assert (tiny / path).is_file(), path
    info = model_info(tiny)
    assert info["trained"] is False and info["kind"] == "tiny-random"
    assert (info["views"], info["max_frames"], info["resolution"]) == (4, 4, 32)
    index = json.loads((tiny / "model_index.json").read_text())
    assert index["unet"] == ["backend.mvdiff.unet", "MultiViewVideoUNet"]
    scheduler = json.loads((tiny / "scheduler/scheduler_config.json").read_text())
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (0.00085, 0.012, "linear")
    assert json.loads((tiny / "unet/config.json").read_text())["num_views"] == 4


def test_untrained_folder_is_refused_without_permission(tiny):
    with pytest.raises(UntrainedModelError, match="random weights for tests") as err:
        load_pipeline(tiny)
    assert "tessera4d mvdiff convert-animate3d" in str(err.value)
    assert load_pipeline(tiny, allow_untrained=True).trained is False


def test_trained_flag_lets_the_pipeline_run_without_permission(copy):
    info = model_info(copy)
    write_model_info(
        copy, **{**{k: info[k] for k in ("kind", "source", "views", "max_frames", "resolution")}, "trained": True}
    )
    pipe = load_pipeline(copy)
    assert pipe.trained
    rng = np.random.default_rng(0)
    out = pipe(
        "x",
        rng.random((4, 4, 32, 32, 3), dtype=np.float32),
        np.eye(4, dtype=bool),
        mvdream_cameras(4),
        num_frames=4,
        num_inference_steps=1,
    )
    assert out.trained is True


def test_save_load_round_trip_gives_identical_videos(tiny, tmp_path):
    pipe = load_pipeline(tiny, allow_untrained=True)
    pipe.save_pretrained(tmp_path / "again")
    shutil.copy(tiny / MODEL_FILE, tmp_path / "again" / MODEL_FILE)
    again = load_pipeline(tmp_path / "again", allow_untrained=True)
    assert np.array_equal(generate(pipe), generate(again))
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, part).state_dict(), getattr(again, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_seed_of_write_tiny_decides_the_weights(tmp_path):
    a = load_pipeline(write_tiny(tmp_path / "a", seed=1), allow_untrained=True)
    b = load_pipeline(write_tiny(tmp_path / "b", seed=1), allow_untrained=True)
    c = load_pipeline(write_tiny(tmp_path / "c", seed=2), allow_untrained=True)
    key = "conv_in.weight"
    assert torch.equal(a.unet.state_dict()[key], b.unet.state_dict()[key])
    assert not torch.equal(a.unet.state_dict()[key], c.unet.state_dict()[key])


def test_missing_folder_says_what_a_model_folder_holds(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        load_pipeline(tmp_path / "nowhere")
    message = str(err.value)
    assert "unet/{config.json, diffusion_pytorch_model.safetensors}" in message
    assert "text_encoder/{config.json, model.safetensors}" in message
    assert "tessera4d mvdiff convert-animate3d" in message


@pytest.mark.parametrize(
    "remove, named",
    [
        (["unet/diffusion_pytorch_model.safetensors"], "unet/diffusion_pytorch_model.safetensors"),
        (["vae/config.json", "scheduler/scheduler_config.json"], "vae/config.json, scheduler/scheduler_config.json"),
        ([MODEL_FILE], MODEL_FILE),
        (["tokenizer/tokenizer.json"], "tokenizer/tokenizer.json (or tokenizer/vocab.json + tokenizer/merges.txt)"),
    ],
)
def test_missing_files_are_listed_by_path(copy, remove, named):
    for path in remove:
        (copy / path).unlink()
    with pytest.raises(InputError, match="incomplete") as err:
        load_pipeline(copy, allow_untrained=True)
    assert f"missing: {named}" in str(err.value)


def test_missing_tensor_is_named_with_its_shape(copy):
    state = load_file(copy / UNET_WEIGHTS)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_i2v.weight"
    shape = tuple(state.pop(key).shape)
    save_file(state, copy / UNET_WEIGHTS)
    with pytest.raises(InputError) as err:
        load_pipeline(copy, allow_untrained=True)
    message = str(err.value)
    assert UNET_WEIGHTS in message and f"tensor {key!r} is missing (expected shape {shape})" in message
    assert "1 of" in message


def test_mismatched_tensor_is_named_with_both_shapes(copy):
    state = load_file(copy / UNET_WEIGHTS)
    key = "camera_embedding.linear_1.weight"
    state[key] = torch.zeros(128, 12)
    save_file(state, copy / UNET_WEIGHTS)
    with pytest.raises(
        InputError, match=r"'camera_embedding.linear_1.weight' has shape \(128, 12\), expected \(128, 16\)"
    ):
        load_pipeline(copy, allow_untrained=True)


def test_unexpected_tensor_is_named(copy):
    state = load_file(copy / "vae/diffusion_pytorch_model.safetensors")
    state["decoder.extra.weight"] = torch.zeros(3)
    save_file(state, copy / "vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(InputError, match="unexpected tensor 'decoder.extra.weight'"):
        load_pipeline(copy, allow_untrained=True)


def test_unreadable_weights_and_config_are_input_errors(copy):
    (copy / "text_encoder/model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="text_encoder/model.safetensors is not a readable safetensors file"):
        load_pipeline(copy, allow_untrained=True)
    (copy / "unet/config.json").write_text("{broken")
    with pytest.raises(InputError, match="unet/config.json is not readable JSON"):
        load_pipeline(copy, allow_untrained=True)


def test_views_in_the_marker_must_match_the_unet(copy):
    info = model_info(copy)
    write_model_info(
        copy, **{**{k: info[k] for k in ("trained", "kind", "source", "max_frames", "resolution")}, "views": 6}
    )
    with pytest.raises(InputError, match="num_views=4 but tessera_model.json says views=6"):
        load_pipeline(copy, allow_untrained=True)


@pytest.mark.parametrize(
    "content, words",
    [
        ("[]", '"format"'),
        ('{"format": 2}', '"format": 1'),
        (
            '{"format": 1, "trained": "no", "views": 4, "max_frames": 4, "resolution": 32, "kind": "tiny-random"}',
            '"trained"',
        ),
        ('{"format": 1, "trained": true, "views": 4, "max_frames": 4, "resolution": 32, "kind": "mine"}', '"kind"'),
        ("{", "not readable JSON"),
    ],
)
def test_bad_marker_file(copy, content, words):
    (copy / MODEL_FILE).write_text(content)
    with pytest.raises(InputError, match=words):
        model_info(copy)


def test_check_state_dict_reports_the_first_mismatch_in_model_order():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4))
    state = model.state_dict()
    check_state_dict(model, state, source="ok")  # no error
    broken = {k: v for k, v in state.items() if k not in ("0.bias", "1.weight")}
    with pytest.raises(InputError, match=r"x: tensor '0.bias' is missing \(expected shape \(3,\)\); 2 of 4"):
        check_state_dict(model, broken, source="x")


def test_write_tiny_refuses_a_non_empty_folder_and_bad_sizes(tiny, tmp_path):
    with pytest.raises(InputError, match="not empty"):
        write_tiny(tiny)
    with pytest.raises(InputError, match="multiple of 8"):
        write_tiny(tmp_path / "odd", resolution=20)


def test_default_dtype_is_bf16_on_cuda_and_fp32_on_cpu():
    assert default_dtype("cuda") == torch.bfloat16
    assert default_dtype("cuda:1") == torch.bfloat16
    assert default_dtype("cpu") == torch.float32


def test_bf16_weights_run(tiny):
    pipe = load_pipeline(tiny, dtype=torch.bfloat16, allow_untrained=True)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    frames = generate(pipe, steps=1)
    assert frames.dtype == np.float32 and np.isfinite(frames).all()


def test_ip_adapter_folder_needs_its_image_encoder_and_round_trips(tmp_path):
    folder = write_tiny(tmp_path / "ip", ip_adapter=True)
    pipe = load_pipeline(folder, allow_untrained=True)
    assert pipe.image_encoder is not None and pipe.unet.config.ip_adapter_image_dim == 16
    pipe.save_pretrained(tmp_path / "again")
    shutil.copy(folder / MODEL_FILE, tmp_path / "again" / MODEL_FILE)
    assert np.array_equal(generate(pipe), generate(load_pipeline(tmp_path / "again", allow_untrained=True)))
    (folder / "image_encoder" / "model.safetensors").unlink()
    with pytest.raises(InputError, match="has an IP-Adapter.*missing: image_encoder/model.safetensors"):
        load_pipeline(folder, allow_untrained=True)
