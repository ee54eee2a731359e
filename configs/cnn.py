"""The custom CNN from scratch: 32/64/128-wide VGG-style stages, crop + flip, 20 epochs.

Sized for a 2-core CPU (about 215 images/s for training, so about 75 minutes):

  python main.py --config configs/cnn.py --workdir runs/cnn
  python main.py --config configs/cnn.py --workdir runs/cnn --mode eval

Result on the real test set: see README.md's results table.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model_kwargs.widths = (32, 64, 128)
  config.model_kwargs.convs_per_stage = 2
  config.model_kwargs.hidden = 256
  config.model_kwargs.dropout = 0.3
  config.num_epochs = 20
  config.batch_size = 256
  config.learning_rate = 0.1
  config.warmup_epochs = 1.0
  return config
