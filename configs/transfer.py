"""The transfer recipe shared by the pretrained-backbone configs (resnet50.py, efficientnet_lite0.py).

A new 100-class head; images resized on the device to the backbone's resolution; the backbone
frozen for the first epoch while the head learns, then fine-tuned at a fraction of its rate.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.image_size = 224
  config.backbone_frozen_epochs = 1.0
  config.backbone_learning_rate_multiplier = 0.1
  config.batch_size = 128
  config.eval_batch_size = 200
  config.num_epochs = 10
  config.learning_rate = 0.05
  config.weight_decay = 1e-4
  config.warmup_epochs = 1.0
  return config
