"""Finding the data a job was made for after the user renamed it.

Jobs remember objects by name (bpy pointers go stale) and by `session_uid`, which Blender keeps for a
data-block through renames and undo for the whole session. So a mesh renamed while its rig is solved, or a
streaming sequence renamed while frames arrive, is still found; one that was deleted is not.
"""

from __future__ import annotations

import bpy


class TargetGone(LookupError):
    """The object (or collection) a running job streams into was removed: by Undo, or deleted."""


def find(data: bpy.types.bpy_prop_collection, name: str, uid: int = 0) -> bpy.types.ID | None:
    """The data-block of `data` (e.g. bpy.data.objects) named `name` or, when it was renamed, the one with
    session_uid `uid`; None when it is gone. With `uid` 0 (not known) only the name is used."""
    found = data.get(name) if name else None
    if found is not None and (not uid or found.session_uid == uid):
        return found
    if uid:
        return next((item for item in data if item.session_uid == uid), None)
    return None
