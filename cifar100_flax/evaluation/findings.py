"""The report's words and tables, written from the numbers of evaluated runs: the results table
with the best of each row marked, the findings, the setup of each run, the best and worst classes
(ties said as ties), the class table and the conclusions.

Everything here is plain data (strings, lists of rows) for the document's template; nothing draws.
"""

import dataclasses
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from cifar100_flax import console
from cifar100_flax.data import cifar100
from cifar100_flax.evaluation.results import RunResults


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a table: its label and a cell per run; `best`: the indices of the marked cells."""
  label: str
  cells: list[str]
  best: tuple[int, ...] = ()


def percent(value: float) -> str:
  return f'{100 * value:.2f}%'


def _points(difference: float) -> str:
  return f'{100 * difference:+.1f} points'


def _flops(value: float) -> str:
  """'4.00 × 10¹¹'."""
  mantissa, exponent = f'{value:.2e}'.split('e')
  return f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPTS)}"


_SUPERSCRIPTS = str.maketrans('-0123456789', '⁻⁰¹²³⁴⁵⁶⁷⁸⁹')


# (label, value of an evaluation or None, its text, +1 if higher is better, -1 lower, 0 unmarked)
_METRICS: tuple[tuple[str, Callable[[dict], float | None], Callable, int], ...] = (
    ('Test top-1 accuracy', lambda e: e['top1_accuracy'], percent, 1),
    ('Test top-5 accuracy', lambda e: e['top5_accuracy'], percent, 1),
    ('Macro precision', lambda e: e['macro_precision'], percent, 1),
    ('Macro recall', lambda e: e['macro_recall'], percent, 1),
    ('Macro F1', lambda e: e['macro_f1'], percent, 1),
    ('Superclass top-1 accuracy', lambda e: e['coarse_top1_accuracy'], percent, 1),
    ('Expected calibration error', lambda e: e['calibration']['expected_calibration_error'],
     lambda v: f'{v:.3f}', -1),
    ('Parameters', lambda e: e.get('num_params'), lambda v: f'{v:,}', -1),
    ('Training time', lambda e: e.get('train_seconds'), console.duration, -1),
    ('Training FLOPs', lambda e: e.get('train_flops') or None, _flops, -1),
    ('Inference time per image', lambda e: e.get('inference_ms_per_image'),
     lambda v: f'{v:.2f} ms', -1),
)

BEST_MARK_EXPLAINED = ('Bold: the best of the runs in that row (the higher accuracy, precision, '
                       'recall and F1; the lower calibration error, size and cost).')


def results_table(runs: Sequence[RunResults]) -> list[Row]:
  """The study's table, one column per run; with more than one run, the best of each row marked."""
  rows = []
  for label, value_of, text, better in _METRICS:
    values = [value_of(run.evaluation) for run in runs]
    cells = ['–' if v is None else text(v) for v in values]
    known = [better * v for v in values if v is not None]
    best = tuple(i for i, v in enumerate(values)
                 if len(runs) > 1 and len(known) > 1 and v is not None and better
                 and better * v == max(known))
    rows.append(Row(label, cells, best))
  rows.append(Row('Training hardware', [run.evaluation.get('hardware') or 'not recorded'
                                        for run in runs]))
  return rows


def _f1(run: RunResults) -> np.ndarray:
  return np.asarray(run.evaluation['per_class']['f1'])


def _names(indices) -> str:
  return ', '.join(cifar100.CLASS_NAMES[i] for i in indices)


def superclass(index: int) -> str:
  """A superclass's name as words ('large man-made outdoor things')."""
  return cifar100.COARSE_CLASS_NAMES[index].replace('_', ' ')


def _superclass_accuracy(run: RunResults) -> np.ndarray:
  matrix = np.asarray(run.evaluation['coarse_confusion_matrix'])
  return np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)


