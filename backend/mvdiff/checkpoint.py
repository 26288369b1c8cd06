"""Model folders of the multi-view video pipeline: layout check, loading, tiny random test models.

A model folder is a diffusers pipeline folder plus our marker file:

    model_index.json
    tessera_model.json          {"format": 1, "trained": bool, "kind": "tiny-random" | "converted-animate3d" |
                                 "fine-tuned", "source": str, "views": V, "max_frames": F, "resolution": px}
    unet/          config.json, diffusion_pytorch_model.safetensors      (MultiViewVideoUNet)
    vae/           config.json, diffusion_pytorch_model.safetensors      (AutoencoderKL)
    text_encoder/  config.json, model.safetensors                        (CLIPTextModel)
    tokenizer/     tokenizer_config.json + tokenizer.json, or vocab.json + merges.txt   (CLIPTokenizer)
    scheduler/     scheduler_config.json                                 (DDIMScheduler)
    image_encoder/ config.json, model.safetensors   (CLIPVisionModelWithProjection; only when the UNet config has
                                                     an IP-Adapter, `ip_adapter_image_dim`)

Nothing is downloaded: every part loads from this folder, and a missing or mismatched part is an `InputError`
that says which file and what `tessera4d mvdiff convert-animate3d` produces. `write_tiny` makes a ~2M-parameter
random model for tests; its `tessera_model.json` says `"trained": false` and the pipeline refuses it unless the
caller passes `allow_untrained=True`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shared.errors import InputError

if TYPE_CHECKING:
    from .pipeline import MultiViewVideoPipeline

MODEL_FILE = "tessera_model.json"
FORMAT = 1
KINDS = ("tiny-random", "converted-animate3d", "fine-tuned")
CONVERT_HINT = (
    "Convert the published Animate3D checkpoint with `tessera4d mvdiff convert-animate3d SRC DST` "
    "(it writes all of these), or make a tiny test model with `tessera4d mvdiff init-tiny DIR`."
)
REQUIRED: dict[str, list[str]] = {
    ".": ["model_index.json", MODEL_FILE],
    "unet": ["config.json", "diffusion_pytorch_model.safetensors"],
    "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
    "text_encoder": ["config.json", "model.safetensors"],
    "tokenizer": ["tokenizer_config.json"],
    "scheduler": ["scheduler_config.json"],
}
IMAGE_ENCODER = ["config.json", "model.safetensors"]  # required when the UNet has an IP-Adapter
# the tokenizer's vocabulary comes either as transformers' single file or as the classic CLIP pair
TOKENIZER_VOCAB: tuple[tuple[str, ...], ...] = (("tokenizer.json",), ("vocab.json", "merges.txt"))
ANIMATE3D_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
}


class UntrainedModelError(InputError):
    """The model folder holds random weights made for tests; its output means nothing."""

    def __init__(self, folder: str | Path):
        super().__init__(
            f'The model in {folder} holds random weights for tests (tessera_model.json says "trained": false); '
            "its output is noise, not a result. Convert a real checkpoint with "
            "`tessera4d mvdiff convert-animate3d SRC DST` and pass that folder."
        )


def missing_files(folder: Path) -> list[str]:
    """The required files absent from `folder`, as paths relative to it."""
    missing = [
        str(Path(part) / name)
        for part, names in REQUIRED.items()
        for name in names
        if not (folder / part / name).is_file()
    ]
    tokenizer = folder / "tokenizer"
    if not any(all((tokenizer / name).is_file() for name in option) for option in TOKENIZER_VOCAB):
        missing.append("tokenizer/tokenizer.json (or tokenizer/vocab.json + tokenizer/merges.txt)")
    return missing


def check_layout(folder: Path) -> Path:
    """`folder` resolved, or an InputError listing every missing file."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"Model folder {folder} does not exist. It must hold {_layout_text()}. {CONVERT_HINT}")
    missing = missing_files(folder)
    if missing:
        raise InputError(
            f"Model folder {folder} is incomplete; missing: {', '.join(missing)}. "
            f"A model folder holds {_layout_text()}. {CONVERT_HINT}"
        )
    return folder.resolve()


def _layout_text() -> str:
    parts = [f"{part}/{{{', '.join(names)}}}" if part != "." else ", ".join(names) for part, names in REQUIRED.items()]
    return "; ".join(parts) + " and tokenizer/tokenizer.json (or vocab.json + merges.txt)"


