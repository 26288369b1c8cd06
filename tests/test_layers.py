"""DESIGN.md §2: the import rules between layers, checked on the source tree."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES = {
    # folder: top-level modules it must never import
    "shared": {"bpy", "torch", "gsplat", "diffusers", "zmq", "backend", "blender_addon"},
    "backend": {"bpy", "blender_addon"},
    "blender_addon": {"torch", "gsplat", "diffusers", "backend"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_layer_never_imports_forbidden_modules(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder}/ has no Python files"
    offenders = {
        f"{path.relative_to(ROOT)} imports {sorted(imported_modules(path) & RULES[folder])}"
        for path in files
        if imported_modules(path) & RULES[folder]
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_checker_sees_nested_and_aliased_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import torch.cuda as tc\n    from bpy import data\n", encoding="utf-8")
    assert {"torch", "bpy"} <= imported_modules(probe)
