import itertools
import re

import jax

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


def test_the_training_line_shows_images_per_second_and_mfu_where_the_peak_is_known(monkeypatch):
  clock = itertools.cycle([100.0, 110.0])  # each line: its first step, then its format
  monkeypatch.setattr(console.time, 'perf_counter', lambda: next(clock))
  line = console.TrainingLine(total_steps=100, steps_per_epoch=10, batch_size=50,
                              peak_flops_per_device=1e12 / jax.device_count())
  line.first_step_done(1)
  text = line.format(21, {'train_loss': 1.0}, step_flops=2e10)  # 2 steps/s of 2e10 FLOPs
  assert '2.00 steps/s' in text and '100 images/s' in text and 'MFU 4.0%' in text
  unknown = console.TrainingLine(100, 10, 50)
  unknown.first_step_done(1)
  assert 'MFU' not in unknown.format(21, {}, step_flops=2e10)
