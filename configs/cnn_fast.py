"""Time to accuracy: the airbench network and a speedrun recipe, for a 2-core CPU hour.

  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast
  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast --mode eval

Frozen data-fitted whitening, identity-initialised convolutions, scale-free BatchNorm, label
smoothing, flip + 2-pixel translation (reflection-padded), a short one-cycle schedule, flip and
translation TTA at evaluation; bfloat16 compute on oneDNN's convolutions (on the AMD EPYC, 410
img/s at airbench's widths against 236 in float32 on XLA's), spent on more epochs and a 512-wide
last stage.
Hyperparameters were chosen on the validation split (README, Results); on all 50,000 images
(--config.validation_size=0 --config.early_stopping_patience=0), 28 epochs gave test top-1 0.7448
and 0.7477 for seeds 0 and 1 (seed 1 alone on the machine: 55.7 minutes; evaluated again after
the oneDNN concurrency fix of 2026-12-02).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'airbench'
  # airbench's (64, 256, 256) reached validation top-1 0.711 in 20 epochs, training accuracy 0.84:
  # 100 classes want more features; the last stage, at 7x7 and 3x3, widens cheaply (1.33x FLOPs).
  config.model_kwargs = dict(widths=(64, 256, 512), convs_per_stage=2)
  config.dtype = 'bfloat16'
  config.frozen_params = '^whitening$'
  # BatchNorm biases learn 64x faster (airbench's bias_scaler).
  config.learning_rate_multipliers = ((r'BatchNorm_\d+/bias$', 64.0),)
  config.batch_size = 512
  # 18 epochs on 45,000 images: validation top-1 0.7376. On the Sapphire Rapids CPU (AMX) a step
  # of 512 took ~1.13 s and 28 epochs on all 50,000 images fit in the hour (README, Results).
  # The step now takes ~0.59 s (oneDNN 3.2 and the malloc fix of 2026-12-02; ~0.8 before them);
  # 35 epochs (not validated) scored lower, see README: how to spend the faster step is to be
  # chosen again on the validation split.
  config.num_epochs = 28
  # airbench's hyperparameters for a mean (not summed) loss over 512 images: lr 11.5 / 1024 per
  # image / (1 + 1 / (1 - momentum)) x 512, and the same per-step weight decay.
  config.optimizer = 'sgd'
  config.learning_rate = 0.75
  config.momentum = 0.85
  config.nesterov = True
  config.weight_decay = 1.33e-3
  config.label_smoothing = 0.2
  config.schedule = 'triangular'
  config.warmup_epochs = 0.23 * config.num_epochs
  config.augment.crop_padding = 2
  config.augment.crop_reflect = True
  config.augment.flip = True
  config.eval_flip_tta = True
  # Validation top-1 of a 12-epoch run (runs/cnn_fast_val): 0.6694 one view, 0.6882 with flip,
  # 0.6930 and 0.6948 with flip and 1- or 2-pixel translations.
  config.eval_translate_tta = 2
  config.early_stopping_patience = 0
  config.log_every_steps = 20
  return config