def model_info(folder: str | Path) -> dict:
    """The folder's tessera_model.json, checked: format, kind, trained, views, max_frames, resolution."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{path} is missing: {folder} is not a Tessera model folder. {CONVERT_HINT}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InputError(
            f'{path}: expected "format": {FORMAT}, got {info.get("format") if isinstance(info, dict) else info!r}.'
        )
    for key, kind in (("trained", bool), ("views", int), ("max_frames", int), ("resolution", int)):
        if not isinstance(info.get(key), kind):
            raise InputError(f'{path}: "{key}" must be a {kind.__name__}, got {info.get(key)!r}.')
    if info.get("kind") not in KINDS:
        raise InputError(f'{path}: "kind" must be one of {", ".join(KINDS)}, got {info.get("kind")!r}.')
    return info


def write_model_info(
    folder: Path, *, trained: bool, kind: str, source: str, views: int, max_frames: int, resolution: int
) -> Path:
    """Write tessera_model.json (for init-tiny, the converter and fine-tuning)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    info = {
        "format": FORMAT,
        "trained": bool(trained),
        "kind": kind,
        "source": str(source),
        "views": int(views),
        "max_frames": int(max_frames),
        "resolution": int(resolution),
    }
    path = Path(folder) / MODEL_FILE
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def check_state_dict(model: torch.nn.Module, state_dict: dict, *, source: str) -> None:
    """InputError naming the first tensor that is missing, unexpected or of the wrong shape (in model order)."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise InputError(
                f"{source}: tensor {key!r} is missing (expected shape {tuple(tensor.shape)}); "
                f"{_count(expected, state_dict)}. {CONVERT_HINT}"
            )
        found = tuple(state_dict[key].shape)
        if found != tuple(tensor.shape):
            raise InputError(
                f"{source}: tensor {key!r} has shape {found}, expected {tuple(tensor.shape)} from the config "
                "next to it; the weights and config.json do not belong together."
            )
    extra = [key for key in state_dict if key not in expected]
    if extra:
        raise InputError(
            f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all); the weights were saved "
            "from a different model than config.json describes."
        )


def _count(expected: dict, found: dict) -> str:
    missing = sum(1 for key in expected if key not in found)
    return f"{missing} of {len(expected)} tensors missing"


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file: {exc}") from exc


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from exc


def _load_model(build: Callable[[], torch.nn.Module], weights: Path) -> torch.nn.Module:
    """build() with the tensors of `weights`, checked first. The model is built on the meta device and takes
    the loaded tensors as they are (no random initialisation: that alone took 30 s for the 1.5 B UNet on a CPU);
    a model with buffers outside its state dict is built for real instead."""
    state = _load_weights(weights)
    with torch.device("meta"):
        model = build()
    check_state_dict(model, state, source=str(weights))
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = build()
        model.load_state_dict(state, strict=True)
    return model.eval()


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_pipeline(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_untrained: bool = False,
) -> MultiViewVideoPipeline:
    """The pipeline of a model folder on `device` (dtype default: bf16 on CUDA, fp32 on CPU).

    Checks the layout first (missing files → InputError listing them), then every component's tensors against
    its config (first missing / mismatched tensor → InputError naming it). Random test weights
    ("trained": false) → `UntrainedModelError` unless `allow_untrained`.
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from .pipeline import MultiViewVideoPipeline
    from .unet import MultiViewVideoUNet

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = check_layout(Path(folder))
    info = model_info(folder)
    if not info["trained"] and not allow_untrained:
        raise UntrainedModelError(folder)
    dtype = dtype or default_dtype(device)

    unet_config = _read_config(folder / "unet" / "config.json")
    if unet_config.get("ip_adapter_image_dim"):
        missing = [f"image_encoder/{name}" for name in IMAGE_ENCODER if not (folder / "image_encoder" / name).is_file()]
        if missing:
            raise InputError(
                f"Model folder {folder}: the UNet has an IP-Adapter, so the folder needs its image encoder; missing: "
                f"{', '.join(missing)}. {CONVERT_HINT}"
            )
    unet = _load_model(
        lambda: MultiViewVideoUNet.from_config(unet_config), folder / "unet" / "diffusion_pytorch_model.safetensors"
    )
    vae_config = _read_config(folder / "vae" / "config.json")
    vae = _load_model(
        lambda: AutoencoderKL.from_config(vae_config), folder / "vae" / "diffusion_pytorch_model.safetensors"
    )
    try:
        text_config = CLIPTextConfig.from_json_file(str(folder / "text_encoder" / "config.json"))
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: the text encoder config or the tokenizer cannot be read: {exc}") from exc
    text_encoder = _load_model(lambda: CLIPTextModel(text_config), folder / "text_encoder" / "model.safetensors")
    scheduler = DDIMScheduler.from_config(_read_config(folder / "scheduler" / "scheduler_config.json"))
    if unet.config.num_views != info["views"]:
        raise InputError(
            f"{folder}: unet/config.json has num_views={unet.config.num_views} but {MODEL_FILE} says "
            f"views={info['views']}."
        )
    if unet.config.cross_attention_dim != text_config.hidden_size:
        raise InputError(
            f"{folder}: the UNet expects text embeddings of size {unet.config.cross_attention_dim} but the text "
            f"encoder makes {text_config.hidden_size}."
        )
    image_encoder = None
    if unet_config.get("ip_adapter_image_dim"):
        try:
            vision_config = CLIPVisionConfig.from_json_file(str(folder / "image_encoder" / "config.json"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder}/image_encoder/config.json cannot be read: {exc}") from exc
        image_encoder = _load_model(
            lambda: CLIPVisionModelWithProjection(vision_config), folder / "image_encoder" / "model.safetensors"
        )
        if vision_config.projection_dim != unet.config.ip_adapter_image_dim:
            raise InputError(
                f"{folder}: the image encoder makes embeddings of size {vision_config.projection_dim} but the UNet's "
                f"IP-Adapter expects {unet.config.ip_adapter_image_dim}."
            )
    for model in (unet, vae, text_encoder, image_encoder):
        if model is None:
            continue
        # nn.Module.to, not ModelMixin.to: the latter warns about fp32-kept modules even when there are none
        torch.nn.Module.to(model, device=torch.device(device), dtype=dtype)
    pipe = MultiViewVideoPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        image_encoder=image_encoder,
    )
    pipe.model_info = {**info, "source": info.get("source") or str(folder), "folder": str(folder)}
    return pipe


