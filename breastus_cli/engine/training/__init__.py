"""Training a model into a run folder: the fit loop, the tasks (classification, segmentation),
callbacks.

``tasks`` and ``callbacks`` import TensorFlow when they are imported: modules the CLI loads at
startup import them inside functions."""
