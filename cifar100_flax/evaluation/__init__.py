"""How good a trained model is: test-set evaluation and ensembles (`evaluate`), the
classification report's numbers (`classification`), Grad-CAM, and the study's report: the runs'
saved results (`results`), its words and tables (`findings`), figures (`plots`), layout
(`document`, with `templates/`) and the mode that assembles it (`report`).

Imports: inference (to restore a model), training (states, steps; never the loop), config,
models, data and the base modules.
"""
