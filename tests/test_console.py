import re

from cifar100_flax import console


def test_a_phase_prints_its_time_at_the_end_of_its_line(capsys):
  with console.phase('loading'):
    pass
  assert re.fullmatch(r'loading\.\.\. \d+\.\d s\n', capsys.readouterr().out)


def test_what_is_said_inside_a_phase_goes_below_its_line(capsys):
  with console.phase('restoring'):
    console.say('checkpoint 3 cannot be read')
    console.say('trying checkpoint 2')
  lines = capsys.readouterr().out.splitlines()
  assert lines[:3] == ['restoring...', 'checkpoint 3 cannot be read', 'trying checkpoint 2']
  assert re.fullmatch(r'restoring\.\.\. \d+\.\d s', lines[3]) and len(lines) == 4
  console.say('after')
  assert capsys.readouterr().out == 'after\n'
