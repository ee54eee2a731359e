"""The seed's headline model: ResNet-50 from ImageNet weights, fine-tuned on CIFAR-100.

  python main.py --config configs/resnet50.py --workdir runs/resnet50

`pretrained` is a Hugging Face hub id, downloaded on first use (needs internet and
`huggingface_hub`); a local torchvision/timm `.safetensors` or `.pth` file works the same way,
and `--config.model.pretrained=''` trains from scratch. Images are resized on the device to
`image_size` (ImageNet's 224; smaller sizes cost quadratically less) and normalised with
ImageNet's statistics, as the weights expect; the rest is `defaults.get_transfer_config()`.

On an accelerator this is the way past the CPU recipe (configs/efficientnet_lite0.py) to the
project's moonshot of 0.85: fine-tuned at ImageNet's 224 px, ResNet-50 reaches about 86% on
CIFAR-100 in the literature (Kornblith et al., 2019, "Do Better ImageNet Models Transfer
Better?"), with --config.model.dtype=bfloat16 and --config.data.batch_size=512
--config.optim.learning_rate=0.2 for a GPU or TPU. Not run here (224 px costs 3x Lite0's 128 px
per image in FLOPs, ResNet-50 itself another 10x). ViT-B/16 from ImageNet-21k goes further
(configs/vit_b16.py). On a 2-core CPU: days (not run); from scratch at 32 px, 2 epochs took 8.6
minutes and reached test top-1 0.1561 (docs/results.md).
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_transfer_config()
  config.model.name = 'resnet50'
  config.model.kwargs = dict(stem='imagenet', dropout=0.0, batch_norm_frozen=False)
  config.model.pretrained = 'timm/resnet50.tv_in1k'
  config.data.normalisation = 'imagenet'
  return config
