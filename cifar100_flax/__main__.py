"""`python -m cifar100_flax`: the command line of main.py."""

from cifar100_flax.cli import entry

if __name__ == '__main__':
  entry.run()
