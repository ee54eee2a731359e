"""ResNet-18 for 32x32 images (3x3 stem, no max-pooling; torchvision's blocks), from scratch.

  python main.py --config configs/resnet18.py --workdir runs/resnet18
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.model.name = 'resnet18'
  config.model.kwargs = ml_collections.ConfigDict(dict(stem='cifar'))
  return config
