"""ResNet-18 for 32x32 images (3x3 stem, no max-pooling; torchvision's blocks), from scratch.

  python main.py --config configs/resnet18.py --workdir runs/resnet18

On a 2-core CPU: about 4 hours (30 epochs of about 8.4 minutes, from bench/throughput.py's float32
training rate on an Intel Xeon, docs/speed.md); its test top-1 has not been measured yet.
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.model.name = 'resnet18'
  config.model.kwargs = ml_collections.ConfigDict(dict(stem='cifar'))
  return config
