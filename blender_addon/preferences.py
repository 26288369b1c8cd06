"""Add-on preferences: how to reach a backend (local process or remote address) and keys."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

import bpy

DEFAULT_ADDRESS = "tcp://127.0.0.1:5571"


class TesseraPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    mode: bpy.props.EnumProperty(
        name="Backend",
        items=[
            ("LOCAL", "Local", "Start a backend on this machine from the Python executable below"),
            ("REMOTE", "Remote", "Connect to a backend already running at the address below"),
        ],
        default="LOCAL",
    )
    python_executable: bpy.props.StringProperty(
        name="Python Executable",
        description="Python of the environment where the tessera4d backend is installed (for Local)",
        subtype="FILE_PATH",
    )
    jobs_folder: bpy.props.StringProperty(
        name="Jobs Folder",
        description="Where a local backend stores job results (empty: the extension's user folder)",
        subtype="DIR_PATH",
    )
    address: bpy.props.StringProperty(
        name="Address",
        description="ZeroMQ address of a remote backend, e.g. tcp://gpu-box:5571",
        default=DEFAULT_ADDRESS,
    )
    keys_folder: bpy.props.StringProperty(
        name="CURVE Keys Folder",
        description="Folder with server.key (the backend's public key) and client.key_secret; "
        "needed for a remote backend that requires authentication",
        subtype="DIR_PATH",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "mode", expand=True)
        if self.mode == "LOCAL":
            layout.prop(self, "python_executable")
            layout.prop(self, "jobs_folder")
        else:
            layout.prop(self, "address")
            layout.prop(self, "keys_folder")
            if not bpy.app.online_access:
                layout.label(text="Allow Online Access (Preferences → System) to reach a remote backend.", icon="ERROR")


def get(context: bpy.types.Context | None = None) -> TesseraPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def is_loopback(address: str) -> bool:
    """True for tcp://127.x / localhost / [::1] and for ipc:// and inproc:// addresses."""
    parts = urlsplit(address)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ADDRESS = re.compile(r"^(tcp://(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}|(ipc|inproc)://\S+)$")


def check_online_access(address: str) -> None:
    """Refuse a malformed address, and a non-loopback one while Blender's 'Allow Online Access' is off."""
    if not ADDRESS.match(address):
        raise ValueError(
            f"'{address}' is not a backend address: write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5571 "
            "(the address `tessera4d serve` prints)."
        )
    if not is_loopback(address) and not bpy.app.online_access:
        raise PermissionError(
            f"{address} is not on this machine and Blender's online access is off. Enable "
            "Preferences → System → Network → Allow Online Access to connect to a remote backend."
        )


def jobs_folder(prefs: TesseraPreferences) -> Path:
    if prefs.jobs_folder:
        return Path(bpy.path.abspath(prefs.jobs_folder))
    return Path(bpy.utils.extension_path_user(__package__, path="jobs", create=True))


def log_path() -> Path:
    return Path(bpy.utils.extension_path_user(__package__, path="logs", create=True)) / "backend.log"
