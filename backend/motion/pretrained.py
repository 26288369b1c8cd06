"""Model folders and training checkpoints in safetensors + JSON; nothing is pickled.

A model folder (diffusers habit, DESIGN §8) holds

    config.json        {"format", "format_version", "trained", "configs": {name: {"class", "fields"}},
                        "modules": [names], "arrays": [names], "meta": {...}}
    model.safetensors  "modules.<name>.<state-dict key>" for every module, "arrays.<name>" for extra arrays

`load_pretrained` rebuilds each module from its config with a caller-given builder and loads the weights
strictly; every way a folder can be unusable is an `InputError` that names the folder and what is wrong.

Training checkpoints (`save_checkpoint`/`load_checkpoint`) are one safetensors file: module and optimizer
tensors plus RNG states as tensors, and everything else (step, optimizer hyper-parameters and non-tensor
state, caller extras) as JSON in the file's metadata. Chosen over `torch.save` because even
`torch.load(weights_only=True)` runs a (restricted) unpickler on a file a user may have been sent, and one
format for weights and checkpoints keeps the tooling (inspection, conversion) the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from shared.errors import InputError

FORMAT = "tessera4d.pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FORMAT = "tessera4d.checkpoint"

#: name → (config dataclass, function building the module from that config), e.g.
#: {"tokenizer": (TokenizerConfig, MotionTokenizer)}
Builders = Mapping[str, tuple[type, Callable[[Any], nn.Module]]]


@dataclass
class Pretrained:
    """What `load_pretrained` returns; modules are in eval mode."""

    folder: Path
    modules: dict[str, nn.Module]
    configs: dict[str, Any]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    trained: bool


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns besides the state it loaded into modules and optimizers."""

    step: int
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# -- configs ------------------------------------------------------------------------------------------------


def _config_to_json(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"configs must be dataclass instances, got {type(config).__name__}")
    return {"class": type(config).__name__, "fields": dataclasses.asdict(config)}


