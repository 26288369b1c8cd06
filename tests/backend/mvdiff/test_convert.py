"""convert-animate3d on a synthetic Animate3D release: the parts of a tiny model written under Animate3D's names
(MVDream UNet2DConditionModel folder, diffusers MotionAdapter folder or AnimateDiff .ckpt, a DDP-style
animate3d_motion_modules.ckpt with IP-Adapter keys), converted back and compared with the model they came from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from backend.mvdiff.cameras import embedding_input, mvdream_cameras
from backend.mvdiff.checkpoint import load_pipeline, model_info
from backend.mvdiff.convert import (
    SOURCE_PARTS,
    convert_animate3d,
    convert_with_report,
    map_key,
    motion_unet_config,
    read_tensors,
    resolve_source,
)
from backend.mvdiff.unet import MultiViewVideoUNet, build_unet, tiny_unet_config
from shared.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

V, F = 4, 4
IP_KEY = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"


def tiny_model(seed: int, **overrides) -> MultiViewVideoUNet:
    torch.manual_seed(seed)
    unet = build_unet({**tiny_unet_config(views=V, frames=F), **overrides}).eval()
    with torch.no_grad():  # the zero-initialised branches get values, so that a wrong mapping shows
        for name, p in unet.named_parameters():
            if "i2v" in name or "_sp" in name or "mix_factor" in name:
                p.normal_(0.0, 0.2)
    return unet


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE vocabulary without merges: every character is a token."""
    folder.mkdir(parents=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_release(
    src: Path, model: MultiViewVideoUNet, *, adapter_format: str = "folder", seed: int = 7, ip_keys: bool = True
) -> None:
    """Animate3D's published parts, made from `model`'s weights under the names the real files use."""
    state = model.state_dict()
    config = model.config
    # MVDream: a diffusers UNet2DConditionModel folder with the camera embedding (MVUNet2DConditionModel).
    unet2d = UNet2DConditionModel(
        sample_size=config.sample_size,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.num_attention_heads,
    )
    spatial = {k: v for k, v in state.items() if "motion_modules." not in k and ".processor." not in k}
    camera = {k: spatial.pop(k) for k in list(spatial) if k.startswith("camera_embedding.")}
    unet2d.load_state_dict(spatial, strict=True)  # our spatial names are diffusers' UNet2DConditionModel names
    (src / "mvdream" / "unet").mkdir(parents=True)
    unet2d_config = {**dict(unet2d.config), "_class_name": "MVUNet2DConditionModel", "camera_embedding_dim": 16}
    (src / "mvdream" / "unet" / "config.json").write_text(json.dumps(unet2d_config))
    # MVDream's own attention has no I2V branch: the I2V weights come from Animate3D's checkpoint.
    save_file({**unet2d.state_dict(), **camera}, str(src / "mvdream" / "unet" / "diffusion_pytorch_model.safetensors"))
    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(src / "mvdream" / "vae")
    text_config = CLIPTextConfig(
        vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    CLIPTextModel(text_config).save_pretrained(src / "mvdream" / "text_encoder")
    write_tokenizer(src / "mvdream" / "tokenizer")
    # The motion adapter: AnimateDiff's SD1.5 modules, before Animate3D's fine-tuning (other values).
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels),
        motion_layers_per_block=config.layers_per_block,
        motion_num_attention_heads=config.motion_num_attention_heads,
        motion_norm_num_groups=config.norm_num_groups,
        motion_max_seq_length=config.motion_max_seq_length,
        use_motion_mid_block=True,
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.05)
    if adapter_format == "folder":
        adapter.save_pretrained(src / "motion_adapter")
    else:  # AnimateDiff's own names (the inverse of diffusers' conversion script)
        original = {}
        for k, v in adapter.state_dict().items():
            k = (
                k.replace(".transformer_blocks", ".temporal_transformer.transformer_blocks")
                .replace(".proj_in", ".temporal_transformer.proj_in")
                .replace(".proj_out", ".temporal_transformer.proj_out")
                .replace(".norm.", ".temporal_transformer.norm.")
                .replace(".attn1", ".attention_blocks.0")
                .replace(".attn2", ".attention_blocks.1")
                .replace(".norm1", ".norms.0")
                .replace(".norm2", ".norms.1")
                .replace(".norm3", ".ff_norm")
                .replace(".pos_embed.pe", ".attention_blocks.0.pos_encoder.pe")
            )
            original[k] = v
        torch.save({"state_dict": original}, src / "motion_adapter.ckpt")
    # Animate3D: DDP training save (`module.` prefix) of the trained keys, with optimizer state and IP-Adapter.
    trained = {f"module.{k}": v for k, v in state.items() if "motion_modules." in k or "i2v" in k}
    if ip_keys:  # a full save also holds the IP-Adapter Animate3D loaded (here without an image encoder in SRC)
        trained[f"module.{IP_KEY}"] = torch.zeros(32, 32)
        trained["module.encoder_hid_proj.image_projection_layers.0.image_embeds.weight"] = torch.zeros(128, 64)
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.AdamW(params)
    params[0].grad = torch.ones(3)
    optimizer.step()
    torch.save(
        {"epoch": 3, "global_step": 1000, "state_dict": trained, "optimizer": optimizer.state_dict()},
        src / "animate3d_motion_modules.ckpt",
    )


