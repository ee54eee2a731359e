"""Time to accuracy: the airbench network and a speedrun recipe, for a 2-core CPU hour.

  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast
  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast --mode eval

Frozen data-fitted whitening, identity-initialised convolutions, scale-free BatchNorm, label
smoothing, flip and 4-pixel translations (reflection-padded), a triangular schedule annealed to
zero, flip and translation TTA at evaluation; bfloat16 compute (on oneDNN's convolutions where
they build), a 512-wide last stage. Hyperparameters were chosen on the validation split
(docs/results.md). On all 50,000 images (--config.validation_size=0
--config.early_stopping_patience=0), alone on a 2-core Intel Sapphire Rapids: test top-1 0.7573
and 0.7544 for seeds 0 and 1, in 31 and 33 minutes of training and evaluation.
"""

import ml_collections

from cifar100_flax import defaults


def get_config() -> ml_collections.ConfigDict:
  config = defaults.get_config()
  config.model = 'airbench'
  # airbench's (64, 256, 256) reached validation top-1 0.711 in 20 epochs, training accuracy 0.84:
  # 100 classes want more features; the last stage, at 7x7 and 3x3, widens cheaply (1.33x FLOPs).
  config.model_kwargs = dict(widths=(64, 256, 512), convs_per_stage=2)
  config.dtype = 'bfloat16'
  config.frozen_params = '^whitening$'
  # BatchNorm biases learn 64x faster (airbench's bias_scaler).
  config.learning_rate_multipliers = ((r'BatchNorm_\d+/bias$', 64.0),)
  config.batch_size = 512
  # Validation top-1 (docs/results.md): 18 epochs 0.738 (2-pixel translations); 35 epochs with
  # 4-pixel ones 0.744 and less overfitting; 40 with Cutout 8 as well 0.741; the 35 epochs with
  # the rate annealed to zero (not to airbench's 0.07 of the peak) 0.756; 31 epochs 0.746.
  config.num_epochs = 35
  # airbench's hyperparameters for a mean (not summed) loss over 512 images: lr 11.5 / 1024 per
  # image / (1 + 1 / (1 - momentum)) x 512, and the same per-step weight decay.
  config.optimizer = 'sgd'
  config.learning_rate = 0.75
  config.momentum = 0.85
  config.nesterov = True
  config.weight_decay = 1.33e-3
  config.label_smoothing = 0.2
  config.schedule = 'triangular'
  config.triangular_end = 0.0
  config.warmup_epochs = 0.23 * config.num_epochs
  config.augment.crop_padding = 4
  config.augment.crop_reflect = True
  config.augment.flip = True
  config.eval_flip_tta = True
  # Validation top-1 of a 12-epoch run (runs/cnn_fast_val): 0.6694 one view, 0.6882 with flip,
  # 0.6930 and 0.6948 with flip and 1- or 2-pixel translations.
  config.eval_translate_tta = 2
  config.early_stopping_patience = 0
  config.log_every_steps = 20
  return config
