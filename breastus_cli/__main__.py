"""``python -m breastus_cli`` is the same as the ``breastus`` console script."""

from breastus_cli.cli.app import main

if __name__ == "__main__":
    main()
