"""What training and evaluation act on: `TrainState` (with its EMA copy), `ModelState`
(a trained model without its optimiser), the model built for the platform, and `Progress` (the
training loop's state, saved beside the train state in every checkpoint, checked when read)."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, get_args

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import early_stopping, train_state

from cifar100_flax import models
from cifar100_flax.config import loading
from cifar100_flax.cpu import onednn
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.models import layer_set
from cifar100_flax.optim import optimizers, schedules


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # the run's key; step k uses fold_in(rng, k), so resuming needs nothing else
  # With config.train.ema_decay: {'params', 'batch_stats'} averaged over the steps; else None.
  ema: Any = None

  def with_variables(self, params: Any, batch_stats: Any) -> 'TrainState':
    """This state with other weights (pretrained ones), the EMA restarted from them."""
    ema = None if self.ema is None else _copy({'params': params, 'batch_stats': batch_stats})
    return self.replace(params=params, batch_stats=batch_stats, ema=ema)


def _copy(tree: Any) -> Any:
  # The EMA starts equal to the weights but in buffers of its own: the step donates both.
  return jax.tree.map(jnp.copy, tree)


class ModelState(flax.struct.PyTreeNode):
  """A trained model without its optimiser: what evaluation and inference need."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  params: Any
  batch_stats: Any
  step: jax.Array  # the training step the variables come from


def uses_cpu_speed_path(config: ml_collections.ConfigDict) -> bool:
  """config.cpu.speed_path, or (None) whether JAX's platform is the CPU."""
  if config.cpu.speed_path is not None:
    return config.cpu.speed_path
  return jax.default_backend() == 'cpu'


def create_model(config: ml_collections.ConfigDict,
                 conv_backend: str | None = None) -> nn.Module:
  """config.model.name, built from Flax's layers, or on the CPU speed path (uses_cpu_speed_path)
  from its layers with the convolutions of `conv_backend` ('onednn' or 'xla'; default:
  config.cpu.conv_backend resolved, which builds the oneDNN extension the first time it is
  chosen)."""
  layers = layer_set.FLAX
  if uses_cpu_speed_path(config):
    layers = layer_set.cpu(conv_backend or onednn.resolve(config.cpu.conv_backend))
  return models.create_model(config.model.name, cifar100.NUM_CLASSES, config.model.dtype,
                             layers=layers, **config.model.kwargs)


def newton_schulz_product(config: ml_collections.ConfigDict) -> Callable:
  """What Muon's Newton-Schulz multiplies with: oneDNN's matmul where it runs in bfloat16 on a
  CPU path with oneDNN's bfloat16 kernels (XLA's dot computes bfloat16 at float32's speed on a
  CPU); XLA's otherwise."""
  if (config.optim.name == 'muon' and config.optim.muon.newton_schulz_dtype == 'bfloat16'
      and uses_cpu_speed_path(config) and onednn.resolve(config.cpu.conv_backend) == 'onednn'
      and onednn.takes_bfloat16()):
    return onednn.product
  return optimizers.xla_product


def _init_variables(model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array,
                    images: np.ndarray) -> dict:
  return model.init(rng, preprocessing.preprocess(images, config), train=False)


def abstract_variables(model: nn.Module, config: ml_collections.ConfigDict) -> dict:
  """The shapes and dtypes of the model's {'params', 'batch_stats'}, computed without running it."""
  images = jax.ShapeDtypeStruct((1, *cifar100.IMAGE_SHAPE), jnp.uint8)
  variables = jax.eval_shape(functools.partial(_init_variables, model, config),
                             jax.random.PRNGKey(0), images)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int,
                       sample_images: np.ndarray | None = None,
                       model: nn.Module | None = None) -> tuple[TrainState, schedules.Schedule]:
  """A freshly initialised state, and the learning-rate schedule its optimiser follows.

  `sample_images` (uint8 training images) are what the model is initialised on; models that fit
  some weights to the data (airbench's whitening) need them, others only use their shape.
  `model`: default `create_model(config)`.
  """
  tx, schedule = optimizers.create_optimizer(config, config.train.num_epochs * steps_per_epoch,
                                             steps_per_epoch, newton_schulz_product(config))
  model = model or create_model(config)
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.train.seed))
  if sample_images is None:
    sample_images = np.zeros((1, *cifar100.IMAGE_SHAPE), np.uint8)
  variables = jax.jit(functools.partial(_init_variables, model, config))(init_rng, sample_images)
  batch_stats = variables.get('batch_stats', {})
  ema = (_copy({'params': variables['params'], 'batch_stats': batch_stats})
         if config.train.ema_decay else None)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=batch_stats, rng=run_rng, ema=ema)
  return state, schedule


