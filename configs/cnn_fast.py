"""Time to accuracy: the airbench network and a speedrun recipe, for a 2-core CPU hour.

  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast
  python main.py --config configs/cnn_fast.py --workdir runs/cnn_fast --mode eval

Frozen data-fitted whitening, identity-initialised convolutions, scale-free BatchNorm, label
smoothing, flip + 2-pixel translation, a short one-cycle schedule, flip TTA at evaluation.
Hyperparameters were chosen on the validation split (README, Results).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'airbench'
  config.model_kwargs = dict(widths=(64, 256, 256), convs_per_stage=2)
  config.frozen_params = '^whitening$'
  config.batch_size = 512
  config.num_epochs = 12
  config.optimizer = 'sgd'
  config.learning_rate = 0.4
  config.momentum = 0.85
  config.nesterov = True
  config.weight_decay = 5e-4
  config.label_smoothing = 0.2
  config.schedule = 'one_cycle'
  config.augment.crop_padding = 2
  config.augment.flip = True
  config.eval_flip_tta = True
  config.early_stopping_patience = 0
  config.log_every_steps = 20
  return config
