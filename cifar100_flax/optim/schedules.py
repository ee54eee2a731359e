"""Learning-rate schedules by name (optax)."""

from collections.abc import Callable

import ml_collections
import optax

from cifar100_flax.errors import require, require_non_negative

Schedule = Callable[[int], float]


def _warmup_cosine(config: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int) -> Schedule:
  warmup = min(int(config.schedule.warmup_epochs * steps_per_epoch), total_steps - 1)
  return optax.warmup_cosine_decay_schedule(0.0, config.optim.learning_rate, warmup, total_steps)


def _one_cycle(config: ml_collections.ConfigDict, total_steps: int,
               steps_per_epoch: int) -> Schedule:
  return optax.cosine_onecycle_schedule(total_steps, config.optim.learning_rate)


def _piecewise_constant(config: ml_collections.ConfigDict, total_steps: int,
                        steps_per_epoch: int) -> Schedule:
  boundaries = {int(f * total_steps): config.schedule.piecewise_scale
                for f in config.schedule.piecewise_boundaries}
  return optax.piecewise_constant_schedule(config.optim.learning_rate, boundaries)


def _triangular(config: ml_collections.ConfigDict, total_steps: int,
                steps_per_epoch: int) -> Schedule:
  """Linear from start x peak up to the peak at warmup_epochs, then linear to end x peak."""
  warmup = min(max(int(config.schedule.warmup_epochs * steps_per_epoch), 1), total_steps - 1)
  peak = config.optim.learning_rate
  return optax.join_schedules([
      optax.linear_schedule(config.schedule.triangular_start * peak, peak, warmup),
      optax.linear_schedule(peak, config.schedule.triangular_end * peak, total_steps - warmup)],
      [warmup])


def _constant(config: ml_collections.ConfigDict, total_steps: int,
              steps_per_epoch: int) -> Schedule:
  return optax.constant_schedule(config.optim.learning_rate)


SCHEDULES = {
    'constant': _constant,
    'warmup_cosine': _warmup_cosine,
    'one_cycle': _one_cycle,
    'triangular': _triangular,
    'piecewise_constant': _piecewise_constant,
    # The base rate is constant; optax.contrib.reduce_on_plateau scales the updates.
    'reduce_on_plateau': _constant,
}


def check_config(schedule: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `config.schedule` value that cannot work."""
  require(schedule.name in SCHEDULES, f'config.schedule.name={schedule.name!r} is unknown; choose '
          f'one of {sorted(SCHEDULES)}')
  require_non_negative(schedule, 'config.schedule', ('warmup_epochs', 'plateau_patience'))
  # Fractions of the peak rate (config.optim.learning_rate): below 0 the rate turns negative and
  # training climbs the loss; above 1 the peak is no peak.
  for key in ('triangular_start', 'triangular_end'):
    require(0 <= schedule[key] <= 1, f'config.schedule.{key} must be in [0, 1] (a fraction of '
            f'the peak learning rate), got {schedule[key]}')
  require(0 < schedule.piecewise_scale <= 1, f'config.schedule.piecewise_scale must be in (0, 1] '
          f'(the rate is multiplied by it at each boundary: 0 stops training there, a negative '
          f'one reverses it), got {schedule.piecewise_scale}')
  boundaries = list(schedule.piecewise_boundaries)
  require(all(isinstance(b, (int, float)) and 0 < b < 1 for b in boundaries)
          and boundaries == sorted(set(boundaries)),
          f'config.schedule.piecewise_boundaries must be increasing fractions of training in '
          f'(0, 1), e.g. (0.5, 0.75); got {schedule.piecewise_boundaries!r}')
  require(0 < schedule.plateau_factor < 1,
          f'config.schedule.plateau_factor must be in (0, 1), got {schedule.plateau_factor}')
