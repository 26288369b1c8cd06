"""Build the installable Blender extension zip from `addon_manifest.toml`.

The zip holds, at its root: `blender_manifest.toml`, the add-on (the contents of
`blender_addon/` except `batch/`), a copy of `shared/` (the wire protocol, imported by the
add-on relatively) and `wheels/` with pyzmq and msgpack for every platform and Python the
manifest claims. Blender installs those wheels into the extension's own site-packages, so
users never pip-install anything into Blender.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path

import tomli_w

from shared.errors import TesseraError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Blender platform name → pip platform tags, most specific first.
PLATFORM_TAGS: dict[str, list[str]] = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_10_15_universal2", "macosx_10_9_universal2"],
    "macos-x64": ["macosx_10_9_x86_64", "macosx_10_15_x86_64", "macosx_10_15_universal2", "macosx_10_9_universal2"],
}

EXCLUDED_DIRS = {"batch", "__pycache__", ".pytest_cache"}


class BuildError(TesseraError):
    """The extension could not be built; the message says what to fix."""


@dataclass
class BuildReport:
    zip_path: Path
    platforms: list[str]
    wheels: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # platform → why it is not bundled


def _source_manifest(path: Path) -> dict:
    if not path.is_file():
        raise BuildError(f"{path} not found: run the build from a source checkout of tessera4d.")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def download_wheels(packages: list[str], python: str, platform: str, dest: Path) -> list[Path]:
    """pip-download binary wheels (no sdists) of `packages` for one Python and platform into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--no-deps",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--dest",
        str(dest),
    ]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, *packages], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed without a message"])[-1]
        raise BuildError(f"No wheels of {', '.join(packages)} for Python {python} on {platform}: {last}")
    names = {p.split("==")[0].lower().replace("-", "_") for p in packages}
    found = [w for w in sorted(dest.glob("*.whl")) if w.name.split("-")[0].lower() in names]
    return found


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(
        src,
        dst,
        dirs_exist_ok=True,
        ignore=lambda d, names: [n for n in names if n in EXCLUDED_DIRS or n.endswith((".pyc", ".pyo"))],
    )


def build_extension(
    out_dir: Path, *, wheels: bool = True, wheel_cache: Path | None = None, source: Path = REPO_ROOT
) -> BuildReport:
    """Build `tessera4d-<version>.zip` in `out_dir`.

    With `wheels=False` nothing is downloaded and no wheels are listed; such a zip only works
    in a Blender whose Python already has pyzmq and msgpack (tests of the source layout).
    """
    manifest = _source_manifest(source / "addon_manifest.toml")
    bundle = manifest.pop("bundle", {})
    manifest["version"] = package_version("tessera4d")
    packages: list[str] = bundle.get("packages", [])
    pythons: list[str] = bundle.get("pythons", [])
    required: list[str] = bundle.get("required_platforms", [])
    cache = wheel_cache or Path.home() / ".cache" / "tessera4d" / "wheels"

    with tempfile.TemporaryDirectory(prefix="tessera4d-build-") as tmp:
        stage = Path(tmp) / "stage"
        _copy_tree(source / "blender_addon", stage)
        _copy_tree(source / "shared", stage / "shared")
        if not (stage / "__init__.py").is_file():
            raise BuildError(f"{source / 'blender_addon' / '__init__.py'} is missing: the add-on has no entry module.")

        report = BuildReport(zip_path=Path(), platforms=[], wheels=[])
        if wheels:
            (stage / "wheels").mkdir()
            for platform in PLATFORM_TAGS:
                try:
                    got = [
                        w
                        for py in pythons
                        for w in download_wheels(packages, py, platform, cache / f"{platform}-py{py}")
                    ]
                except BuildError as exc:
                    if platform in required:
                        raise
                    report.skipped[platform] = str(exc)
                    log.warning("Skipping %s: %s", platform, exc)
                    continue
                report.platforms.append(platform)
                for whl in got:
                    if not (stage / "wheels" / whl.name).exists():
                        shutil.copy2(whl, stage / "wheels" / whl.name)
                        report.wheels.append(f"./wheels/{whl.name}")
            manifest["platforms"] = report.platforms
            manifest["wheels"] = sorted(report.wheels)

        (stage / "blender_manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
        zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    # Wheels are zips already; storing them saves build time.
                    kind = zipfile.ZIP_STORED if path.suffix == ".whl" else zipfile.ZIP_DEFLATED
                    zf.write(path, path.relative_to(stage).as_posix(), compress_type=kind)
        report.zip_path = zip_path
    return report


def blender_validator() -> Path | None:
    """Blender's own extension validator (`blender --command extension validate`), if bpy is installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("bpy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    hits = sorted(
        Path(next(iter(spec.submodule_search_locations))).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")
    )
    return hits[-1] if hits else None


def validate_with_blender(zip_path: Path) -> str:
    """Run Blender's validator on the zip; return its output, raise BuildError if it refuses."""
    tool = blender_validator()
    if tool is None:
        raise BuildError("Blender's extension validator was not found: install bpy (pip install bpy==5.0.1).")
    proc = subprocess.run([sys.executable, str(tool), "validate", str(zip_path)], capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BuildError(f"Blender refused {zip_path.name}: {out}")
    return out
