"""Models layer: classifier and U-Net builders, pretrained-weight resolution (offline first)."""
