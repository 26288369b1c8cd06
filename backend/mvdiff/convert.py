"""Convert the published Animate3D parts into our model folder (`tessera4d mvdiff convert-animate3d SRC DST`).

Animate3D (github.com/yanqinJiang/Animate3D, Apache-2.0) assembles its MV-VDM at run time from four
downloads (its `inference.py` / `configs/inference/inference.yaml`) and we expect them side by side in SRC —
`SOURCE_PARTS` below is the one definition of that layout:

    SRC/mvdream/                       yanqinJiang/mvdream-sd1.5-diffusers: MVDream SD1.5 in diffusers layout;
        unet/ vae/ text_encoder/ tokenizer/   its UNet2DConditionModel has `camera_embedding.linear_{1,2}`
    SRC/motion_adapter/                guoyww/animatediff-motion-adapter-v1-5-2 (a diffusers MotionAdapter)
      or SRC/motion_adapter.ckpt       the same module in AnimateDiff's original format (mm_sd_v15_v2.ckpt)
    SRC/animate3d_motion_modules.ckpt  yanqinJiang/Animate3D: `torch.save` of MVUNetMotionModel's state dict,
                                       under "state_dict" or bare, full or only the trained keys
    SRC/ip_adapter/ip-adapter_sd15.bin h94/IP-Adapter: the image prompt Animate3D feeds its 4 condition renders
    SRC/ip_adapter/image_encoder/      through (optional: without it the model has no image prompt)

Key names (read from Animate3D's `animatediff/models/unet_motion_mv_model.py`, `attention_processor.py`,
`train.py`, `inference.py`, diffusers 0.28): `MVUNetMotionModel.from_unet2d` copies the MVDream UNet's
`conv_in`, `time_embedding`, `camera_embedding`, every block's `resnets` / `attentions` / `downsamplers` /
`upsamplers`, `conv_norm_out`, `conv_out` under the same names, and `load_motion_modules` copies the adapter's
`{down,up}_blocks.i.motion_modules.j.*` and `mid_block.motion_modules.0.*`. diffusers 0.42's `UNetMotionModel`
(our base class) uses exactly these names for the same modules (`AnimateDiffTransformer3D` kept
`TransformerTemporalModel`'s `norm`, `proj_in`, `transformer_blocks`, `proj_out`), so they carry over 1:1.
Animate3D then installs attention processors that are `nn.Module`s, so their weights are state-dict keys:

    …attentions.j.transformer_blocks.k.attn1.processor.to_q_i2v.weight        MVDreamI2VXFormersAttnProcessor
    …attentions.j.transformer_blocks.k.attn1.processor.to_out_i2v.{weight,bias}   (image-to-video branch)
    …motion_modules.j.transformer_blocks.k.attn{1,2}.processor.to_{q,k,v}_sp.weight   SpatioTemporalI2V…
    …motion_modules.j.transformer_blocks.k.attn{1,2}.processor.to_out_sp.{weight,bias}    (view branch)
    …motion_modules.j.transformer_blocks.k.attn{1,2}.processor.alpha_blender.mix_factor
    …motion_modules.j.transformer_blocks.k.attn{1,2}.processor.time_pos_embed.pe   (frame encoding, moved
                                       out of the block: Animate3D sets `transformer_blocks.k.pos_embed = None`)
    …attn2.processor.to_{k,v}_ip.0.weight, encoder_hid_proj.image_projection_layers.0.*   IP-Adapter SD1.5

`MultiViewVideoUNet` (unet.py) installs processors with the same attribute names at the same places, so those
keys carry over 1:1 too; so do the IP-Adapter's, which both use diffusers' loader names. What the conversion
changes (`ANIMATE3D_RULES`, `ip_adapter_to_ours`): the `module.` prefix of DistributedDataParallel saves is
removed; IP-Adapter's own file ("image_proj" → `encoder_hid_proj.image_projection_layers.0`, "{2k+1}.to_k_ip"
→ the k-th spatial cross-attention, as diffusers' `_convert_ip_adapter_attn_to_diffusers` numbers them) is
renamed; without SRC/ip_adapter/ any IP-Adapter keys are dropped and reported (the model is then Animate3D
without its image prompt); the adapter's `pos_embed.pe` becomes both motion processors' `time_pos_embed.pe`;
an original-format AnimateDiff .ckpt is renamed as diffusers'
`scripts/convert_animatediff_motion_module_to_diffusers.py` does. Sources override in the order MVDream <
motion adapter < IP-Adapter < Animate3D checkpoint (Animate3D fine-tuned the motion modules). Every tensor of our model
must come from a source (only the sinusoidal `time_pos_embed.pe` tables may be recomputed); the first one that
does not, or has another shape, is an InputError naming the key and the file it should have been in.

Pickles are read with `torch.load(weights_only=True)`; a file that needs the full unpickler is refused unless
`allow_pickle=True` (it can run code: only for files from a source you trust).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.errors import InputError

# --- the source layout -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcePart:
    """One published part: any one of `alternatives` (each a tuple of files that must all exist) will do."""

    name: str
    alternatives: tuple[tuple[str, ...], ...]
    origin: str  # where users get it
    optional: bool = False


_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SOURCE_PARTS = (
    SourcePart(
        "MVDream UNet",
        tuple(("mvdream/unet/config.json", f"mvdream/unet/{w}") for w in _WEIGHTS),
        "yanqinJiang/mvdream-sd1.5-diffusers (unet/)",
    ),
    SourcePart(
        "VAE",
        tuple(("mvdream/vae/config.json", f"mvdream/vae/{w}") for w in _WEIGHTS),
        "yanqinJiang/mvdream-sd1.5-diffusers (vae/)",
    ),
    SourcePart(
        "text encoder",
        tuple(
            ("mvdream/text_encoder/config.json", f"mvdream/text_encoder/{w}")
            for w in ("model.safetensors", "pytorch_model.bin")
        ),
        "yanqinJiang/mvdream-sd1.5-diffusers (text_encoder/)",
    ),
    SourcePart(
        "tokenizer",
        (("mvdream/tokenizer/vocab.json", "mvdream/tokenizer/merges.txt"),),
        "yanqinJiang/mvdream-sd1.5-diffusers (tokenizer/)",
    ),
    SourcePart(
        "motion adapter",
        (
            ("motion_adapter/config.json", "motion_adapter/diffusion_pytorch_model.safetensors"),
            ("motion_adapter/config.json", "motion_adapter/diffusion_pytorch_model.bin"),
            ("motion_adapter.ckpt",),
        ),
        "guoyww/animatediff-motion-adapter-v1-5-2 (folder), or AnimateDiff's mm_sd_v15_v2.ckpt as motion_adapter.ckpt",
    ),
    SourcePart(
        "Animate3D motion modules",
        (("animate3d_motion_modules.ckpt",),),
        "yanqinJiang/Animate3D (animate3d_motion_modules.ckpt)",
    ),
    SourcePart(
        "IP-Adapter",
        tuple(
            (f"ip_adapter/{adapter}", "ip_adapter/image_encoder/config.json", f"ip_adapter/image_encoder/{encoder}")
            for adapter in ("ip-adapter_sd15.bin", "ip-adapter_sd15.safetensors")
            for encoder in ("model.safetensors", "pytorch_model.bin")
        ),
        "h94/IP-Adapter (models/ip-adapter_sd15.bin and models/image_encoder/)",
        optional=True,
    ),
)

ANIMATE3D_VIEWS, ANIMATE3D_FRAMES, ANIMATE3D_RESOLUTION = 4, 16, 256


def resolve_source(src: Path) -> dict[str, list[Path]]:
    """{part name: its files} for the first alternative of each part found in `src`; InputError listing every
    missing part, the files it needs and where to get it."""
    if not src.is_dir():
        raise InputError(f"Source folder {src} does not exist. It must hold:\n{describe_layout()}")
    found: dict[str, list[Path]] = {}
    missing: list[str] = []
    for part in SOURCE_PARTS:
        for files in part.alternatives:
            if all((src / f).is_file() for f in files):
                found[part.name] = [src / f for f in files]
                break
        else:
            if part.optional:
                continue
            options = " or ".join(" + ".join(files) for files in part.alternatives)
            missing.append(f"  {part.name}: {options}  (from {part.origin})")
    if missing:
        optional = [p for p in SOURCE_PARTS if p.optional]
        missing += [f"  optional, {p.name}: {' + '.join(p.alternatives[0])}  (from {p.origin})" for p in optional]
        raise InputError(
            f"{src} lacks {len(missing) - len(optional)} of the Animate3D parts; put these files there:\n"
            + "\n".join(missing)
        )
    return found


def describe_layout() -> str:
    return "\n".join(
        f"  {p.name}{' (optional)' if p.optional else ''}: {' or '.join(' + '.join(f) for f in p.alternatives)}"
        f"  (from {p.origin})"
        for p in SOURCE_PARTS
    )


# --- reading tensors -------------------------------------------------------------------------------------------


def read_tensors(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or torch pickle (.bin/.ckpt/.pt) file; a checkpoint's "state_dict" entry
    when it has one (Animate3D's and AnimateDiff's training saves), the DDP `module.` prefix removed."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data: object = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InputError(f"Cannot read {path}: {exc}") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — the unpickler raises many types for a file it refuses
            if not allow_pickle:
                raise InputError(
                    f"{path} holds more than tensors ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                    "If it comes from a source you trust, convert with --allow-pickle "
                    "(the full unpickler can run code)."
                ) from None
            try:
                data = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:  # noqa: BLE001
                raise InputError(f"Cannot read {path}: {exc2}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold a state dict (found {type(data).__name__}).")
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path} holds no tensors.")
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel (Animate3D's train.py)
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


# --- the key map -----------------------------------------------------------------------------------------------

# Rules applied to source keys, in order; the first that matches decides. A rule maps a key to its names in our
# model. Anything no rule matches keeps its name. IP-Adapter keys (diffusers' names in a full Animate3D save)
# also keep theirs when the converted model has an IP-Adapter, and are dropped, with this reason, when it has not.
IP_ADAPTER_KEY = re.compile(r"^(encoder_hid_proj\..*|.*\.attn2\.processor\.to_[kv]_ip\.\d+\.weight)$")
NO_IP_ADAPTER = "IP-Adapter weights, but SRC has no ip_adapter/ image encoder: the model is converted without one"
ANIMATE3D_RULES: tuple[tuple[str, Callable[[re.Match], list[str]], str], ...] = (
    # A motion adapter's frame encoding lives in the transformer block; ours (like Animate3D's) in both motion
    # processors of the block.
    (
        r"^(.*motion_modules\.\d+\.transformer_blocks\.\d+)\.pos_embed\.pe$",
        lambda m: [f"{m[1]}.attn1.processor.time_pos_embed.pe", f"{m[1]}.attn2.processor.time_pos_embed.pe"],
        "frame encoding moved into the motion processors",
    ),
)
# Sinusoidal tables: recomputed by the model when no source has them (an original-format AnimateDiff .ckpt
# has no usable one); everything else must come from a source.
DERIVED = re.compile(r".*\.time_pos_embed\.pe$")


def sinusoid_table(shape: tuple[int, ...]) -> torch.Tensor:
    """diffusers' SinusoidalPositionalEmbedding table of `shape` (1, frames, channels), as the model builds it."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    return SinusoidalPositionalEmbedding(embed_dim=shape[2], max_seq_length=shape[1]).pe.reshape(shape)