# ---- tiny random models for tests --------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level BPE alphabet: every byte mapped to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def tiny_tokenizer():
    """A CLIP tokenizer over single bytes (514 tokens, no merges): real CLIP tokenization, tiny vocabulary."""
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate([*alphabet, *(c + "</w>" for c in alphabet)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_vae_config() -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": (16, 32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
    }


def write_tiny(
    folder: str | Path,
    *,
    views: int = 4,
    frames: int = 4,
    resolution: int = 32,
    seed: int = 0,
    ip_adapter: bool = False,
) -> Path:
    """Write a tiny random-weight model folder ("trained": false) for tests; returns the folder.

    ~2M parameters: two-level UNet (32/64 channels), a VAE that downsamples 4×, a 2-layer CLIP text encoder of
    width 32 over a byte-level vocabulary; with `ip_adapter`, an IP-Adapter and a 2-layer CLIP image encoder
    (32 px, 16-d embeddings). `resolution` must be a multiple of 8 (VAE 4× then one UNet level).
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from .pipeline import MultiViewVideoPipeline
    from .unet import build_unet, tiny_unet_config

    if int(resolution) < 8 or int(resolution) % 8:
        raise InputError(f"resolution must be a positive multiple of 8 for the tiny model, got {resolution}.")
    if int(views) < 1 or int(frames) < 1:
        raise InputError(f"views and frames must be at least 1, got views={views}, frames={frames}.")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder} exists and is not empty; choose a new folder for the tiny model.")
    torch.manual_seed(int(seed))
    tokenizer = tiny_tokenizer()
    unet_config = {**tiny_unet_config(views=views, frames=frames), "sample_size": int(resolution) // 4}
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=unet_config["cross_attention_dim"],
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    image_encoder = None
    if ip_adapter:
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        )
        image_encoder = CLIPVisionModelWithProjection(vision)
        unet_config["ip_adapter_image_dim"] = vision.projection_dim
    pipe = MultiViewVideoPipeline(
        vae=AutoencoderKL(**tiny_vae_config()),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=build_unet(unet_config),
        scheduler=DDIMScheduler(**ANIMATE3D_SCHEDULER),
        image_encoder=image_encoder,
    )
    pipe.save_pretrained(folder)
    write_model_info(
        folder,
        trained=False,
        kind="tiny-random",
        source=f"tessera4d mvdiff init-tiny (seed {seed})",
        views=views,
        max_frames=frames,
        resolution=resolution,
    )
    return folder