def model_to_evaluate(state: TrainState) -> ModelState:
  """What validation, testing and export use: the EMA weights when the run keeps them."""
  variables = (state.ema if state.ema is not None
               else {'params': state.params, 'batch_stats': state.batch_stats})
  return ModelState(apply_fn=state.apply_fn, step=state.step, **variables)


def with_evaluated_batch_stats(state: TrainState, batch_stats: Any) -> TrainState:
  """`state` whose evaluated model (see model_to_evaluate) has these BatchNorm statistics."""
  if state.ema is not None:
    return state.replace(ema={**state.ema, 'batch_stats': batch_stats})
  return state.replace(batch_stats=batch_stats)


@dataclasses.dataclass
class Progress:
  """The training loop's state beside the train state, saved with every checkpoint as JSON."""
  stopper: early_stopping.EarlyStopping
  train_seconds: float = 0.0  # in the training loop, over every session
  total_steps: int = 0
  steps_per_epoch: int = 0
  train_flops: float | None = 0.0  # None: the backend did not count a step's FLOPs
  best_step: int | None = None
  best_metric: float | None = None
  best_metric_name: str | None = None
  # What the saved BatchNorm statistics were recalibrated on (recalibration_record), if they were.
  recalibration: dict | None = None
  hardware: str | None = None  # what it trained on (hardware.describe), each in turn if it moved

  def to_json(self) -> dict:
    saved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'stopper'}
    return {**saved, 'early_stopping': dataclasses.asdict(self.stopper)}

  @classmethod
  def from_json(cls, saved: dict, config: ml_collections.ConfigDict) -> 'Progress':
    """A record read back (one progress_problem passes), its fields of a later version left out."""
    fields = {k: v for k, v in saved.items() if k in _PROGRESS_FIELDS}
    return cls(stopper=early_stopper(config, saved.get('early_stopping')), **fields)


def early_stopper(config: ml_collections.ConfigDict,
                  saved: dict | None = None) -> early_stopping.EarlyStopping:
  """The early stopper of `config`, or of a checkpoint's record `saved` (its known fields)."""
  # flax's EarlyStopping minimises, so metrics to maximise are negated on the way in; and it stops
  # at the (patience + 1)-th evaluation without improvement, so it gets patience - 1.
  patience = config.early_stopping.patience - 1 if config.early_stopping.patience else 2**31
  stopper = early_stopping.EarlyStopping(min_delta=config.early_stopping.min_delta,
                                         patience=patience)
  return stopper.replace(**{k: v for k, v in (saved or {}).items() if k in _STOPPER_FIELDS})


def _field_types(record: type) -> dict[str, Any]:
  return {field.name: field.type for field in dataclasses.fields(record)}


_PROGRESS_FIELDS = {name: kind for name, kind in _field_types(Progress).items()
                    if name != 'stopper'}  # saved as 'early_stopping', flax's fields
_STOPPER_FIELDS = _field_types(early_stopping.EarlyStopping)


def progress_problem(saved: Any) -> str | None:
  """What keeps `saved`, a progress record read from a checkpoint, from being used, if anything:
  a record that is no JSON object, or a field of another type than Progress's (or than flax's
  EarlyStopping's, in its early_stopping). A field this version does not know is passed over: a
  later version's, which nothing here reads."""
  return (_record_problem(saved, _PROGRESS_FIELDS, 'the progress record')
          or _record_problem(saved.get('early_stopping', {}), _STOPPER_FIELDS,
                             'the progress record\'s early_stopping'))


def _record_problem(record: Any, types: dict[str, Any], what: str) -> str | None:
  if not isinstance(record, dict):
    return f'{what} is of type {type(record).__name__}, not an object'
  for name, value in record.items():
    if name not in types:
      continue
    kinds = get_args(types[name]) or (types[name],)  # (float, NoneType) of float | None
    wanted = [kind for kind in kinds if kind is not type(None)]
    if not any(loading.is_json_of(value, kind, nullable=len(wanted) < len(kinds))
               for kind in wanted):
      return f'{what} has {name}={value!r}, not {" or ".join(k.__name__ for k in kinds)}'
  return None
