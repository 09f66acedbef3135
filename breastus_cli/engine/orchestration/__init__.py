"""Many runs at once: cross-validation, the learning-rate x epochs sweep, Slurm arrays.

Nothing in engine imports this room."""