def map_key(key: str, ip_adapter: bool = False) -> tuple[list[str], str | None]:
    """(our names for an Animate3D / adapter key, the reason when it is dropped). `ip_adapter`: whether the
    converted model has an IP-Adapter."""
    if IP_ADAPTER_KEY.match(key):
        return ([key], None) if ip_adapter else ([], NO_IP_ADAPTER)
    for pattern, target, reason in ANIMATE3D_RULES:
        m = re.match(pattern, key)
        if m:
            names = target(m)
            return names, (None if names else reason)
    return [key], None


def animatediff_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AnimateDiff's original motion-module names → diffusers' MotionAdapter names (diffusers'
    scripts/convert_animatediff_motion_module_to_diffusers.py; its `pos_encoder` tables are dropped)."""
    out = {}
    for k, v in tensors.items():
        if "pos_encoder" in k:
            continue
        k = (
            k.replace(".norms.0", ".norm1")
            .replace(".norms.1", ".norm2")
            .replace(".ff_norm", ".norm3")
            .replace(".attention_blocks.0", ".attn1")
            .replace(".attention_blocks.1", ".attn2")
            .replace(".temporal_transformer", "")
        )
        out[k] = v
    return out


def read_ip_adapter(path: Path, *, allow_pickle: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """IP-Adapter's own file (h94/IP-Adapter ip-adapter_sd15.bin or .safetensors): {"image_proj": {...},
    "ip_adapter": {"1.to_k_ip.weight", ...}}; the safetensors variant stores the two groups as key prefixes."""
    if path.suffix == ".safetensors":
        flat = read_tensors(path)
        groups: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            group, _, rest = key.partition(".")
            if group in groups:
                groups[group][rest] = value
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — see read_tensors
            if not allow_pickle:
                raise InputError(
                    f"{path} holds more than tensors; if you trust it, convert with --allow-pickle."
                ) from None
            try:
                data = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:  # noqa: BLE001
                raise InputError(f"Cannot read {path}: {exc2}") from exc
        groups = data if isinstance(data, dict) else {}
    if not isinstance(groups.get("image_proj"), dict) or not isinstance(groups.get("ip_adapter"), dict):
        raise InputError(f"{path} is not an IP-Adapter file (no 'image_proj' and 'ip_adapter' tensors).")
    if "proj.weight" not in groups["image_proj"]:
        raise InputError(
            f"{path}: only the plain IP-Adapter (ip-adapter_sd15, as Animate3D uses) is supported; this file has "
            f"image_proj tensors {sorted(groups['image_proj'])[:4]}."
        )
    return groups


def ip_adapter_to_ours(groups: dict[str, dict[str, torch.Tensor]], unet) -> dict[str, torch.Tensor]:
    """IP-Adapter file keys → our names, numbered as diffusers' `_convert_ip_adapter_attn_to_diffusers` does
    (and the IP-Adapter release itself): the k-th cross-attention of the UNet's processor order (spatial blocks
    only; motion modules skipped) holds "{2k+1}.to_k_ip.weight" / "{2k+1}.to_v_ip.weight"."""
    out = {
        f"encoder_hid_proj.image_projection_layers.0.{k.replace('proj', 'image_embeds')}": v
        for k, v in groups["image_proj"].items()
    }
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor") and "motion_modules" not in n]
    for k, name in enumerate(cross):
        for which in ("to_k_ip", "to_v_ip"):
            source = f"{2 * k + 1}.{which}.weight"
            if source not in groups["ip_adapter"]:
                raise InputError(f"The IP-Adapter file has no '{source}' (for {name}); it is not IP-Adapter SD1.5.")
            out[f"{name}.{which}.0.weight"] = groups["ip_adapter"][source]
    return out


def animatediff_config(original: dict[str, torch.Tensor]) -> dict:
    """The MotionAdapter config of an original-format AnimateDiff checkpoint, which has none: the mid block and
    the frame-table length from the tensors, 8 heads (every AnimateDiff SD1.5 release; head counts leave no trace
    in tensor shapes)."""
    lengths = [v.shape[1] for k, v in original.items() if k.endswith("pos_encoder.pe") and v.ndim == 3]
    return {
        "use_motion_mid_block": any(k.startswith("mid_block.") for k in original),
        "motion_max_seq_length": int(max(lengths)) if lengths else 32,
        "motion_num_attention_heads": 8,
    }


def motion_unet_config(
    unet2d: dict, adapter: dict | None, *, views: int = ANIMATE3D_VIEWS, frames: int = ANIMATE3D_FRAMES
) -> dict:
    """Our MultiViewVideoUNet config from the MVDream UNet's config and the motion adapter's (the same choices
    as `UNetMotionModel.from_unet2d` / Animate3D's `MVUNetMotionModel.from_unet2d`)."""
    adapter = adapter or {}
    config = {
        "sample_size": unet2d.get("sample_size"),
        "in_channels": unet2d.get("in_channels", 4),
        "out_channels": unet2d.get("out_channels", 4),
        "down_block_types": tuple(
            "CrossAttnDownBlockMotion" if "CrossAttn" in t else "DownBlockMotion" for t in unet2d["down_block_types"]
        ),
        "up_block_types": tuple(
            "CrossAttnUpBlockMotion" if "CrossAttn" in t else "UpBlockMotion" for t in unet2d["up_block_types"]
        ),
        "block_out_channels": tuple(unet2d["block_out_channels"]),
        "layers_per_block": unet2d.get("layers_per_block", 2),
        "norm_num_groups": unet2d.get("norm_num_groups", 32),
        "norm_eps": unet2d.get("norm_eps", 1e-5),
        "act_fn": unet2d.get("act_fn", "silu"),
        "cross_attention_dim": unet2d["cross_attention_dim"],
        "use_linear_projection": unet2d.get("use_linear_projection", False),
        # SD1.5 configs name the head count attention_head_dim (diffusers issue 2011)
        "num_attention_heads": unet2d.get("num_attention_heads") or unet2d.get("attention_head_dim", 8),
        "motion_num_attention_heads": adapter.get("motion_num_attention_heads", 8),
        "motion_max_seq_length": max(int(adapter.get("motion_max_seq_length", 32)), frames),
        "use_motion_mid_block": adapter.get("use_motion_mid_block", True),
        "num_views": views,
        "camera_dim": unet2d.get("camera_embedding_dim") or 16,
        "i2v_attention": True,
        "motion_view_attention": True,
    }
    lpb = adapter.get("motion_layers_per_block")
    if lpb is not None and lpb != config["layers_per_block"]:
        raise InputError(
            f"The motion adapter has {lpb} layers per block, the MVDream UNet {config['layers_per_block']}: "
            "they are not parts of one model (Animate3D uses the SD1.5 adapter v1-5-2)."
        )
    return config


@dataclass
class ConversionReport:
    folder: Path
    tensors: int  # tensors in our UNet
    sources: dict[str, int]  # source name → tensors taken from it (after overrides)
    dropped: dict[str, list[str]]  # reason → source keys not used
    derived: list[str]  # recomputed sinusoidal tables
    ip_adapter: bool = False  # converted with IP-Adapter SD1.5 and its image encoder

    def summary(self) -> str:
        taken = ", ".join(f"{n} from {s}" for s, n in self.sources.items())
        line = f"{self.tensors} UNet tensors ({taken})"
        if not self.ip_adapter:
            line += (
                "; no IP-Adapter (SRC/ip_adapter/ absent): the model has no image prompt, which Animate3D uses — "
                "add h94/IP-Adapter's ip-adapter_sd15.bin and image_encoder/ there for the full model"
            )
        for reason, keys in self.dropped.items():
            line += f"; dropped {len(keys)} keys: {reason}"
        if self.derived:
            line += f"; {len(self.derived)} frame-encoding tables recomputed"
        return line


def convert_animate3d(
    src: Path,
    dst: Path,
    *,
    allow_pickle: bool = False,
    progress: Callable[[str, float, str], None] | None = None,
) -> Path:
    """Write our model folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json,
    tessera_model.json with kind "converted-animate3d", trained true) to `dst` from the parts in `src`.
    Returns `dst`. Raises InputError for missing parts, unreadable files, missing or mismatched tensors."""
    report = convert_with_report(src, dst, allow_pickle=allow_pickle, progress=progress)
    return report.folder


def convert_with_report(
    src: Path,
    dst: Path,
    *,
    allow_pickle: bool = False,
    progress: Callable[[str, float, str], None] | None = None,
) -> ConversionReport:
    """`convert_animate3d`, returning what came from where (also written to dst/conversion.json)."""
    from .unet import build_unet

    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress("convert", fraction, message)

    files = resolve_source(src)
    if dst.exists() and any(dst.iterdir()):
        raise InputError(f"{dst} is not empty; give a new folder for the converted model.")
    step(0.0, "reading the MVDream UNet")
    unet_config_path, unet_weights = files["MVDream UNet"]
    unet2d_config = _read_json(unet_config_path)
    mvdream = read_tensors(unet_weights, allow_pickle=allow_pickle)
    step(0.15, "reading the motion adapter")
    adapter_files = files["motion adapter"]
    if adapter_files[0].suffix == ".json":
        adapter_config = _read_json(adapter_files[0])
        adapter = read_tensors(adapter_files[1], allow_pickle=allow_pickle)
    else:
        original = read_tensors(adapter_files[0], allow_pickle=allow_pickle)
        adapter = animatediff_to_diffusers(original)
        adapter_config = animatediff_config(original)
    step(0.3, "reading the Animate3D checkpoint")
    (animate3d_path,) = files["Animate3D motion modules"]
    animate3d = read_tensors(animate3d_path, allow_pickle=allow_pickle)

    config = motion_unet_config(unet2d_config, adapter_config)
    ip_files = files.get("IP-Adapter")
    ip_groups = read_ip_adapter(ip_files[0], allow_pickle=allow_pickle) if ip_files else None
    if ip_groups is not None:
        proj = ip_groups["image_proj"]["proj.weight"]  # (tokens · cross_attention_dim, image_embed_dim)
        config["ip_adapter_image_dim"] = int(proj.shape[1])
        config["ip_adapter_tokens"] = int(proj.shape[0]) // int(config["cross_attention_dim"])
    step(0.4, "building the UNet")
    with torch.device("meta"):  # shapes only: the weights all come from the sources (no 6 GB random init)
        unet = build_unet(config)
    expected = unet.state_dict()
    merged: dict[str, tuple[torch.Tensor, str]] = {}  # our key → (tensor, file it came from)
    dropped: dict[str, list[str]] = {}
    sources = [(unet_weights, mvdream), (adapter_files[-1], adapter)]
    if ip_groups is not None:
        sources.append((ip_files[0], ip_adapter_to_ours(ip_groups, unet)))
    sources.append((animate3d_path, animate3d))  # last: Animate3D's fine-tuned tensors win
    for path, tensors in sources:
        for key, value in tensors.items():
            names, reason = map_key(key, ip_adapter=ip_groups is not None)
            if reason is not None:
                dropped.setdefault(reason, []).append(key)
            for name in names:
                if name in expected:
                    merged[name] = (value, path.name)
                elif path is unet_weights and not name.startswith(("down_blocks.", "up_blocks.", "mid_block.")):
                    dropped.setdefault("MVDream UNet parts our model does not use", []).append(key)
                else:
                    raise InputError(
                        f"{path.name}: tensor '{key}' has no place in the converted model (no {name!r}); "
                        "are these the Animate3D parts for SD1.5 (4 views)?"
                    )
    derived = []
    for key, tensor in expected.items():
        if key not in merged:
            if DERIVED.match(key):
                derived.append(key)
                continue
            raise InputError(
                f"Tensor '{key}' is in none of the sources ({_likely_source(key)} should hold it); "
                f"check that {src} holds the complete files."
            )
        value, origin = merged[key]
        if tuple(value.shape) != tuple(tensor.shape):
            raise InputError(
                f"Tensor '{key}' from {origin} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(tensor.shape)}: the parts do not belong to one model."
            )
    counts: dict[str, int] = {}
    for key in expected:
        if key in merged:
            counts[merged[key][1]] = counts.get(merged[key][1], 0) + 1
    state, used = {}, set()
    for key, (value, _) in merged.items():  # a tensor mapped to two keys gets its own copy for each
        state[key] = value.to(expected[key].dtype, copy=id(value) in used).contiguous()
        used.add(id(value))
    state.update({k: sinusoid_table(tuple(expected[k].shape)) for k in derived})
    unet.load_state_dict(state, strict=True, assign=True)
    report = ConversionReport(dst, len(expected), counts, dropped, derived, ip_adapter=ip_groups is not None)
    del state, merged, mvdream, adapter, animate3d, sources
    step(0.55, "loading the VAE, text encoder, tokenizer (and image encoder)")
    pipe = _assemble(src / "mvdream", unet, ip_files[-1].parent if ip_files else None)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        step(0.7, "writing the model folder")
        pipe.save_pretrained(str(dst), safe_serialization=True)
        _write_model_files(dst, src, report)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)  # never leave a half-written model folder behind
        raise
    step(1.0, report.summary())
    return report


