"""Data layer: source readers, image decoding, manifest, splits, synthetic data, pipelines."""
