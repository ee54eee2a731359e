"""How good a trained model is: test-set evaluation and ensembles (`evaluate`), the
classification report's numbers (`classification`), Grad-CAM, the figures (`plots`) and the
report (`report`).

Imports: inference (to restore a model), training (states, steps; never the loop), config,
models, data and the base modules.
"""
