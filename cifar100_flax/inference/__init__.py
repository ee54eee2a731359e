"""A trained workdir put to use (restored by training/restore.py): applied to the user's image
files (`image_files`, `predict`) and exported (`export`: ONNX, StableHLO, SavedModel).

Imports: training (states, steps, checkpoints, restore, sharding; never the loop), config,
models, data, cpu and the base modules.
"""
