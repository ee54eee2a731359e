"""The custom CNN from scratch: the default recipe (32/64/128-wide VGG-style stages, crop + flip,
SGD + Nesterov, warmup + cosine, label smoothing) for 20 epochs, sized for a 2-core CPU
(about 210 training images/s, so about 75 minutes):

  python main.py --config configs/cnn.py --workdir runs/cnn
  python main.py --config configs/cnn.py --workdir runs/cnn --mode eval

Result on the real test set: see README.md's results table.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.num_epochs = 20
  return config
