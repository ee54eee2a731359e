"""Knowledge distillation (Hinton et al., 2015): a run that learns from trained runs' predictions
(config.distill_from) as well as from the labels.

Each teacher predicts every training image once, before the first step, with its own evaluation
(its image size, normalisation, test-time augmentation, recalibrated BatchNorm); the mean of the
teachers' probabilities, softened by config.distill.temperature, travels with the images
(Split.teacher) into each batch, where steps.distillation_loss weighs it against the labels.
They are predictions of the unaugmented images, not of each augmented view: flips, shifts of a
few pixels and MixUp/CutMix (which mix them like the labels) keep what an image shows, while a
teacher run in every step would cost several student steps (Lite0 at 128 px predicts about 550
images a second on a 2-core CPU, where cnn_fast trains on 1,000). The predictions are kept in
the workdir (workdirs.TEACHER_PREDICTIONS) from the first start on: a resumed run reads the very
numbers it started with, and needs the teachers no more; a new run given a copy of them (the
same teachers; its images, or more) starts without asking the teachers again.
"""

import dataclasses
import io
import pathlib

import jax
import ml_collections
import numpy as np

from cifar100_flax import console, files
from cifar100_flax.config import checks, loading
from cifar100_flax.data.cifar100 import Split
from cifar100_flax.errors import require
from cifar100_flax.training import restore, sharding, steps, workdirs


def check_teachers(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError, before anything is read, for a teacher that is not a trained run (or is
  `workdir` itself), unless `workdir` already keeps their predictions."""
  named = checks.teachers(config)
  if not named or (pathlib.Path(workdir) / workdirs.TEACHER_PREDICTIONS).exists():
    return
  for teacher in named:
    folder = pathlib.Path(teacher)
    require(folder.resolve() != pathlib.Path(workdir).resolve(),
            f'config.distill_from names the workdir being trained ({teacher}): a run cannot teach '
            f'itself')
    require(folder.is_dir() and (folder / 'config.json').exists()
            and loading.has_checkpoints(folder / 'checkpoints'),
            f'config.distill_from: {teacher} is not a trained run (no config.json and '
            f'checkpoints there): train the teacher first, or name its workdir')


def with_teacher_targets(split: Split, config: ml_collections.ConfigDict, workdir: str) -> Split:
  """`split` with the teachers' soft targets of its images (none without config.distill_from):
  the ones `workdir` keeps, else the teachers' predictions, kept there for resuming."""
  named = checks.teachers(config)
  if not named:
    return split
  path = pathlib.Path(workdir) / workdirs.TEACHER_PREDICTIONS
  probs = _kept(path, named, split)
  if probs is None:
    probs = np.mean([_predictions(teacher, split) for teacher in named], axis=0)
    if jax.process_index() == 0:
      buffer = io.BytesIO()
      np.savez(buffer, probs=probs, ids=split.ids, teachers=np.array(named))
      files.write_bytes(path, buffer.getvalue())
  return dataclasses.replace(split, teacher=softened(probs, config.distill.temperature))


def _kept(path: pathlib.Path, teachers: list[str], split: Split) -> np.ndarray | None:
  """The probabilities `path` keeps of `split`'s images, in its order, if any; ConfigError if it
  lacks some of them or is of other `teachers` (the run's config.json and checkpoints then do not
  belong with it). It may hold more images: those of all 50,000 serve a run on 45,000 too."""
  if not path.exists():
    return None
  with np.load(path) as kept:
    probs, ids, named = kept['probs'], kept['ids'], list(kept['teachers'])
  row_of = {image_id: row for row, image_id in enumerate(ids)}
  rows = [row_of.get(image_id) for image_id in split.ids]
  require(named == teachers and None not in rows,
          f'{path} holds the predictions of other teachers or images ({", ".join(named)}) than '
          f'this run\'s: delete it to have config.distill_from\'s predict again')
  return probs[rows]


def _predictions(teacher: str, split: Split) -> np.ndarray:
  """float32 [N, classes]: `teacher`'s probabilities of `split`'s images, evaluated as its own
  config evaluates (the data of `split`, whatever the teacher's config says)."""
  config = loading.load_config(teacher)
  with console.phase(f'restoring the teacher {teacher}'):
    state, _ = restore.restore_model(config, teacher)
  mesh = sharding.create_mesh()
  state = sharding.replicate(state, mesh)
  _, probs = steps.evaluate_split(steps.jit_eval_step(config), state, split,
                                  config.eval.batch_size, mesh,
                                  f'the teacher {teacher} predicting {len(split):,} images')
  return probs.astype(np.float32)


def softened(probs: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log(probs) / temperature): for probs = softmax(z), softmax(z / temperature), the
  teachers' distribution at that temperature (1: probs themselves)."""
  logits = np.log(np.maximum(probs, np.finfo(np.float32).tiny)) / temperature
  return np.asarray(jax.nn.softmax(logits.astype(np.float32)))