def _likely_source(key: str) -> str:
    if IP_ADAPTER_KEY.match(key):
        return "ip_adapter/ip-adapter_sd15.bin"
    if "motion_modules." in key:
        return "the motion adapter or animate3d_motion_modules.ckpt"
    if "_i2v" in key:
        return "animate3d_motion_modules.ckpt"
    return "mvdream/unet"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object.")
    return data


def _assemble(mvdream: Path, unet, image_encoder: Path | None):
    """Our pipeline from the converted UNet, MVDream's VAE, text encoder and tokenizer (whatever format they
    came in), IP-Adapter's image encoder when given, and Animate3D's DDIM sampler settings; `save_pretrained`
    writes the model folder layout."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    from .checkpoint import ANIMATE3D_SCHEDULER
    from .pipeline import MultiViewVideoPipeline

    parts = {}
    for name, load in (
        ("vae", AutoencoderKL.from_pretrained),
        ("text_encoder", CLIPTextModel.from_pretrained),
        ("tokenizer", CLIPTokenizer.from_pretrained),
    ):
        try:
            parts[name] = load(str(mvdream / name), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"Cannot load {mvdream / name}: {str(exc).splitlines()[0]}") from None
    if image_encoder is not None:
        try:
            parts["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(
                str(image_encoder), local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"Cannot load {image_encoder}: {str(exc).splitlines()[0]}") from None
        if parts["image_encoder"].config.projection_dim != unet.config.ip_adapter_image_dim:
            raise InputError(
                f"{image_encoder} makes {parts['image_encoder'].config.projection_dim}-wide image embeddings, the "
                f"IP-Adapter file expects {unet.config.ip_adapter_image_dim}: they are not one release."
            )
    if parts["text_encoder"].config.hidden_size != unet.config.cross_attention_dim:
        raise InputError(
            f"{mvdream / 'text_encoder'} makes {parts['text_encoder'].config.hidden_size}-wide embeddings, the "
            f"UNet's cross-attention takes {unet.config.cross_attention_dim}: the parts are not one model."
        )
    return MultiViewVideoPipeline(unet=unet, scheduler=DDIMScheduler(**ANIMATE3D_SCHEDULER), **parts)


def _write_model_files(dst: Path, src: Path, report: ConversionReport) -> None:
    from .checkpoint import write_model_info

    write_model_info(
        dst,
        trained=True,
        kind="converted-animate3d",
        source=str(src),
        views=ANIMATE3D_VIEWS,
        max_frames=ANIMATE3D_FRAMES,
        resolution=ANIMATE3D_RESOLUTION,
    )
    conversion = {
        "ip_adapter": report.ip_adapter,
        "tensors": report.tensors,
        "sources": report.sources,
        "dropped": report.dropped,
        "derived": report.derived,
    }
    (dst / "conversion.json").write_text(json.dumps(conversion, indent=1), encoding="utf-8")
