"""Training: the states (`states`), the jitted steps (`steps`), FLOP counting (`flops`),
clu metrics (`metrics`), device and process placement (`sharding`, `processes`), checkpoints
(`checkpoints`), a trained workdir restored as a model (`restore`), BatchNorm recalibration,
teachers' predictions as soft targets (`distillation`), the history writers, and the loop that
runs them (`loop`).

Imports: config, models, data, optim, cpu and the base modules. Only the command line imports the
loop; evaluation and inference use the states, steps, checkpoints and restore.
"""
