"""Engine layer: train, evaluate, predict, sweep, export; shared by classification and segmentation."""
