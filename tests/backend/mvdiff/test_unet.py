"""MultiViewVideoUNet on a tiny random config: shapes, view mixing, camera, I2V branch, save/load round trip."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from backend.mvdiff.cameras import embedding_input, mvdream_cameras
from backend.mvdiff.unet import (
    MotionViewAttn,
    MultiViewContext,
    MultiViewSelfAttn,
    MultiViewVideoUNet,
    build_unet,
    tiny_unet_config,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

V, F, H, W = 4, 4, 8, 8


def make_unet(seed: int = 0, **overrides) -> MultiViewVideoUNet:
    torch.manual_seed(seed)
    return build_unet({**tiny_unet_config(views=V, frames=F), **overrides}).eval()


def inputs(batch: int = 1, seed: int = 1, height: int = H, width: int = W):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch * V, 4, F, height, width, generator=g)
    text = torch.randn(batch * V, 7, 32, generator=g)
    camera = torch.from_numpy(embedding_input(mvdream_cameras(V))).repeat(batch, 1)
    return sample, text, camera


def run(unet, sample, text, camera, t=500) -> torch.Tensor:
    with torch.no_grad():
        return unet(sample, t, text, camera).sample


def changed_view1(sample: torch.Tensor) -> torch.Tensor:
    other = sample.clone()
    other[1] += torch.randn_like(other[1])
    return other


def view0_moves_when_view1_changes(unet) -> bool:
    sample, text, camera = inputs()
    a = run(unet, sample, text, camera)
    b = run(unet, changed_view1(sample), text, camera)
    return not torch.allclose(a[0], b[0], atol=1e-6)


def test_output_has_the_sample_shape_and_is_finite():
    unet = make_unet()
    sample, text, camera = inputs(batch=2)
    out = run(unet, sample, text, camera)
    assert out.shape == (2 * V, 4, F, H, W)
    assert torch.isfinite(out).all()


def test_non_square_latents_run():
    unet = make_unet()
    sample, text, camera = inputs(height=8, width=12)
    assert run(unet, sample, text, camera).shape == (V, 4, F, 8, 12)


def test_processors_are_installed_and_their_weights_are_in_the_state_dict():
    unet = make_unet()
    procs = unet.attn_processors
    spatial_self = [p for n, p in procs.items() if "motion_modules" not in n and n.endswith("attn1.processor")]
    motion = [p for n, p in procs.items() if "motion_modules" in n]
    cross = [p for n, p in procs.items() if "motion_modules" not in n and n.endswith("attn2.processor")]
    assert spatial_self and all(isinstance(p, MultiViewSelfAttn) for p in spatial_self)
    assert motion and all(isinstance(p, MotionViewAttn) for p in motion)
    assert cross and all(isinstance(p, AttnProcessor2_0) for p in cross)
    keys = unet.state_dict().keys()
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_i2v.weight" in keys
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_i2v.bias" in keys
    assert "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_sp.weight" in keys
    assert "down_blocks.0.motion_modules.0.transformer_blocks.0.attn2.processor.alpha_blender.mix_factor" in keys
    assert "camera_embedding.linear_1.weight" in keys
    # the frame encoding moved from the motion blocks into the processors (Animate3D's layout)
    assert not any("motion_modules" in k and k.endswith("transformer_blocks.0.pos_embed.pe") for k in keys)
    assert "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.time_pos_embed.pe" in keys


def test_joint_view_attention_mixes_views_and_plain_attention_does_not():
    unet = make_unet()
    assert view0_moves_when_view1_changes(unet)
    unet.set_attn_processor(AttnProcessor2_0())
    assert not view0_moves_when_view1_changes(unet)


def test_each_multiview_processor_mixes_views_on_its_own():
    # only the spatial joint attention (no motion view branch, no I2V)
    spatial_only = make_unet(motion_view_attention=False, i2v_attention=False)
    assert view0_moves_when_view1_changes(spatial_only)
    # only the motion-module view branch: spatial attn1 back to plain attention
    motion_only = make_unet(i2v_attention=False)
    plain = {n: AttnProcessor2_0() for n in motion_only.attn_processors if "motion_modules" not in n}
    motion_only.set_attn_processor({**motion_only.attn_processors, **plain})
    assert view0_moves_when_view1_changes(motion_only)


def test_samples_of_a_batch_do_not_mix():
    # classifier-free guidance runs the unconditional and conditional batch together: they must stay apart
    unet = make_unet()
    sample, text, camera = inputs(batch=2)
    both = run(unet, sample, text, camera)
    first = run(unet, sample[:V], text[:V], camera[:V])
    torch.testing.assert_close(both[:V], first, atol=2e-5, rtol=1e-4)


def test_the_camera_embedding_changes_the_output():
    unet = make_unet()
    sample, text, camera = inputs()
    rotated = torch.from_numpy(embedding_input(mvdream_cameras(V, azimuth_start_deg=45.0)))
    assert not torch.allclose(run(unet, sample, text, camera), run(unet, sample, text, rotated), atol=1e-6)


def test_fresh_i2v_branch_is_a_no_op_until_trained():
    with_i2v = make_unet(seed=3)
    without = make_unet(seed=3, i2v_attention=False)
    state = {k: v for k, v in with_i2v.state_dict().items() if "i2v" not in k}
    without.load_state_dict(state, strict=True)
    sample, text, camera = inputs()
    torch.testing.assert_close(run(with_i2v, sample, text, camera), run(without, sample, text, camera))
    # once its output projection is non-zero, frame 0 reaches the later frames through it
    with torch.no_grad():
        for name, param in with_i2v.named_parameters():
            if "to_out_i2v.weight" in name:
                param.normal_(0, 0.2)
    assert not torch.allclose(run(with_i2v, sample, text, camera), run(without, sample, text, camera), atol=1e-6)


def test_same_seed_same_model_same_output():
    sample, text, camera = inputs()
    a = run(make_unet(seed=7), sample, text, camera)
    b = run(make_unet(seed=7), sample, text, camera)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(make_unet(seed=8), sample, text, camera))


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    unet = make_unet(seed=5)
    with torch.no_grad():  # make the zero-initialised branches matter, so their weights must round-trip too
        for name, param in unet.named_parameters():
            if "i2v" in name or "mix_factor" in name:
                param.normal_(0, 0.3)
    unet.save_pretrained(tmp_path / "unet")
    loaded = MultiViewVideoUNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.num_views == V
    assert loaded.config.motion_view_attention is True
    assert loaded.state_dict().keys() == unet.state_dict().keys()
    sample, text, camera = inputs()
    assert torch.equal(run(unet, sample, text, camera), run(loaded, sample, text, camera))


def test_timestep_per_sample_is_accepted():
    unet = make_unet()
    sample, text, camera = inputs(batch=2)
    per_sample = torch.tensor([100] * V + [900] * V)
    out = run(unet, sample, text, camera, t=per_sample)
    first = run(unet, sample[:V], text[:V], camera[:V], t=100)
    torch.testing.assert_close(out[:V], first, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s, t, c: (s[:3], t[:3], c[:3]), "multiple of num_views"),
        (lambda s, t, c: (s, t, c[:, :12]), "camera must be"),
        (lambda s, t, c: (s, t[:1], c), "one row per view"),
        (lambda s, t, c: (s[:, :, 0], t, c), "sample must be"),
    ],
)
def test_wrong_shapes_are_reported(change, words):
    unet = make_unet()
    with pytest.raises(ValueError, match=words):
        run(unet, *change(*inputs()))


def test_level_size_follows_the_downsampling():
    ctx = MultiViewContext(height=9, width=12)
    assert ctx.level_size(108) == (9, 12)
    assert ctx.level_size(30) == (5, 6)
    assert ctx.level_size(9) == (3, 3)
    with pytest.raises(RuntimeError):
        ctx.level_size(7)


def test_ip_adapter_adds_image_tokens_to_every_cross_attention(tmp_path):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    unet = make_unet(ip_adapter_image_dim=16)
    cross = [p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor") and "motion" not in n]
    assert cross and all(isinstance(p, IPAdapterAttnProcessor2_0) for p in cross)
    keys = unet.state_dict().keys()
    assert "encoder_hid_proj.image_projection_layers.0.image_embeds.weight" in keys
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight" in keys
    sample, text, camera = inputs()
    image = torch.randn(V, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = unet(sample, 500, text, camera).sample
        zeros = unet(sample, 500, text, camera, image_embeds=torch.zeros(V, 16)).sample
        prompted = unet(sample, 500, text, camera, image_embeds=image).sample
    assert torch.equal(plain, zeros)  # no image prompt = zero embeddings (the unconditional branch)
    assert not torch.allclose(plain, prompted, atol=1e-6)
    unet.save_pretrained(tmp_path / "ip")
    loaded = MultiViewVideoUNet.from_pretrained(tmp_path / "ip").eval()
    with torch.no_grad():
        assert torch.equal(loaded(sample, 500, text, camera, image_embeds=image).sample, prompted)
    with pytest.raises(ValueError, match="image_embeds must be"):
        unet(sample, 500, text, camera, image_embeds=image[:2])


def test_image_embeds_without_an_ip_adapter_are_an_error():
    sample, text, camera = inputs()
    with pytest.raises(ValueError, match="no IP-Adapter"):
        make_unet()(sample, 500, text, camera, image_embeds=torch.zeros(V, 16))
