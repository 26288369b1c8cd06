"""Plugin declarations: what a plugin takes and gives, as both sides see it.

The backend sends `PluginSpec.to_wire()` in the handshake; the add-on builds its panels
from `PluginSpec.from_wire(...)`; the backend checks every submit with `validate_params`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ParamError

PARAM_TYPES = ("int", "float", "bool", "str", "enum", "path")

#: Input kinds a plugin may declare (arrays or a path on the backend's disk).
INPUT_KINDS = ("mesh_sequence", "multiview_frames", "armature_motion", "images", "text", "path")

#: Output kinds a plugin may declare; result types in shared.results belong to one of these.
OUTPUT_KINDS = ("mesh_frames", "gaussian_frames", "rig", "motion", "images", "tokens")


@dataclass
class ParamSpec:
    """One parameter. `min`/`max` apply to int and float; `choices` to enum."""

    name: str
    type: str
    default: Any = None
    help: str = ""
    label: str = ""
    min: float | None = None
    max: float | None = None
    choices: list[str] = field(default_factory=list)
    required: bool = False  # no usable default; the user must give a value

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"Parameter '{self.name}' has type {self.type!r}; use one of {PARAM_TYPES}.")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"Enum parameter '{self.name}' needs choices.")
        if not self.label:
            self.label = self.name.replace("_", " ").capitalize()

    def coerce(self, value: Any) -> Any:
        """Check one value against this spec and return it in its canonical type."""
        name, t = self.name, self.type
        if t == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ParamError(f"Parameter '{name}' must be true or false, got {value!r}.")
        if t in ("int", "float"):
            try:
                if isinstance(value, bool):
                    raise ValueError
                number = int(value) if t == "int" else float(value)
                if t == "int" and isinstance(value, float) and not value.is_integer():
                    raise ValueError
            except (TypeError, ValueError):
                raise ParamError(
                    f"Parameter '{name}' must be {'an integer' if t == 'int' else 'a number'}, got {value!r}."
                ) from None
            if t == "float" and not math.isfinite(number):
                raise ParamError(f"Parameter '{name}' must be finite, got {value!r}.")
            if self.min is not None and number < self.min:
                raise ParamError(f"Parameter '{name}' is {number}; the smallest allowed is {self.min}.")
            if self.max is not None and number > self.max:
                raise ParamError(f"Parameter '{name}' is {number}; the largest allowed is {self.max}.")
            return number
        if not isinstance(value, str):
            raise ParamError(f"Parameter '{name}' must be text, got {type(value).__name__}.")
        if t == "enum" and value not in self.choices:
            raise ParamError(f"Parameter '{name}' is {value!r}; choose one of {', '.join(self.choices)}.")
        if t == "path" and not value and self.required:
            raise ParamError(f"Parameter '{name}' needs a file or folder path.")
        return value


@dataclass
class InputSpec:
    """An input array set or path. `arrays` names the arrays a submit must carry for it."""

    name: str
    kind: str
    help: str = ""
    required: bool = True
    arrays: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"Input '{self.name}' has kind {self.kind!r}; use one of {INPUT_KINDS}.")


@dataclass
class PluginSpec:
    """What a plugin declares: the add-on and the CLI build their UI from this."""

    name: str  # dotted, e.g. "sequence.load_mesh"
    summary: str
    params: list[ParamSpec] = field(default_factory=list)
    inputs: list[InputSpec] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    version: str = "1"

    def __post_init__(self) -> None:
        bad = [o for o in self.outputs if o not in OUTPUT_KINDS]
        if bad:
            raise ValueError(f"Plugin '{self.name}' declares unknown outputs {bad}; use {OUTPUT_KINDS}.")

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PluginSpec:
        try:
            return cls(
                name=data["name"],
                summary=data.get("summary", ""),
                params=[ParamSpec(**p) for p in data.get("params", [])],
                inputs=[InputSpec(**i) for i in data.get("inputs", [])],
                outputs=list(data.get("outputs", [])),
                version=str(data.get("version", "1")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParamError(f"Plugin declaration {data.get('name', '?')!r} cannot be read: {exc}") from exc


def validate_params(spec: PluginSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Return a full parameter dict (defaults filled in, values coerced) or raise ParamError."""
    known = {p.name for p in spec.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParamError(
            f"Plugin '{spec.name}' has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(known)) or 'none'}."
        )
    out: dict[str, Any] = {}
    for p in spec.params:
        if p.name in params:
            out[p.name] = p.coerce(params[p.name])
        elif p.required or p.default is None:
            if p.required:
                raise ParamError(f"Plugin '{spec.name}' needs parameter '{p.name}': {p.help}")
            out[p.name] = None
        else:
            out[p.name] = p.default
    return out
