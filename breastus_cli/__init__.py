"""breastus: breast-ultrasound lesion analysis from the command line.

The package is layered; imports go downward only:
``cli`` -> ``reports`` -> ``engine`` -> ``models`` -> ``data`` -> ``backend``.
TensorFlow is imported only by :mod:`breastus_cli.backend`, on first use.
"""

__version__ = "0.1.0"
