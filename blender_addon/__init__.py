"""Tessera 4D: results of a GPU backend (animated meshes, splat sequences) streamed into
the timeline, played and rendered without Python running.

Installed as an extension this package is `bl_ext.<repo>.tessera4d`; it carries its own
copy of the wire protocol as `.shared`, so every import here is relative.
"""

from __future__ import annotations

import bpy

from . import operators, panels, preferences, properties, storage
from .file_writer import WRITER
from .session import SESSION


def register() -> None:
    bpy.utils.register_class(preferences.TesseraPreferences)
    properties.register()
    for cls in operators.CLASSES + panels.CLASSES:
        bpy.utils.register_class(cls)
    storage.register()


def unregister() -> None:
    SESSION.pump_running = False  # the modal pump ends at its next tick
    SESSION.shut_down()  # close the socket, stop a local backend
    WRITER.shut_down()  # the file-writer thread ends with the add-on
    SESSION.client = None
    SESSION.targets.clear()
    storage.unregister()
    for cls in reversed(operators.CLASSES + panels.CLASSES):
        bpy.utils.unregister_class(cls)
    properties.unregister()
    bpy.utils.unregister_class(preferences.TesseraPreferences)
