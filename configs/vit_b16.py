"""ViT-B/16 from timm's ImageNet-21k weights (fine-tuned on ImageNet-1k), fine-tuned on CIFAR-100.

  python main.py --config configs/vit_b16.py --workdir runs/vit_b16

This is the recipe for an accelerator: 86.6 M parameters at 224 px (197 tokens) are about 100x
EfficientNet-Lite0's FLOPs at 128 px, days on a 2-core CPU. `pretrained` is a timm hub id,
downloaded on first use (needs internet and `huggingface_hub`); a local timm `.safetensors` or
`.pth` file works the same way. The position embeddings are resized to `image_size` when the
weights load, so other sizes (e.g. 384, the ViT paper's fine-tuning size) need no other change.
The hyperparameters follow the ViT paper's fine-tuning (Dosovitskiy et al., 2021, appendix B.1.1:
SGD with momentum 0.9, no weight decay, gradient clipping at norm 1, batch 512, cosine decay after
a warm-up; they fine-tune every weight from the start), which reports 91-92% CIFAR-100 top-1 for
ViT-B/16 from ImageNet-21k: the route to the project's moonshot of 0.85 and beyond. It has not
been run here (no accelerator and no hub access); on a GPU or TPU host, run it as it is.

A short CPU run of a small ViT from scratch (no weights can be downloaded here), ViT-Ti/16 at
64 px (16 patches) with AdamW, recorded in docs/results.md (test top-1 0.23 after 22 minutes):

  python main.py --config configs/vit_b16.py --workdir runs/vit_ti16_64 \
      --config.model.name=vit_tiny_patch16 --config.model.pretrained= --config.data.image_size=64 \
      --config.model.dtype=float32 --config.data.batch_size=128 --config.optim.name=adamw \
      --config.optim.learning_rate=1e-3 --config.optim.weight_decay=0.05 \
      --config.train.num_epochs=5 --config.model.kwargs.drop_path=0.0
"""

import ml_collections

from cifar100_flax.config import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_transfer_config()
  config.model.name = 'vit_base_patch16'
  config.model.kwargs = dict(dropout=0.0, drop_path=0.1)
  config.model.pretrained = 'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k'
  config.data.normalisation = 'unit'  # timm's augreg ViTs: mean 0.5, std 0.5
  config.data.image_size = 224
  config.model.dtype = 'bfloat16'
  config.data.batch_size = 512
  config.eval.batch_size = 500
  config.train.num_epochs = 10
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.learning_rate = 0.01
  config.optim.weight_decay = 0.0
  config.optim.grad_clip_norm = 1.0
  config.schedule.warmup_epochs = 1.0
  config.optim.backbone_frozen_epochs = 0.0
  config.optim.backbone_learning_rate_multiplier = 1.0
  config.eval.flip_tta = True
  return config
