"""Train, evaluate and report on a CIFAR-100 classifier: `python main.py --help` says how
(cifar100_flax/cli/entry.py); `python -m cifar100_flax` and the `cifar100-flax` script are the
same command."""

from cifar100_flax.cli import entry

if __name__ == '__main__':
  entry.run()
