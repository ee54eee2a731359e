"""ResNet-18 for 32x32 images (3x3 stem, no max-pooling; torchvision's blocks), from scratch.

  python main.py --config configs/resnet18.py --workdir runs/resnet18
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet18'
  config.model_kwargs = ml_collections.ConfigDict(dict(stem='cifar'))
  return config