def findings(runs: Sequence[RunResults]) -> str:
  """A paragraph of what the numbers say: which run wins, by how much, on which classes and
  superclasses; for one run, where it does well and badly."""
  ranked = sorted(runs, key=lambda r: -r.evaluation['top1_accuracy'])
  best = ranked[0]
  if len(runs) == 1:
    return _one_run(best)
  e = best.evaluation
  sentences = [f"{best.name} is the most accurate: test top-1 {percent(e['top1_accuracy'])}, "
               f"macro F1 {percent(e['macro_f1'])}."]
  for other in ranked[1:]:
    o = other.evaluation
    gain = _f1(best) - _f1(other)
    better, worse = int((gain > 0).sum()), int((gain < 0).sum())
    gaps = _superclass_accuracy(best) - _superclass_accuracy(other)
    widest, narrowest = int(np.argmax(gaps)), int(np.argmin(gaps))
    tied = len(gain) - better - worse
    sentences.append(
        f"Against {other.name} ({percent(o['top1_accuracy'])}) it gains "
        f"{_points(e['top1_accuracy'] - o['top1_accuracy'])} of top-1, "
        f"{_points(e['top5_accuracy'] - o['top5_accuracy'])} of top-5 and "
        f"{_points(e['macro_f1'] - o['macro_f1'])} of macro F1, and has the higher F1 on "
        f"{better} of the {len(gain)} classes ({other.name} on {worse}"
        + (f', {tied} tied' if tied else '') + '). '
        f"The largest gains are on {_named_gains(gain)}"
        + (f"; {other.name} does best, relatively, on {_named_gains(-gain)}" if worse else '')
        + f". By superclass its lead is largest on {superclass(widest)} "
        f"({_points(gaps[widest])})"
        + (f"; {other.name} leads most on {superclass(narrowest)} ({_points(-gaps[narrowest])})."
           if gaps[narrowest] < 0 else
           f" and smallest on {superclass(narrowest)} ({_points(gaps[narrowest])})."))
    sentences.append(_cost_sentence(best, other))
  return ' '.join(s for s in sentences if s)


def _named_gains(gain: np.ndarray, count: int = 3) -> str:
  order = np.argsort(-gain, kind='stable')[:count]
  return ', '.join(f'{cifar100.CLASS_NAMES[i]} ({gain[i]:+.2f} F1)' for i in order if gain[i] > 0)


def _cost_sentence(best: RunResults, other: RunResults) -> str:
  e, o = best.evaluation, other.evaluation
  parts = []
  if e.get('train_seconds') and o.get('train_seconds'):
    parts.append(f"{e['train_seconds'] / o['train_seconds']:.1f}x the training time "
                 f"({console.duration(e['train_seconds'])} against "
                 f"{console.duration(o['train_seconds'])})")
  if e.get('train_flops') and o.get('train_flops'):
    parts.append(f"{e['train_flops'] / o['train_flops']:.1f}x the training FLOPs")
  if e.get('num_params') and o.get('num_params'):
    parts.append(f"{e['num_params'] / o['num_params']:.1f}x the parameters")
  return f"It took {_and(parts)} of {other.name}." if parts else ''


def _one_run(run: RunResults) -> str:
  e = run.evaluation
  best, worst = ranked_classes(e['per_class'])
  pairs = e['most_confused_pairs'][:3]
  confused = '; '.join(f'{cifar100.CLASS_NAMES[t]} taken for {cifar100.CLASS_NAMES[p]} '
                       f'{console.plural(n, "time")}' for t, p, n in pairs)
  accuracy = _superclass_accuracy(run)
  return (f"{run.name} reaches test top-1 {percent(e['top1_accuracy'])} and top-5 "
          f"{percent(e['top5_accuracy'])} on the {e['num_examples']:,} test images, macro F1 "
          f"{percent(e['macro_f1'])}. Its best classes by F1 are {best.text}; its worst are "
          f"{worst.text}. By superclass it does best on "
          f"{superclass(int(np.argmax(accuracy)))} "
          f"({percent(accuracy.max())}) and worst on "
          f"{superclass(int(np.argmin(accuracy)))} "
          f"({percent(accuracy.min())}). "
          + (f"Its most frequent confusions: {confused}." if pairs else ''))


@dataclasses.dataclass(frozen=True)
class Ranked:
  """The classes at one end of the F1 ranking: `rows` (class, precision, recall, F1), and `text`,
  which says a tie at the cut as a tie ('apple, bee and 7 more at F1 0.00')."""
  rows: list[tuple[str, str, str, str]]
  text: str