def outputs(unet: MultiViewVideoUNet) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(V, 4, F, 8, 8, generator=g)
    text = torch.randn(V, 7, 32, generator=g)
    camera = torch.from_numpy(embedding_input(mvdream_cameras(V)))
    with torch.no_grad():
        return unet(sample, 400, text, camera).sample


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    model = tiny_model(seed=1)
    write_release(root / "src", model)
    report = convert_with_report(root / "src", root / "dst")
    return root, model, report


def test_converted_folder_loads_and_reproduces_the_source_model(converted):
    root, model, report = converted
    pipe = load_pipeline(root / "dst")  # a converted model counts as trained: no allow_untrained needed
    torch.testing.assert_close(outputs(pipe.unet.eval()), outputs(model), rtol=0, atol=0)
    assert report.sources["animate3d_motion_modules.ckpt"] > 0  # the fine-tuned modules won over the adapter


def test_folder_layout_and_model_info(converted):
    root, _, report = converted
    dst = root / "dst"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (dst / part).exists(), part
    info = model_info(dst)
    assert info == {
        "format": 1,
        "trained": True,
        "kind": "converted-animate3d",
        "source": str(root / "src"),
        "views": 4,
        "max_frames": 16,
        "resolution": 256,
    }
    assert CLIPTokenizer.from_pretrained(dst / "tokenizer")("ab").input_ids[0] == 0
    dropped = sum(report.dropped.values(), [])
    assert IP_KEY in dropped and "encoder_hid_proj.image_projection_layers.0.image_embeds.weight" in dropped
    assert "IP-Adapter" in report.summary()


def test_original_animatediff_ckpt_converts_too(tmp_path):
    model = tiny_model(seed=2, motion_num_attention_heads=8)  # AnimateDiff's; an original .ckpt has no config
    write_release(tmp_path / "src", model, adapter_format="ckpt")
    ckpt = tmp_path / "src" / "animate3d_motion_modules.ckpt"
    data = torch.load(ckpt, weights_only=True)  # no frame tables anywhere: the converter recomputes them
    data["state_dict"] = {k: v for k, v in data["state_dict"].items() if not k.endswith("time_pos_embed.pe")}
    torch.save(data, ckpt)
    report = convert_with_report(tmp_path / "src", tmp_path / "dst")
    assert report.derived == [k for k in model.state_dict() if k.endswith("time_pos_embed.pe")]
    unet = MultiViewVideoUNet.from_pretrained(tmp_path / "dst" / "unet").eval()
    torch.testing.assert_close(outputs(unet), outputs(model), rtol=0, atol=0)


def test_missing_tensor_is_named_and_nothing_is_left_behind(tmp_path):
    model = tiny_model(seed=3)
    write_release(tmp_path / "src", model)
    ckpt = tmp_path / "src" / "animate3d_motion_modules.ckpt"
    data = torch.load(ckpt, weights_only=True)
    gone = "module.up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_i2v.bias"
    del data["state_dict"][gone]
    torch.save(data, ckpt)
    with pytest.raises(
        InputError,
        match=r"'up_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn1\.processor"
        r"\.to_out_i2v\.bias' is in none of the sources",
    ):
        convert_animate3d(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_mismatched_tensor_names_key_and_shapes(tmp_path):
    model = tiny_model(seed=4)
    write_release(tmp_path / "src", model)
    ckpt = tmp_path / "src" / "animate3d_motion_modules.ckpt"
    data = torch.load(ckpt, weights_only=True)
    key = "module.mid_block.motion_modules.0.proj_in.weight"
    data["state_dict"][key] = torch.zeros(64, 32)
    torch.save(data, ckpt)
    with pytest.raises(InputError, match=r"mid_block\.motion_modules\.0\.proj_in\.weight.*\(64, 32\).*\(64, 64\)"):
        convert_animate3d(tmp_path / "src", tmp_path / "dst")


def test_missing_parts_are_listed_with_their_files(tmp_path):
    (tmp_path / "src" / "mvdream" / "unet").mkdir(parents=True)
    with pytest.raises(InputError) as err:
        resolve_source(tmp_path / "src")
    message = err.value.message
    assert f"lacks {sum(not p.optional for p in SOURCE_PARTS)} of the Animate3D parts" in message
    assert "optional" in message and "h94/IP-Adapter" in message
    assert "animate3d_motion_modules.ckpt" in message and "mvdream/unet/config.json" in message
    assert "guoyww/animatediff-motion-adapter-v1-5-2" in message


def test_pickle_with_code_is_refused_without_allow_pickle(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "fn": np.dtype}, path)  # a global outside the allow-list
    with pytest.raises(InputError, match="--allow-pickle"):
        read_tensors(path)
    assert set(read_tensors(path, allow_pickle=True)) == {"a"}


