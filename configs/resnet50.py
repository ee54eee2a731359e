"""The seed's headline model: ResNet-50 from ImageNet weights, fine-tuned on CIFAR-100.

  python main.py --config configs/resnet50.py --workdir runs/resnet50

`pretrained` is a Hugging Face hub id, downloaded on first use (needs internet and
`huggingface_hub`); a local torchvision/timm `.safetensors` or `.pth` file works the same way,
and `--config.pretrained=''` trains from scratch. Images are resized on the device to
`image_size` (ImageNet's 224; smaller sizes cost quadratically less) and normalised with
ImageNet's statistics, as the weights expect. The backbone is frozen for the first epoch while the
new 100-class head learns, then fine-tuned at a tenth of the head's learning rate.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet50'
  config.model_kwargs = dict(stem='imagenet', dropout=0.0, batch_norm_frozen=False)
  config.pretrained = 'timm/resnet50.tv_in1k'
  config.image_size = 224
  config.normalisation = 'imagenet'
  config.backbone_frozen_epochs = 1.0
  config.backbone_learning_rate_multiplier = 0.1
  config.batch_size = 128
  config.num_epochs = 10
  config.learning_rate = 0.05
  config.weight_decay = 1e-4
  config.warmup_epochs = 1.0
  config.eval_batch_size = 200
  return config
