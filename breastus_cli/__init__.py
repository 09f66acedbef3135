"""breastus: breast-ultrasound lesion analysis from the command line.

The package is layered; imports go downward only:
``cli`` -> ``reports`` -> ``engine`` -> ``models`` -> ``data`` -> ``backend``.
TensorFlow is imported only by :mod:`breastus_cli.backend`, on first use.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``breastus_cli.api`` on first use (importing the package stays instant)."""
    if name == "api":
        import importlib

        return importlib.import_module("breastus_cli.api")
    raise AttributeError(f"module 'breastus_cli' has no attribute {name!r}")
