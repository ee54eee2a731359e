"""`python -m cifar100_flax.pretrained convert|photos`, the weight commands' old spelling: now
`--mode=convert` and `--mode=photos` of the command line (cifar100_flax/cli/weights.py), which
this forwards to, saying so once."""

import sys

from cifar100_flax.cli import entry

_USAGE = ('usage: python -m cifar100_flax.pretrained convert SOURCE OUT --model=NAME | photos '
          '[--model=NAME]')


def _flags(argv: list[str]) -> list[str]:
  """The old arguments as the command line's flags."""
  if not argv or argv[0] not in ('convert', 'photos'):
    sys.exit(_USAGE)
  command, rest = argv[0], argv[1:]
  options, positional = [], []
  while rest:
    arg, rest = rest[0], rest[1:]
    if arg.startswith('--') and '=' not in arg and rest:  # --model NAME
      arg, rest = f'{arg}={rest[0]}', rest[1:]
    (options if arg.startswith('--') else positional).append(arg)
  if command == 'convert':
    if len(positional) != 2:
      sys.exit(_USAGE)
    options += [f'--weights={positional[0]}', f'--output={positional[1]}']
  elif positional:
    sys.exit(_USAGE)
  return [f'--mode={command}', *options]


if __name__ == '__main__':
  new = _flags(sys.argv[1:])
  print(f'(python -m cifar100_flax.pretrained is now: python main.py {" ".join(new)})',
        file=sys.stderr)
  sys.argv = ['main.py', *new]
  entry.run()