def ranked_classes(per_class: dict, count: int = 5) -> tuple[Ranked, Ranked]:
  """The best and the worst `count` classes by F1 (`per_class`: an evaluation's). Where the class
  after the cut has the same F1 as the last one shown, the tie is said rather than broken by
  alphabetical order."""
  f1 = np.round(np.asarray(per_class['f1']), 4)
  ends = []
  for order in (np.argsort(-f1, kind='stable'), np.argsort(f1, kind='stable')):
    shown = list(order[:count])
    tied = [i for i in order[count:] if f1[i] == f1[shown[-1]]]
    if tied:  # the tie at the cut: every class of it, in one phrase
      at_cut = [i for i in shown if f1[i] == f1[shown[-1]]]
      shown = [i for i in shown if f1[i] != f1[shown[-1]]]
      tie = at_cut + tied
      text = ', '.join(cifar100.CLASS_NAMES[i] for i in shown) + ('; ' if shown else '')
      text += (f"{len(tie)} classes tied at F1 {f1[tie[0]]:.2f} ("
               f"{_names(tie[:6])}{', …' if len(tie) > 6 else ''})")
      shown = shown + tie
    else:
      text = ', '.join(f'{cifar100.CLASS_NAMES[i]} ({f1[i]:.2f})' for i in shown)
    rows = [(cifar100.CLASS_NAMES[i], f"{per_class['precision'][i]:.2f}",
             f"{per_class['recall'][i]:.2f}", f'{f1[i]:.2f}') for i in shown]
    ends.append(Ranked(rows, text))
  return ends[0], ends[1]


def _model_text(config: ml_collections.ConfigDict) -> str:
  kwargs = ', '.join(f'{k}={v}' for k, v in sorted(config.model.kwargs.items()))
  return f'{config.model.name} ({kwargs})' if kwargs else config.model.name


def _augmentation_text(config: ml_collections.ConfigDict) -> str:
  a = config.augment
  parts = []
  if a.crop_padding:
    parts.append(f"random crops after {a.crop_padding}-pixel "
                 f"{'reflection ' if a.crop_reflect else ''}padding")
  if a.flip:
    parts.append('alternating flips' if a.alternating_flip else 'random flips')
  for key, what in (('rotation_degrees', 'rotation ±{}°'), ('zoom', 'zoom ±{}'),
                    ('shear_degrees', 'shear ±{}°'), ('cutout_size', 'cutout {} px'),
                    ('random_erasing', 'random erasing p={}'), ('mixup_alpha', 'MixUp α={}'),
                    ('cutmix_alpha', 'CutMix α={}')):
    if a[key]:
      parts.append(what.format(a[key]))
  if a.auto_augment:
    parts.append({'rand': f'RandAugment ({a.rand_augment_ops} ops, magnitude '
                          f'{a.rand_augment_magnitude})',
                  'trivial': 'TrivialAugment'}.get(a.auto_augment, a.auto_augment))
  return ', '.join(parts) or 'none'


def _image_size_text(config: ml_collections.ConfigDict) -> str:
  side = config.data.image_size or cifar100.IMAGE_SHAPE[0]
  schedule = config.data.image_size_schedule
  text = (', then '.join(f'{size} px from epoch {start}' for start, size in schedule)
          if schedule else f'{side} px')
  return text + (f' (tested at {config.eval.image_size} px)' if config.eval.image_size else '')


def _optimiser_text(config: ml_collections.ConfigDict) -> str:
  o = config.optim
  text = f'{o.name}, learning rate {o.learning_rate:g}'
  if o.name == 'muon':
    text = (f'Muon for the convolution kernels (learning rate {o.muon.learning_rate:g}, '
            f'momentum {o.muon.momentum:g}), SGD for the rest (learning rate '
            f'{o.learning_rate:g}')
  if o.name in ('sgd', 'muon') and o.momentum:
    text += f", {'Nesterov ' if o.nesterov else ''}momentum {o.momentum:g}"
  if o.weight_decay:
    text += f', weight decay {o.weight_decay:g}'
  if o.grad_clip_norm:
    text += f', gradients clipped at norm {o.grad_clip_norm:g}'
  return text + (')' if o.name == 'muon' else '')


