"""The tests' tiny, fast config: a one-stage CNN of 8 channels on 200 mock images per split.

Also a config file for main.py, as the fault battery uses it (tests/faults/):

  python main.py --config=tests/tiny_config.py --workdir=W --config.data.dir=DIR
"""

import ml_collections

from cifar100_flax.config import defaults, loading


def get_config(**overrides) -> ml_collections.ConfigDict:
  """The tiny config with `overrides`, each named by its key's last part where that is the flat
  name it had before the nesting (learning_rate=0.1 sets optim.learning_rate; loading.FLAT_KEYS),
  else by the subtree (augment=...)."""
  config = defaults.get_config()
  config.model.kwargs.widths = (8,)
  config.model.kwargs.convs_per_stage = 1
  config.model.kwargs.hidden = 0
  config.model.kwargs.dropout = 0.0
  config.data.dir = '/nonexistent'  # mock data ignores it; real data must not leak in
  config.data.validation_size = 40
  config.data.batch_size = 16
  config.eval.batch_size = 48  # does not divide 200: the last batch is padded
  config.train.num_epochs = 2
  config.train.log_every_steps = 5
  config.schedule.warmup_epochs = 0.5
  config.optim.learning_rate = 0.05
  for key, value in overrides.items():
    loading.set_key(config, loading.FLAT_KEYS.get(key, key), value)
  return config
