"""The tests' tiny, fast config: a one-stage CNN of 8 channels on 200 mock images per split.

Also a config file for main.py, as the fault battery uses it (tests/faults/):

  python main.py --config=tests/tiny_config.py --workdir=W --config.data_dir=DIR
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config(**overrides) -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.model_kwargs.widths = (8,)
  config.model_kwargs.convs_per_stage = 1
  config.model_kwargs.hidden = 0
  config.model_kwargs.dropout = 0.0
  config.data_dir = '/nonexistent'  # mock data ignores it; real data must not leak in
  config.validation_size = 40
  config.batch_size = 16
  config.eval_batch_size = 48  # does not divide 200: the last batch is padded
  config.num_epochs = 2
  config.log_every_steps = 5
  config.warmup_epochs = 0.5
  config.learning_rate = 0.05
  config.update(overrides)
  return config