def _data_text(config: ml_collections.ConfigDict) -> str:
  train = cifar100.train_examples(config.data) - config.data.validation_size
  if not config.data.validation_size:
    return f'all {train:,} training images, no validation split'
  return (f'{train:,} training and {config.data.validation_size:,} validation images '
          f'(split seed {config.data.split_seed}); batches of {config.data.batch_size}')


def _trained_text(run: RunResults) -> str:
  ends = [r for r in run.history if 'epoch' in r]  # validated or not
  planned = console.plural(run.config.train.num_epochs, 'epoch')
  if not ends:
    return f'{planned} planned'
  trained = ends[-1]['epoch']
  if trained < run.config.train.num_epochs - 1e-6:
    return f'{console.plural(round(trained, 2), "epoch")} of {planned} (stopped early)'
  return planned


def _evaluated_text(run: RunResults) -> str:
  e = run.evaluation
  validation = [r for r in run.history if 'val_accuracy' in r]
  step = e.get('checkpoint_step')
  at = [r for r in validation if r['step'] == step]
  text = f'step {step}'
  if at:
    text += f", validation top-1 {percent(at[0]['val_accuracy'])}"
  tta = [what for what, on in (('flips', run.config.eval.flip_tta),
                                (f'{run.config.eval.translate_tta}-pixel shifts',
                                 run.config.eval.translate_tta)) if on]
  return text + (f"; test-time augmentation: {' and '.join(tta)}" if tta else '')


def _initialisation_text(config: ml_collections.ConfigDict) -> str:
  if not config.model.pretrained:
    return 'from scratch (random)'
  return f'ImageNet weights ({config.model.pretrained}), a new 100-class head'


def setup_table(runs: Sequence[RunResults]) -> list[Row]:
  """How each run was trained, from its config.json and history (ensembles: their members)."""
  rows: list[tuple[str, Callable[[RunResults], str]]] = [
      ('Model', lambda r: _model_text(r.config)),
      ('Initialisation', lambda r: _initialisation_text(r.config)),
      ('Image size', lambda r: _image_size_text(r.config)),
      ('Precision', lambda r: r.config.model.dtype),
      ('Optimiser', lambda r: _optimiser_text(r.config)),
      ('Schedule', lambda r: f'{r.config.schedule.name}, warm-up '
                             f'{console.plural(r.config.schedule.warmup_epochs, "epoch")}'),
      ('Epochs', _trained_text),
      ('Data', lambda r: _data_text(r.config)),
      ('Augmentation', lambda r: _augmentation_text(r.config)),
      ('Regularisation', lambda r: f'label smoothing {r.config.train.label_smoothing:g}'
                                   + (f', EMA of the weights (decay {r.config.train.ema_decay:g})'
                                      if r.config.train.ema_decay else '')),
      ('Seed', lambda r: str(r.config.train.seed)),
      ('Evaluated checkpoint', _evaluated_text),
  ]
  table = []
  for label, text in rows:
    cells = [('ensemble of ' + console.plural(len(r.evaluation['members']), 'run')
              if label == 'Model' else '–') if r.is_ensemble else text(r) for r in runs]
    table.append(Row(label, cells))
  return table


def class_table(runs: Sequence[RunResults]) -> tuple[list[str], list[list[str]]]:
  """Header and a row per class, ordered by superclass: name, superclass, then precision, recall
  and F1 of each run, and the support where classes differ in it."""
  support = runs[0].evaluation['per_class']['support']
  header = ['class', 'superclass']
  for run in runs:
    header += ([f'{run.name} P', 'R', 'F1'] if len(runs) > 1 else ['P', 'R', 'F1'])
  header += ['support'] if len(set(support)) > 1 else []
  rows = []
  for i in np.argsort(cifar100.FINE_TO_COARSE, kind='stable'):
    row = [cifar100.CLASS_NAMES[i], superclass(cifar100.FINE_TO_COARSE[i])]
    for run in runs:
      per_class = run.evaluation['per_class']
      row += [f"{per_class[key][i]:.2f}" for key in ('precision', 'recall', 'f1')]
    rows.append(row + ([str(support[i])] if len(set(support)) > 1 else []))
  return header, rows


