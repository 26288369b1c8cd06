"""Plugin declarations and parameter validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ErrorCode, ParamError
from shared.schemas import InputSpec, ParamSpec, PluginSpec, validate_params

SPEC = PluginSpec(
    name="test.demo",
    summary="A plugin declaration used by these tests.",
    params=[
        ParamSpec("path", "path", required=True, help="Where the input lives."),
        ParamSpec("steps", "int", default=10, min=1, max=100, help="How many steps."),
        ParamSpec("strength", "float", default=0.5, min=0.0, max=1.0, help="How strong."),
        ParamSpec("loop", "bool", default=False, help="Loop the result."),
        ParamSpec("mode", "enum", default="fast", choices=["fast", "best"], help="Speed or quality."),
        ParamSpec("label", "str", default="", help="A name."),
        ParamSpec("seed", "int", help="Optional seed; none means random."),
    ],
    inputs=[InputSpec("mesh", "mesh_sequence", arrays=["rest", "faces", "frames"])],
    outputs=["mesh_frames"],
)


def test_defaults_are_filled_in() -> None:
    assert validate_params(SPEC, {"path": "/data/x.npz"}) == {
        "path": "/data/x.npz",
        "steps": 10,
        "strength": 0.5,
        "loop": False,
        "mode": "fast",
        "label": "",
        "seed": None,
    }


def test_coercion_to_canonical_types() -> None:
    out = validate_params(SPEC, {"path": "p", "steps": "7", "strength": "0.25", "loop": "yes", "seed": 3.0})
    assert out["steps"] == 7 and type(out["steps"]) is int
    assert out["strength"] == 0.25 and type(out["strength"]) is float
    assert out["loop"] is True and out["seed"] == 3 and type(out["seed"]) is int
    assert validate_params(SPEC, {"path": "p", "strength": 1})["strength"] == 1.0
    for text, value in [("off", False), ("TRUE", True), ("0", False), ("on", True)]:
        assert validate_params(SPEC, {"path": "p", "loop": text})["loop"] is value


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, r"Plugin 'test.demo' needs parameter 'path': Where the input lives\."),
        ({"path": ""}, r"Parameter 'path' needs a file or folder path"),
        ({"path": 3}, r"Parameter 'path' must be text, got int"),
        ({"path": "p", "steps": 0}, r"Parameter 'steps' is 0; the smallest allowed is 1"),
        ({"path": "p", "steps": 101}, r"Parameter 'steps' is 101; the largest allowed is 100"),
        ({"path": "p", "steps": 2.5}, r"Parameter 'steps' must be an integer, got 2\.5"),
        ({"path": "p", "steps": True}, r"Parameter 'steps' must be an integer, got True"),
        ({"path": "p", "steps": "many"}, r"Parameter 'steps' must be an integer, got 'many'"),
        ({"path": "p", "strength": "nan"}, r"Parameter 'strength' must be finite"),
        ({"path": "p", "strength": float("inf")}, r"Parameter 'strength' must be finite"),
        ({"path": "p", "strength": -0.1}, r"'strength' is -0\.1; the smallest allowed is 0\.0"),
        ({"path": "p", "strength": [1]}, r"Parameter 'strength' must be a number"),
        ({"path": "p", "loop": "maybe"}, r"Parameter 'loop' must be true or false, got 'maybe'"),
        ({"path": "p", "loop": 1}, r"Parameter 'loop' must be true or false"),
        ({"path": "p", "mode": "slow"}, r"Parameter 'mode' is 'slow'; choose one of fast, best"),
        ({"path": "p", "label": 5}, r"Parameter 'label' must be text"),
        (
            {"path": "p", "stepz": 3, "extra": 1},
            r"Plugin 'test.demo' has no parameter 'extra', 'stepz'; it takes: label, loop, mode, path, seed, steps",
        ),
    ],
)
def test_refusals_say_what_to_fix(params: dict, match: str) -> None:
    with pytest.raises(ParamError, match=match) as err:
        validate_params(SPEC, params)
    assert err.value.code == ErrorCode.BAD_PARAMS


@given(st.integers(1, 100), st.floats(0.0, 1.0), st.booleans(), st.sampled_from(["fast", "best"]))
def test_valid_values_pass_unchanged(steps: int, strength: float, loop: bool, mode: str) -> None:
    params = {"path": "p", "steps": steps, "strength": strength, "loop": loop, "mode": mode}
    out = validate_params(SPEC, params)
    assert {k: out[k] for k in params} == params


def test_spec_round_trips_the_wire_and_labels_default() -> None:
    assert PluginSpec.from_wire(SPEC.to_wire()) == SPEC
    assert SPEC.param("strength").label == "Strength"
    with pytest.raises(KeyError):
        SPEC.param("nope")


def test_bad_declarations() -> None:
    with pytest.raises(ValueError, match="has type 'complex'"):
        ParamSpec("x", "complex")
    with pytest.raises(ValueError, match="Enum parameter 'x' needs choices"):
        ParamSpec("x", "enum")
    with pytest.raises(ValueError, match="kind 'video'"):
        InputSpec("x", "video")
    with pytest.raises(ValueError, match=r"unknown outputs \['sounds'\]"):
        PluginSpec("p", "s", outputs=["sounds"])
    with pytest.raises(ParamError, match="Plugin declaration 'p' cannot be read"):
        PluginSpec.from_wire({"name": "p", "params": [{"name": "x", "type": "nope"}]})
    with pytest.raises(ParamError, match="cannot be read"):
        PluginSpec.from_wire({"summary": "no name"})
