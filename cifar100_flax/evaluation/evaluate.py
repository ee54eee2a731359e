"""Test-set evaluation of a trained workdir (eval_test.json, predictions_test.npz and a table)
and of several (an ensemble)."""

import io
import json
import pathlib
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from cifar100_flax import console, files
from cifar100_flax.data import cifar100
from cifar100_flax.errors import ConfigError
from cifar100_flax.evaluation import classification, findings, results
from cifar100_flax.training import restore, sharding, steps


def _print_summary(report: dict) -> None:
  rows = [('examples', f"{report['num_examples']:,}"),
          ('top-1 accuracy', f"{report['top1_accuracy']:.4f}"),
          ('top-5 accuracy', f"{report['top5_accuracy']:.4f}"),
          ('macro precision', f"{report['macro_precision']:.4f}"),
          ('macro recall', f"{report['macro_recall']:.4f}"),
          ('macro F1', f"{report['macro_f1']:.4f}"),
          ('superclass top-1', f"{report['coarse_top1_accuracy']:.4f}"),
          ('calibration error (ECE)',
           f"{report['calibration']['expected_calibration_error']:.4f}")]
  best, worst = findings.ranked_classes(report['per_class'])
  rows += [('best F1', best.text), ('worst F1', worst.text)]
  width = max(len(name) for name, _ in rows)
  print('\n'.join(f'{name:<{width}}  {value}' for name, value in rows))


def _inference_ms_per_image(jitted_eval_step, state, test, batch_size, mesh) -> float:
  """Milliseconds per image of the compiled evaluation step, timed on two batches of test images."""
  sample = test.take(np.arange(min(len(test), 2 * batch_size)))
  start = time.perf_counter()
  steps.evaluate_split(jitted_eval_step, state, sample, batch_size, mesh)
  return 1000 * (time.perf_counter() - start) / len(sample)


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: str = 'test') -> dict:
  """Restores the best checkpoint of `workdir` and evaluates every image of `split`: the 10,000
  test images, or the validation carve-out (for choosing evaluation settings such as
  eval_image_size without looking at the test set). Writes eval_{split}.json and
  predictions_{split}.npz."""
  with console.phase(f'restoring {workdir}'):
    state, progress = restore.restore_model(config, workdir)
  mesh = sharding.create_mesh()
  state = sharding.replicate(state, mesh)
  with console.phase(f'loading the {config.data.name} {split} split'):
    test = cifar100.source(config).load_splits(config, with_train=split != 'test')[split]
  if not len(test):
    raise ConfigError(f'the {split} split is empty (config.data.validation_size=0)')
  jitted_eval_step = steps.jit_eval_step(config)
  _, probs = steps.evaluate_split(jitted_eval_step, state, test, config.eval.batch_size, mesh,
                                  f'evaluating {len(test):,} {split} images')
  report = classification.classification_report(probs, test.labels, test.coarse_labels)
  names = list(cifar100.CLASS_NAMES)
  report.update(checkpoint_step=int(jax.device_get(state.step)), model=config.model.name,
                class_names=names, train_seconds=progress.get('train_seconds'),
                train_flops=progress.get('train_flops'), hardware=progress.get('hardware'),
                num_params=sum(int(x.size) for x in jax.tree.leaves(state.params)),
                inference_ms_per_image=_inference_ms_per_image(jitted_eval_step, state, test,
                                                               config.eval.batch_size, mesh))
  if jax.process_index() == 0:
    report = _write(pathlib.Path(workdir), split, report, test.labels, test.coarse_labels, probs,
                    test.ids)
  return report


def _write(out: pathlib.Path, split: str, report: dict, labels: np.ndarray,
           coarse_labels: np.ndarray, probs: np.ndarray, ids: np.ndarray,
           config: ml_collections.ConfigDict | None = None) -> dict:
  """Writes eval_SPLIT.json, predictions_SPLIT.npz (and `config`'s config.json) together; the
  JSON records the predictions' hash, so that a pair of two evaluations is found when read.
  Returns the report as written."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, labels=labels, coarse_labels=coarse_labels,
                      probs=probs.astype(np.float32), ids=ids)
  report = {**report, results.PREDICTIONS_HASH: results.hash_of(buffer.getvalue())}
  contents = {out / f'predictions_{split}.npz': buffer.getvalue(),
              out / f'eval_{split}.json': json.dumps(report, indent=1)}
  if config is not None:
    contents[out / 'config.json'] = config.to_json_best_effort(indent=1)
  out.mkdir(parents=True, exist_ok=True)
  files.write_all(contents)
  _print_summary(report)
  print(f'wrote {out / f"eval_{split}.json"} (every number) and {out / f"predictions_{split}.npz"} '
        f'(each image\'s probabilities); `--mode report --workdir {out}` draws them')
  return report


def evaluate_ensemble(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                      output: str) -> dict:
  """Evaluates each run, then the mean of their test softmax outputs; the latter goes to `output`.

  `output` gets eval_test.json (with the members listed) and predictions_test.npz like a run, and
  the first member's config.json, so that `--mode report` can show the ensemble beside its members.
  """
  members = [evaluate(config, workdir) for config, workdir in zip(configs, workdirs)]
  saved = [np.load(pathlib.Path(workdir) / 'predictions_test.npz') for workdir in workdirs]
  probs = np.mean([s['probs'] for s in saved], axis=0)
  labels, coarse_labels, ids = saved[0]['labels'], saved[0]['coarse_labels'], saved[0]['ids']
  report = classification.classification_report(probs, labels, coarse_labels)
  report.update(
      model='ensemble', members=[str(w) for w in workdirs], class_names=members[0]['class_names'],
      **{key: sum(m[key] for m in members) if all(m.get(key) is not None for m in members) else None
         for key in ('train_seconds', 'train_flops', 'num_params', 'inference_ms_per_image')})
  if jax.process_index() == 0:
    print(f'ensemble of {len(workdirs)}:')
    _write(pathlib.Path(output), 'test', report, labels, coarse_labels, probs, ids, configs[0])
  return report
