"""The custom CNN from scratch: the default recipe (32/64/128-wide VGG-style stages, crop + flip,
SGD + Nesterov, warmup + cosine, label smoothing) for 20 epochs (3,500 steps of 256), sized for
a 2-core CPU: bench/throughput.py measures its training step at about 430 images/s there:

  python main.py --config configs/cnn.py --workdir runs/cnn
  python main.py --config configs/cnn.py --workdir runs/cnn --mode eval

Result on the real test set: see README.md's results table.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.num_epochs = 20
  return config
