"""Applying a run to images: loading a run (LoadedRun), post-processing, masks, the fused classifier,
Grad-CAM, overlays, batch prediction.

Never imports training, evaluation or orchestration."""
