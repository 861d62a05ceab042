"""``python -m client``: the same as the ``mmim`` console script."""

from client.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
