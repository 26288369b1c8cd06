"""`python -m backend ...` is the `tessera4d` command."""

from backend.cli import main

if __name__ == "__main__":
    main()
