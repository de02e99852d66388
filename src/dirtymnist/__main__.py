"""`python -m dirtymnist ...` runs the command-line tool."""

from dirtymnist.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