def confused_pairs(run: RunResults, count: int = 10) -> list[tuple[str, str, str]]:
  """(true class, predicted as, 'n of the true class's test images') of the largest confusions."""
  support = run.evaluation['per_class']['support']
  return [(cifar100.CLASS_NAMES[t], cifar100.CLASS_NAMES[p], f'{n} of {support[t]}')
          for t, p, n in run.evaluation['most_confused_pairs'][:count]]


def conclusions(runs: Sequence[RunResults]) -> list[str]:
  """What the results say and what would most likely improve them, each from the data."""
  ranked = sorted(runs, key=lambda r: -r.evaluation['top1_accuracy'])
  best = ranked[0]
  e = best.evaluation
  points = []
  if len(runs) > 1:
    points.append(f"{best.name} is the model to keep: {percent(e['top1_accuracy'])} test top-1, "
                  f"{_points(e['top1_accuracy'] - ranked[-1].evaluation['top1_accuracy'])} over "
                  f"{ranked[-1].name}.")
  for run in runs:
    points.extend(_run_advice(run))
  never = {run.name: int((_f1(run) == 0).sum()) for run in runs if (_f1(run) == 0).any()}
  if never:
    points.append(f"{_and(list(never))} never {'gets' if len(never) == 1 else 'get'} "
                  f"{_and([str(n) for n in never.values()])} of the 100 classes right "
                  f"(F1 0){' respectively' if len(never) > 1 else ''}: too small a model or too "
                  f"short a training to tell all 100 apart.")
  trained = [run for run in runs if not run.is_ensemble]
  scratch = [run.name for run in trained if not run.config.model.pretrained]
  if scratch:
    points.append(f"{_and(scratch)} {'starts' if len(scratch) == 1 else 'start'} from random "
                  f"weights; an ImageNet-pretrained backbone (configs/efficientnet_lite0.py) "
                  f"usually adds the most accuracy per hour of training.")
  no_flips = [run.name for run in trained if not run.config.eval.flip_tta]
  if no_flips:
    points.append(f"Test-time flips (eval.flip_tta) would likely add some accuracy to "
                  f"{_and(no_flips)}, at twice the inference cost.")
  return points


def _and(names: Sequence[str]) -> str:
  return ' and '.join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _run_advice(run: RunResults) -> list[str]:
  """Advice for one run, each point triggered by a number of it."""
  e = run.evaluation
  advice = []
  validation = [r for r in run.history if 'val_accuracy' in r]
  train = [r for r in run.history if 'train_accuracy' in r]
  if validation and train and not run.is_ensemble:
    gap = train[-1]['train_accuracy'] - validation[-1]['val_accuracy']
    still_rising = (len(validation) > 1
                    and validation[-1]['val_accuracy'] >= max(r['val_accuracy']
                                                              for r in validation) - 1e-9)
    if gap > 0.15:
      advice.append(f"{run.name} fits its training images much better than the validation "
                    f"images (training accuracy {percent(train[-1]['train_accuracy'])} against "
                    f"{percent(validation[-1]['val_accuracy'])}): stronger augmentation "
                    f"(augment.auto_augment, mixup_alpha, cutmix_alpha) or more weight decay.")
    elif still_rising:
      advice.append(f"{run.name}'s validation accuracy was still at its best at the last "
                    f"epoch ({console.plural(round(validation[-1]['epoch'], 2), 'epoch')}): "
                    f"training longer (train.num_epochs) is the cheapest gain.")
  ece = e['calibration']['expected_calibration_error']
  if ece > 0.05:
    confidence = e['calibration']
    over = np.dot(confidence['bin_count'], np.asarray(confidence['bin_confidence'])
                  - np.asarray(confidence['bin_accuracy'])) > 0
    advice.append(f"{run.name}'s confidence is {'over' if over else 'under'}stated (ECE "
                  f"{ece:.3f}): temperature scaling on the validation split would make its "
                  f"probabilities trustworthy without changing a prediction.")
  return advice
