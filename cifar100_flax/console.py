"""What the terminal shows: one line per logged training period, and progress for long phases.

Only process 0 prints, so that a run of several processes shows one terminal's worth. Progress
bars (tqdm, which tensorflow-datasets already depends on) appear only on a terminal; in a log file
each phase is one line.
"""

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator

import jax
import tqdm


def _is_main_process() -> bool:
  return jax.process_index() == 0


# The phase whose line is open (waiting for its time), and whether something was said inside it.
_open_phase = {'description': None, 'interrupted': False}


def say(text: str) -> None:
  if _is_main_process():
    if _open_phase['description'] and not _open_phase['interrupted']:
      print(flush=True)  # below the open phase's line, not at its end
      _open_phase['interrupted'] = True
    print(text, flush=True)


@contextlib.contextmanager
def phase(description: str) -> Iterator[None]:
  """Prints `description...` and, once the block has finished, how long it took (on a line of
  its own if something was said in between)."""
  if not _is_main_process():
    yield
    return
  print(f'{description}...', end='', flush=True)
  _open_phase.update(description=description, interrupted=False)
  start = time.perf_counter()
  try:
    yield
  except BaseException:
    if not _open_phase['interrupted']:
      print(flush=True)
    raise
  else:
    took = f' {time.perf_counter() - start:.1f} s'
    print(f'{description}...{took}' if _open_phase['interrupted'] else took, flush=True)
  finally:
    _open_phase.update(description=None, interrupted=False)


def progress(iterable: Iterable, description: str, total: int | None = None) -> Iterable:
  """`iterable`, with a progress bar on a terminal."""
  return tqdm.tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True,
                   disable=None if _is_main_process() else True, file=sys.stdout)


def duration(seconds: float) -> str:
  """'21 s', '4 min 12 s', '1 h 03 min': a time as a reader says it."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  if hours:
    return f'{hours} h {rest // 60:02d} min'
  return f'{rest // 60} min {rest % 60:02d} s' if rest >= 60 else f'{rest} s'


def plural(count: float, noun: str) -> str:
  """'1 epoch', '2 epochs', '1.5 epochs', '1,000 images'."""
  number = f'{count:,}' if isinstance(count, int) else f'{count:,.3g}'
  return f'{number} {noun}' + ('' if count == 1 else 's')


class TrainingLine:
  """Formats one line per log period: epoch, step, loss, accuracy, learning rate, speed, model
  FLOP utilisation (MFU: the step's FLOPs per second over the devices' peak, where both are
  known) and ETA.

  Speed and the ETA are measured from the end of this session's first step, so that they leave
  out its compilation (and, on a resumed run, the restore)."""

  def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int,
               peak_flops_per_device: float | None = None):
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self.batch_size, self.peak_flops_per_device = batch_size, peak_flops_per_device
    self._since: tuple[int, float] | None = None  # (step, time) after the first step

  def first_step_done(self, step: int) -> None:
    """Called after every step; the first call (after compilation) starts the clock."""
    if self._since is None:
      self._since = (step, time.perf_counter())

  def format(self, step: int, scalars: dict, step_flops: float | None = None) -> str:
    epoch = step / self.steps_per_epoch
    parts = [f'epoch {epoch:6.2f}', f'step {step:>{len(str(self.total_steps))}}/{self.total_steps}']
    names = {'train_loss': 'loss {:.4f}', 'train_accuracy': 'accuracy {:.4f}',
             'learning_rate': 'lr {:.3g}'}
    parts += [form.format(scalars[key]) for key, form in names.items() if key in scalars]
    if self._since and step > self._since[0]:
      rate = (step - self._since[0]) / (time.perf_counter() - self._since[1])
      parts += [f'{rate:.2f} steps/s', f'{rate * self.batch_size:.0f} images/s']
      if step_flops and self.peak_flops_per_device:
        mfu = step_flops * rate / (self.peak_flops_per_device * jax.device_count())
        parts.append(f'MFU {100 * mfu:.1f}%')
      parts.append(f'ETA {duration((self.total_steps - step) / rate)}')
    return '  '.join(parts)
