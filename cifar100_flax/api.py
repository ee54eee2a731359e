"""The Python API: what the command line does, as functions for notebooks and scripts.

  import cifar100_flax as cf
  cf.tune_for_cpu()                     # first, before anything runs JAX (on a CPU: faster)
  config = cf.get_config('smoke', {'train.num_epochs': 2})
  cf.train(config, 'runs/smoke')        # resumes, like the command line
  results = cf.evaluate('runs/smoke')   # eval_test.json's numbers, as a dict
  model = cf.load('runs/smoke')         # uint8 [N, 32, 32, 3] -> probabilities [N, 100]
  cf.report(['runs/smoke'])             # runs/smoke/report/report.pdf

Errors in what is given raise cifar100_flax.errors.UserError with the command line's one-line
message. examples/study.ipynb uses all of it.
"""

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from cifar100_flax.config import checks, loading
from cifar100_flax.cpu import tuning
from cifar100_flax.errors import ConfigError
from cifar100_flax.evaluation import evaluate as evaluation
from cifar100_flax.evaluation import report as reporting
from cifar100_flax.inference.predict import Classifier
from cifar100_flax.training import loop, writers

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def tune_for_cpu() -> bool:
  """Tunes the process for XLA:CPU where JAX will run on the CPU, as the command line does; call
  it before anything runs JAX (XLA reads its flags once). Whether it did."""
  return tuning.configure_if('auto')


def get_config(name: str = 'cnn',
               overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config of configs/NAME.py (or of a path to a config file), with `overrides` by dotted
  key ({'optim.learning_rate': 0.05}), checked as --config.KEY=VALUE would be."""
  path = pathlib.Path(name if name.endswith('.py') else CONFIGS / f'{name}.py')
  config = loading.config_from_file(str(path))
  for key, value in (overrides or {}).items():
    if key not in loading.flat_keys(config.to_dict()):
      raise ConfigError(f'{key} is not a config key (cifar100_flax/config/defaults.py has '
                        f'them all)')
    loading.set_key(config, key, value)
  checks.validate(config)
  return config


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains in `workdir`, or resumes the run there; its progress record (best step, best
  validation metric, training time...)."""
  return loop.train_and_evaluate(config, workdir)


def evaluate(workdir: str, split: str = 'test') -> dict:
  """Evaluates the run's best checkpoint on every test image (or the validation split), writes
  eval_{split}.json and predictions_{split}.npz, and returns the former's numbers."""
  return evaluation.evaluate(loading.load_config(workdir), workdir, split)


def load(workdir: str) -> Classifier:
  """The run's best checkpoint as a function of uint8 images [N, 32, 32, 3] giving class
  probabilities [N, 100] (cifar100_flax.data.cifar100.CLASS_NAMES names the classes)."""
  return Classifier(loading.load_config(workdir), workdir)


def history(workdir: str) -> list[dict]:
  """Every logged scalar of the run's training (history.jsonl), a dict per record."""
  return writers.read_history(workdir)


def report(workdirs: Sequence[str], output: str | None = None, paper: str = 'A4') -> pathlib.Path:
  """The report of one to three evaluated runs; the path of its PDF (the HTML and the figures'
  PNGs are beside it)."""
  return reporting.report(list(workdirs), output, paper=paper)['pdf']
