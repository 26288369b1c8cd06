"""The extension zip: layout, manifest, bundled wheels, Blender's own validator."""

import tomllib
import zipfile
from importlib.metadata import version

import pytest

from backend.addon_build import REPO_ROOT, BuildError, build_extension, validate_with_blender

WHEEL_CACHE = REPO_ROOT / ".cache" / "wheels"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_extension(tmp_path_factory.mktemp("ext"), wheel_cache=WHEEL_CACHE)


def test_zip_has_manifest_addon_protocol_and_wheels_at_its_root(built):
    names = zipfile.ZipFile(built.zip_path).namelist()
    assert "blender_manifest.toml" in names
    assert "__init__.py" in names
    assert "shared/messages.py" in names and "shared/codec.py" in names
    assert not [n for n in names if n.startswith("batch/") or "__pycache__" in n or n.endswith(".pyc")]
    for wheel in built.wheels:
        assert wheel.removeprefix("./") in names


def test_manifest_claims_what_is_bundled(built):
    with zipfile.ZipFile(built.zip_path) as zf:
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert manifest["id"] == "tessera4d"
    assert manifest["version"] == version("tessera4d")
    assert "bundle" not in manifest
    assert "linux-x64" in manifest["platforms"]
    wheels = manifest["wheels"]
    for pkg in ("pyzmq", "msgpack"):
        linux = [w for w in wheels if w.split("/")[-1].startswith(pkg + "-") and "manylinux" in w]
        # Blender 4.2-5.0 run CPython 3.11, 5.1+ run 3.13 (abi3 wheels from cp312 serve 3.13).
        assert any("-cp311-" in w for w in linux), f"no cp311 Linux wheel of {pkg}: {linux}"
        assert any("-cp313-" in w or "-abi3-" in w for w in linux), f"no 3.13 Linux wheel of {pkg}: {linux}"
    assert set(manifest["permissions"]) == {"network", "files"}


def test_blender_validator_accepts_the_zip(built):
    assert "Success" in validate_with_blender(built.zip_path)


def test_blender_validator_refusal_is_a_build_error(tmp_path, built):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(built.zip_path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = data.replace(b'type = "add-on"', b'type = "plugin"')
            dst.writestr(item, data)
    with pytest.raises(BuildError, match="Blender refused bad.zip"):
        validate_with_blender(bad)


def test_missing_source_manifest_says_where_it_looked(tmp_path):
    with pytest.raises(BuildError, match="addon_manifest.toml not found"):
        build_extension(tmp_path / "out", wheels=False, source=tmp_path)