def _tuples_where_typed(value: Any, hint: Any) -> Any:
    """JSON turns tuples into lists; turn them back where the dataclass field says tuple."""
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _config_from_json(folder: Path, name: str, cls: type, entry: Any) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("fields"), dict):
        raise InputError(f"Model folder '{folder}': {CONFIG_FILE} has no usable config for '{name}'")
    if entry.get("class") != cls.__name__:
        raise InputError(
            f"Model folder '{folder}': config '{name}' is a {entry.get('class')}, this code expects a {cls.__name__}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(entry["fields"]) - known)
    if unknown:
        raise InputError(
            f"Model folder '{folder}': config '{name}' has fields this version does not know: {', '.join(unknown)}"
        )
    values = {k: _tuples_where_typed(v, hints.get(k)) for k, v in entry["fields"].items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Model folder '{folder}': config '{name}' is invalid: {exc}") from exc


# -- state dict checks ----------------------------------------------------------------------------------------


def _check_state(where: str, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> None:
    """Raise InputError naming the first missing, unexpected or mismatched tensor (keys without prefix)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    more = lambda names: f" (and {len(names) - 1} more)" if len(names) > 1 else ""  # noqa: E731
    if missing:
        raise InputError(f"{where}: tensor '{missing[0]}' is missing{more(missing)}")
    if unexpected:
        raise InputError(f"{where}: unexpected tensor '{unexpected[0]}'{more(unexpected)}")
    for key in expected:
        if tuple(expected[key].shape) != tuple(found[key].shape):
            raise InputError(
                f"{where}: tensor '{key}' has shape {tuple(found[key].shape)} in the file, "
                f"the model built from its config expects {tuple(expected[key].shape)}"
            )


def _load_into(where: str, module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    _check_state(where, module.state_dict(), state)
    module.load_state_dict(dict(state), strict=True)


def _tensors_of(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage
    return {f"{prefix}{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _check_name(name: str) -> None:
    if not name or "." in name:
        raise ValueError(f"module/array names must be non-empty and without dots, got {name!r}")


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the mode a plainly created file gets


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # as any file the user writes (safetensors creates its file as 0600)
    os.replace(tmp, path)


# -- model folders ----------------------------------------------------------------------------------------------


def save_pretrained(
    folder: str | Path,
    modules: Mapping[str, nn.Module],
    configs: Mapping[str, Any],
    extra_arrays: Mapping[str, np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    trained: bool,
) -> Path:
    """Write `folder`/config.json and `folder`/model.safetensors; returns the folder.

    modules: name → module; every module needs a config of the same name (configs may hold more).
    extra_arrays: e.g. the feature mean/std the model was trained with. meta: JSON-able facts (fps, joint
    names...). trained: whether these weights were trained (False for freshly built ones) — loaders refuse
    untrained folders unless asked not to, so random weights are never passed off as a result.
    """
    folder = Path(folder)
    for name in [*modules, *(extra_arrays or {})]:
        _check_name(name)
    missing = sorted(set(modules) - set(configs))
    if missing:
        raise ValueError(f"no config for module(s) {', '.join(missing)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update(_tensors_of(module, f"modules.{name}."))
    for name, array in (extra_arrays or {}).items():
        tensors[f"arrays.{name}"] = torch.from_numpy(np.ascontiguousarray(array)).clone()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trained": bool(trained),
        "configs": {name: _config_to_json(c) for name, c in configs.items()},
        "modules": list(modules),
        "arrays": list(extra_arrays or {}),
        "meta": dict(meta or {}),
    }
    text = json.dumps(config, indent=2)  # before writing anything: fails on non-JSON meta
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    _write_atomically(folder / CONFIG_FILE, lambda p: p.write_text(text + "\n"))
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise InputError(
            f"Model folder '{folder}' does not exist; put a folder saved by save_pretrained there "
            f"({CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"Model folder '{folder}' has no {CONFIG_FILE}")
    if not (folder / WEIGHTS_FILE).is_file():
        raise InputError(f"Model folder '{folder}' has no weights file {WEIGHTS_FILE}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"Model folder '{folder}': {CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"Model folder '{folder}': {CONFIG_FILE} is not a {FORMAT} config")
    if config.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"Model folder '{folder}': {CONFIG_FILE} has format version {config.get('format_version')!r}, "
            f"this version of Tessera 4D reads version {FORMAT_VERSION}"
        )
    return config


def load_pretrained(
    folder: str | Path,
    builders: Builders,
    *,
    required_arrays: tuple[str, ...] = (),
    require_trained: bool = True,
    optional: tuple[str, ...] = (),
) -> Pretrained:
    """Rebuild the modules named in `builders` from `folder`'s configs and load their weights strictly.

    Modules in the folder that `builders` does not name are ignored; each named one must be there with all
    its tensors at the right shapes, except the `optional` ones, which are skipped when the folder lists none
    of that name (e.g. a part added to a model after older folders were saved). required_arrays: extra arrays
    that must be present. Raises InputError
    naming the folder and what is missing or wrong.
    """
    folder = Path(folder)
    config = _read_config(folder)
    if require_trained and not config.get("trained", False):
        raise InputError(
            f"Model folder '{folder}' holds untrained weights ({CONFIG_FILE} says \"trained\": false); "
            "train the model on your clips first"
        )
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"Model folder '{folder}': {WEIGHTS_FILE} cannot be read ({exc})") from exc

    modules: dict[str, nn.Module] = {}
    configs: dict[str, Any] = {}
    for name, (cls, build) in builders.items():
        if name in optional and name not in config.get("modules", []):
            continue
        if name not in config.get("modules", []) or name not in config.get("configs", {}):
            held = ", ".join(config.get("modules", [])) or "none"
            raise InputError(f"Model folder '{folder}' has no module '{name}' (it holds: {held})")
        configs[name] = _config_from_json(folder, name, cls, config["configs"][name])
        module = build(configs[name])
        prefix = f"modules.{name}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        _load_into(f"Model folder '{folder}', module '{name}'", module, state)
        modules[name] = module.eval()

    arrays = {k[len("arrays.") :]: v.numpy() for k, v in tensors.items() if k.startswith("arrays.")}
    for name in required_arrays:
        if name not in arrays:
            raise InputError(f"Model folder '{folder}': array '{name}' is missing from {WEIGHTS_FILE}")
    return Pretrained(folder, modules, configs, arrays, dict(config.get("meta", {})), bool(config["trained"]))


# -- training checkpoints ------------------------------------------------------------------------------------------


def _split_optimizer_state(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """optimizer.state_dict() → (tensors keyed '<prefix>state.<param id>.<key>', JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        plain[str(param_id)] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}state.{param_id}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[str(param_id)][key] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer_state(prefix: str, tensors: Mapping[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(values) for pid, values in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}state."):
            param_id, name = key[len(prefix) + len("state.") :].split(".", 1)
            state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    path: str | Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    step: int,
    rng_state: Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a resumable training checkpoint (one safetensors file) to `path`.

    rng_state: e.g. {"torch": torch.get_rng_state(), "masks": generator.get_state()}. extra: JSON-able.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    optimizer_plain: dict[str, Any] = {}
    for name, module in modules.items():
        _check_name(name)
        tensors.update(_tensors_of(module, f"modules.{name}."))
    for name, optimizer in optimizers.items():
        _check_name(name)
        optimizer_tensors, optimizer_plain[name] = _split_optimizer_state(f"optim.{name}.", optimizer.state_dict())
        tensors.update(optimizer_tensors)
    for name, value in (rng_state or {}).items():
        _check_name(name)
        tensors[f"rng.{name}"] = value.detach().cpu().contiguous().clone()
    header = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "modules": list(modules),
        "optimizers": optimizer_plain,
        "extra": dict(extra or {}),
    }
    metadata = {"tessera4d": json.dumps(header)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda p: save_file(tensors, str(p), metadata=metadata))
    return path


def load_checkpoint(
    path: str | Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint` into the given (already built) modules and optimizers.

    The caller restores RNG states from the returned `Checkpoint.rng_state` (torch.set_rng_state etc.).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("tessera4d", "null"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise InputError(f"Checkpoint '{path}' cannot be read ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"Checkpoint '{path}' is not a {CHECKPOINT_FORMAT} file")
    if header.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"Checkpoint '{path}' has format version {header.get('format_version')!r}, "
            f"this version of Tessera 4D reads version {FORMAT_VERSION}"
        )
    for name, module in modules.items():
        if name not in header["modules"]:
            raise InputError(f"Checkpoint '{path}' has no module '{name}' (it holds: {', '.join(header['modules'])})")
        prefix = f"modules.{name}."
        _load_into(
            f"Checkpoint '{path}', module '{name}'",
            module,
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
        )
    for name, optimizer in (optimizers or {}).items():
        if name not in header["optimizers"]:
            raise InputError(f"Checkpoint '{path}' has no optimizer '{name}'")
        state = _join_optimizer_state(f"optim.{name}.", tensors, header["optimizers"][name])
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError) as exc:
            raise InputError(f"Checkpoint '{path}': optimizer '{name}' does not match ({exc})") from exc
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return Checkpoint(step=int(header["step"]), rng_state=rng, extra=dict(header.get("extra", {})))
