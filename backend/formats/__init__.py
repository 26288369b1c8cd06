"""File formats the backend reads and writes: mesh sequences (npz, OBJ folders, PC2) and 3DGS PLY."""
