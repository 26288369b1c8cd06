"""Sampling time and peak memory of the multi-view video pipeline (the architecture, with random weights).

    .venv/bin/python benchmarks/bench_mvdiff.py [--device cuda] [--views 4] [--frames 16] [--size 256]
        [--steps 25] [--dtype bf16] [--tiny] [--threads 1]

Default: the published Animate3D architecture (`unet.animate3d_unet_config`: SD1.5 UNet + AnimateDiff v1-5-2
motion modules + view attention + IP-Adapter, 1.5 B parameters), an SD1.5-sized VAE, a CLIP ViT-L/14-sized text
encoder and a CLIP ViT-H/14-sized image encoder (IP-Adapter; `--no-ip-adapter` leaves both out),
all with random weights — speed and memory do not depend on the weight values, so this measures what a
converted checkpoint costs without having one. `--tiny` uses the tiny test model instead (a CPU plumbing check).
Prints one table: build time, sampling wall time (CFG, every step), s/step, peak CUDA memory.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(tiny: bool, views: int, size: int, ip_adapter: bool):
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from backend.mvdiff.checkpoint import ANIMATE3D_SCHEDULER, tiny_tokenizer, tiny_vae_config
    from backend.mvdiff.pipeline import MultiViewVideoPipeline
    from backend.mvdiff.unet import animate3d_unet_config, build_unet, tiny_unet_config

    tokenizer = tiny_tokenizer()  # tokenization cost is negligible; the encoder's size is what matters
    if tiny:
        unet_config, vae_config, width, layers, heads, inner = tiny_unet_config(views), tiny_vae_config(), 32, 2, 4, 37
    else:
        unet_config = {**animate3d_unet_config(views, ip_adapter=ip_adapter), "sample_size": size // 8}
        vae_config = {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": size,
        }
        width, layers, heads, inner = 768, 12, 12, 3072
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_encoder = None
    if unet_config.get("ip_adapter_image_dim"):  # IP-Adapter SD1.5's image encoder: CLIP ViT-H/14
        vision = CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
        )
        image_encoder = CLIPVisionModelWithProjection(vision)
    return MultiViewVideoPipeline(
        vae=AutoencoderKL(**vae_config),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=build_unet(unet_config),
        scheduler=DDIMScheduler(**ANIMATE3D_SCHEDULER),
        image_encoder=image_encoder,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (CPU plumbing check)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-ip-adapter", action="store_true", help="leave out the IP-Adapter and image encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    device = torch.device(args.device)

    from backend.mvdiff.cameras import mvdream_cameras

    started = time.perf_counter()
    torch.manual_seed(0)
    pipe = build(args.tiny, args.views, args.size, not args.no_ip_adapter)
    pipe.model_info = {"trained": False, "source": "random weights (benchmark)"}
    for model in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        if model is None:
            continue
        torch.nn.Module.to(model, device=device, dtype=dtype)
    params = sum(p.numel() for p in pipe.unet.parameters())
    built = time.perf_counter() - started

    rng = np.random.default_rng(0)
    images = rng.random((args.views, args.frames, args.size, args.size, 3), dtype=np.float32)
    mask = np.zeros((args.views, args.frames), bool)
    mask[:, 0] = True
    step_times: list[float] = []
    mark = [time.perf_counter()]

    def callback(step, total, preview):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        step_times.append(now - mark[0])
        mark[0] = now

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    mark[0] = start
    out = pipe(
        "a horse gallops",
        images,
        mask,
        mvdream_cameras(args.views),
        num_frames=args.frames,
        num_inference_steps=args.steps,
        callback=callback,
        allow_untrained=True,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    table = Table(title="multi-view video sampling (random weights: speed and memory only)")
    for column in (
        "model",
        "UNet params",
        "device",
        "dtype",
        "V×F×px",
        "steps",
        "build s",
        "sample s",
        "s/step",
        "peak GiB",
    ):
        table.add_column(column)
    steady = sorted(step_times[1:] or step_times)[len(step_times[1:] or step_times) // 2]
    table.add_row(
        "tiny" if args.tiny else "Animate3D-size",
        f"{params / 1e6:.0f} M",
        str(device),
        args.dtype,
        f"{args.views}×{args.frames}×{args.size}",
        str(args.steps),
        f"{built:.1f}",
        f"{total:.1f}",
        f"{steady:.2f}",
        f"{peak:.1f}",
    )
    Console(width=200).print(table)
    assert out.frames.shape == (args.views, args.frames, args.size, args.size, 3)


if __name__ == "__main__":
    main()