def test_key_map_rules():
    assert map_key("conv_in.weight") == (["conv_in.weight"], None)
    names, reason = map_key("up_blocks.0.motion_modules.1.transformer_blocks.0.pos_embed.pe")
    assert names == [
        "up_blocks.0.motion_modules.1.transformer_blocks.0.attn1.processor.time_pos_embed.pe",
        "up_blocks.0.motion_modules.1.transformer_blocks.0.attn2.processor.time_pos_embed.pe",
    ]
    assert map_key(IP_KEY)[0] == [] and "IP-Adapter" in map_key(IP_KEY)[1]


def test_full_size_key_set_matches_animate3d_count():
    """Animate3D's inference.py loads its checkpoint with strict=False and asserts 0 or 726 missing keys (726: a
    motion-modules-only save). Our SD1.5-size model with IP-Adapter SD1.5 (CLIP ViT-H: 1024-d image embeddings)
    must have exactly 726 tensors outside the motion modules and I2V branches — the key map covers every trained
    tensor; without the IP-Adapter, 36 fewer (to_k_ip/to_v_ip on 16 cross-attentions + the image projection)."""
    sd15 = {
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "camera_embedding_dim": 16,
    }
    adapter = {"motion_layers_per_block": 2, "motion_max_seq_length": 32, "use_motion_mid_block": True}
    config = motion_unet_config(sd15, adapter)
    for ip_dim, untrained_count in ((1024, 726), (None, 726 - 36)):
        with torch.device("meta"):
            unet = build_unet({**config, "ip_adapter_image_dim": ip_dim})
        untrained = [k for k in unet.state_dict() if "motion_modules." not in k and "i2v" not in k]
        assert len(untrained) == untrained_count, ip_dim


def test_cli_names_missing_parts(tmp_path):
    from typer.testing import CliRunner

    from backend.cli import app

    result = CliRunner().invoke(app, ["mvdiff", "convert-animate3d", str(tmp_path), str(tmp_path / "dst")])
    assert result.exit_code == 1
    assert "animate3d_motion_modules.ckpt" in result.output and not (tmp_path / "dst").exists()


def test_ip_adapter_release_is_numbered_as_diffusers_loads_it(tmp_path):
    """With SRC/ip_adapter/ (IP-Adapter's own file + CLIP image encoder) the model gets Animate3D's image prompt;
    each '{id}.to_k_ip.weight' lands where diffusers' own IP-Adapter loader puts it."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = tiny_model(seed=5)
    write_release(tmp_path / "src", model, ip_keys=False)  # the IP-Adapter comes from its own release
    g = torch.Generator().manual_seed(0)
    groups = {
        "image_proj": {
            "proj.weight": torch.randn(4 * 32, 16, generator=g),
            "proj.bias": torch.randn(4 * 32, generator=g),
            "norm.weight": torch.randn(32, generator=g),
            "norm.bias": torch.randn(32, generator=g),
        },
        "ip_adapter": {},
    }
    for k in range(4):  # the tiny UNet's cross-attentions: 1 in down block 0, 2 in up block 1, 1 in the mid block
        for which in ("to_k_ip", "to_v_ip"):
            width = 64 if k == 3 else 32  # the mid block's width
            groups["ip_adapter"][f"{2 * k + 1}.{which}.weight"] = torch.randn(width, 32, generator=g)
    (tmp_path / "src" / "ip_adapter").mkdir()
    torch.save(groups, tmp_path / "src" / "ip_adapter" / "ip-adapter_sd15.bin")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(vision).save_pretrained(tmp_path / "src" / "ip_adapter" / "image_encoder")
    report = convert_with_report(tmp_path / "src", tmp_path / "dst")
    assert report.ip_adapter and "no IP-Adapter" not in report.summary()
    pipe = load_pipeline(tmp_path / "dst")
    assert pipe.image_encoder is not None and pipe.unet.config.ip_adapter_image_dim == 16

    reference = UNet2DConditionModel(  # the same spatial UNet, IP-Adapter loaded by diffusers itself
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=2,
    )
    reference._load_ip_adapter_weights([groups])
    ours = pipe.unet.state_dict()
    loaded = {k: v for k, v in reference.state_dict().items() if "_ip." in k or k.startswith("encoder_hid_proj.")}
    assert len(loaded) == 2 * 4 + 4
    for key, value in loaded.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
