"""The custom CNN from scratch: the default recipe (32/64/128-wide VGG-style stages, crop + flip,
SGD + Nesterov, warmup + cosine, label smoothing) for 20 epochs (3,500 steps of 256), sized for
a 2-core CPU:

  python main.py --config configs/cnn.py --workdir runs/cnn
  python main.py --config configs/cnn.py --workdir runs/cnn --mode eval

Test top-1 0.5405 (AMD EPYC, 40 minutes); docs/results.md has the run.
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.train.num_epochs = 20
  return config
