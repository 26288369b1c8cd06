"""Collectors: Blender data → arrays sent to the backend (the reverse of appliers)."""
