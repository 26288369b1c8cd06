"""Collectors: Blender data → arrays sent to the backend (the reverse of appliers)."""


def object_kind(ob) -> str:
    """'a mesh object', 'an armature object', 'a light probe object': what an error says the object is."""
    kind = ob.type.lower().replace("_", " ")
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} object"
