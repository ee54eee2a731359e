"""The study's report of one to three evaluated runs: a paginated PDF and the same document as
HTML, with its figures as PNGs, in a `report/` folder.

  python main.py --mode report --workdir runs/a [--workdir runs/b ...] [--output DIR]

Each workdir must hold `--mode eval`'s eval_test.json and predictions_test.npz, and the
config.json training wrote. The words come from evaluation/findings.py, the figures from
evaluation/plots.py, the layout from evaluation/document.py and its templates.
"""

import functools
import io
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure as Drawing

from cifar100_flax import console, files
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.errors import UserError
from cifar100_flax.evaluation import document, findings, gradcam, plots
from cifar100_flax.evaluation.results import RunResults, load_run, run_names
from cifar100_flax.training import restore, states

SHOWN_IMAGES = 8  # per run, in the augmented samples and the confident mistakes
GRADCAM_IMAGES = 7
_DPI = 200


def augmented_samples(config: ml_collections.ConfigDict, images: np.ndarray,
                      seed: int = 0) -> np.ndarray:
  """Training images as the training step sees them (preprocessing.preprocess with a key), mapped to
  [0, 1]."""
  # For config.augment.alternating_flip.
  flips = np.random.default_rng(seed).random(len(images)) < 0.5
  augmented = np.asarray(preprocessing.preprocess(jax.numpy.asarray(images), config,
                                                  key=jax.random.key(seed), flips=flips))
  low = augmented.min(axis=(1, 2, 3), keepdims=True)
  high = augmented.max(axis=(1, 2, 3), keepdims=True)
  return (augmented - low) / np.maximum(high - low, 1e-6)


def gradcam_maps(run: RunResults, images: np.ndarray,
                 layer: str | None = None) -> tuple[np.ndarray, str]:
  """Grad-CAM maps [N, H, W] of the run's best checkpoint for its predicted classes, and the layer
  they explain (`layer`, else the model's own choice, else the last feature map)."""
  state, _ = restore.restore_model(run.config, str(run.workdir))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply = functools.partial(state.apply_fn, variables, train=False)
  inputs = preprocessing.preprocess(jax.numpy.asarray(images), run.config)
  layer = (layer or getattr(states.create_model(run.config, 'xla'), 'gradcam_layer', None)
           or gradcam.feature_maps(apply, inputs[:1])[-1])
  maps = gradcam.grad_cam(apply, inputs, layer=layer, size=images.shape[1:3])
  return np.asarray(maps), layer


def misclassified(run: RunResults, count: int = SHOWN_IMAGES) -> np.ndarray:
  """Indices of the `count` most confidently wrong test predictions."""
  predictions = run.probs.argmax(axis=1)
  wrong = np.flatnonzero(predictions != run.labels)
  return wrong[np.argsort(-run.probs[wrong].max(axis=1), kind='stable')][:count]


def _image(drawing: Drawing, alt: str) -> document.Image:
  buffer = io.BytesIO()
  drawing.savefig(buffer, format='png', dpi=_DPI)
  width = drawing.get_figwidth() / document.TEXT_WIDTH_INCHES
  return document.Image(buffer.getvalue(), alt, round(100 * min(width, 1.0), 1))


def _slug(text: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in text)


class _Figures:
  """Numbers the figures in the order they are added."""

  def __init__(self):
    self.figures: list[document.Figure] = []

  def add(self, key: str, title: str, caption: str, drawings: dict[str, Drawing],
          tables: Sequence[document.Table] = ()) -> None:
    number = len(self.figures) + 1
    images = [_image(d, f'fig{number:02d}_{key}' + (f'_{_slug(name)}' if name else ''))
              for name, d in drawings.items()]
    self.figures.append(document.Figure(number, title, caption, images, list(tables)))


def _pairs_table(runs: Sequence[RunResults]) -> document.Table:
  columns = [findings.confused_pairs(run) for run in runs]
  rows = [[str(k + 1)] + [f'{c[k][0]} → {c[k][1]}: {c[k][2]}' if k < len(c) else ''
                          for c in columns]
          for k in range(max(len(c) for c in columns))]
  return document.Table(
      'Table 3. The most frequent confusions (true class → predicted class: how many of the '
      'true class\'s test images).', ['#'] + [run.name for run in runs], rows,
      compact=len(runs) > 1)


def _ranked_table(runs: Sequence[RunResults]) -> document.Table:
  rows = []
  for run in runs:
    best, worst = findings.ranked_classes(run.evaluation['per_class'])
    rows.append([run.name, best.text, worst.text])
  return document.Table('Table 4. The best and worst classes by F1 (a tie at the cut is named '
                        'as a tie, not broken).', ['run', 'best', 'worst'], rows)


def _draw(runs: Sequence[RunResults], test: cifar100.Split, train_images: np.ndarray,
          cams: dict[str, tuple[np.ndarray, str]]) -> list[document.Figure]:
  """Every figure, numbered in the order of the document."""
  trained = [run for run in runs if not run.is_ensemble]
  figures = _Figures()
  if trained:
    _add_training_figures(figures, trained, train_images)
  _add_class_figures(figures, runs)
  _add_image_figures(figures, runs, test, cams)
  return figures.figures


def _add_training_figures(figures: _Figures, trained: Sequence[RunResults],
                          train_images: np.ndarray) -> None:
  figures.add('curves', 'Training curves',
              'Top-1 accuracy and loss against the epoch: on the validation split (solid, '
              'dots at each validation; none for a run trained on every training image) and on '
              'the training batches (dashed, the running mean '
              'of each logging period, under augmentation, so below what the model scores on '
              'clean training images); right, the learning rate. A widening gap between the '
              'two is overfitting; a validation curve still rising at the end says more epochs '
              'would help.',
              {'': plots.training_curves({r.name: r.history for r in trained})})
  figures.add('augmented', 'Training images as the model sees them',
              'The first training images after each run\'s augmentation and preprocessing '
              '(at its training image size; colours rescaled for display), one row per run: '
              + ', '.join(r.name for r in trained) + '.',
              {r.name: plots.image_grid(augmented_samples(r.config, train_images), [''] * len(
                  train_images)) for r in trained})


def _add_class_figures(figures: _Figures, runs: Sequence[RunResults]) -> None:
  best = max(runs, key=lambda r: r.evaluation['top1_accuracy'])
  figures.add('superclass_accuracy', 'Accuracy per superclass',
              'The share of each superclass\'s test images given a class of that superclass '
              '(a wrong class of the right superclass counts), ordered by the first run\'s; the '
              'bars\' spread shows which groups of five classes are hard.',
              {'': plots.coarse_accuracy({r.name: r.evaluation['coarse_confusion_matrix']
                                          for r in runs}, cifar100.COARSE_CLASS_NAMES)})
  figures.add('superclass_confusion', f'Confusion between superclasses ({best.name})',
              f'Rows: the true superclass; columns: the predicted one; each cell the percentage '
              f'of the row\'s test images (empty: under 0.5%). The diagonal is the superclass '
              f'accuracy; large cells off it are the groups {best.name} mixes up. Each run\'s '
              f'full 100 × 100 matrix is a PNG in the report\'s folder.',
              {best.name: plots.coarse_confusion_matrix(
                  best.evaluation['coarse_confusion_matrix'], cifar100.COARSE_CLASS_NAMES)},
              [_pairs_table(runs)])
  figures.add('class_scores', 'Per-class F1, precision and recall',
              'Left: each class\'s F1, sorted, per run (the area under a curve is its macro F1; '
              'a curve reaching 0 means classes never recognised). Right: each class\'s precision '
              'against its recall; below the dotted diagonal a class is predicted too often '
              '(other classes are taken for it), above it too rarely. Table 5, the appendix, has '
              'every class.',
              {'': plots.class_scores({r.name: r.evaluation['per_class'] for r in runs})},
              [_ranked_table(runs)])
  figures.add('calibration', 'Calibration',
              'Left: the accuracy of the test images in each bin of top-1 confidence, against the '
              'dashed diagonal where confidence equals accuracy; a curve below it is '
              'overconfident. The expected calibration error (ECE) is the mean gap, weighted by '
              'the images in each bin (right).',
              {'': plots.reliability({r.name: r.evaluation['calibration'] for r in runs})})


def _add_image_figures(figures: _Figures, runs: Sequence[RunResults], test: cifar100.Split,
                       cams: dict[str, tuple[np.ndarray, str]]) -> None:
  names = cifar100.CLASS_NAMES
  mistakes = {}
  for run in runs:
    wrong = misclassified(run)
    predictions = run.probs.argmax(axis=1)
    mistakes[run.name] = plots.image_grid(test.images[wrong], [
        f'{names[run.labels[i]]}\n→ {names[predictions[i]]} {run.probs[i].max():.2f}'
        for i in wrong])
  figures.add('mistakes', 'The most confident mistakes',
              'Per run (' + ', '.join(mistakes) + '), the test images it got wrong with the '
              'highest confidence: true class, → the predicted class and its probability. Some '
              'are label noise or truly ambiguous pictures; the rest show what the model '
              'relies on.', mistakes)
  if cams:
    layers = sorted({layer for _, layer in cams.values()})
    shown = test.images[:GRADCAM_IMAGES]
    predicted = {run.name: [f'→ {names[k]}' for k in run.probs[:GRADCAM_IMAGES].argmax(axis=1)]
                 for run in runs if run.name in cams}
    figures.add('gradcam', 'Where the models look (Grad-CAM)',
                'The first test images with their true class (top row) and, a row per run ('
                + ', '.join(predicted) + '), the Grad-CAM map of the class the run predicted '
                '(→): the gradient-weighted activations of layer '
                f'{", ".join(layers)} (the last feature map unless --gradcam_layer said '
                'otherwise), upsampled to the image. Red: the regions that raised the predicted '
                'class\'s score most; blue: none.',
                {'': plots.heatmaps(shown, [names[k] for k in test.labels[:GRADCAM_IMAGES]],
                                    {name: cams[name][0] for name in predicted}, predicted)})


def _results_table(runs: Sequence[RunResults]) -> document.Table:
  rows = findings.results_table(runs)
  bold = frozenset((r, 1 + c) for r, row in enumerate(rows) for c in row.best)
  caption = f"Table 1. Test-set results ({runs[0].evaluation['num_examples']:,} images)."
  if len(runs) > 1:
    caption += ' ' + findings.BEST_MARK_EXPLAINED
  return document.Table(caption, [''] + [run.name for run in runs],
                        [[row.label] + row.cells for row in rows], bold)


def _class_tables(runs: Sequence[RunResults]) -> document.Table:
  header, rows = findings.class_table(runs)
  caption = ('Table 5. Every class on the test set, by superclass: precision (P), recall (R) and '
             'F1' + ('' if 'support' in header else ', of 100 test images each'))
  if len(runs) <= 2:  # without the superclass column, two halves side by side fit one page
    caption += ' (the five classes of each superclass are adjacent)'
    header, rows = header[:1] + header[2:], [row[:1] + row[2:] for row in rows]
    half = (len(rows) + 1) // 2
    header, rows = header * 2, [a + b for a, b in zip(rows[:half], rows[half:])]
  return document.Table(caption + '.', header, rows, compact=True)


def build(runs: Sequence[RunResults], test: cifar100.Split, train_images: np.ndarray,
          cams: dict[str, tuple[np.ndarray, str]]) -> document.Document:
  """The document: every number, word and drawing; nothing is written."""
  for run in runs:
    if not np.array_equal(test.ids, run.ids):
      raise UserError(f'{run.name}: predictions_test.npz does not follow the test split\'s '
                      f'order; evaluate the run again')
  figures = _draw(runs, test, train_images, cams)
  metadata = [('Runs', ', '.join(f'{run.name} ({run.config.model.name})' for run in runs)),
              ('Data', f'{runs[0].config.data.name}, {test.images.shape[0]:,} test images')]
  setup = findings.setup_table(runs)
  return document.Document(
      title='CIFAR-100 image classification: ' + ' against '.join(run.name for run in runs),
      metadata=metadata, results=_results_table(runs), findings=findings.findings(runs),
      setup=document.Table('Table 2. How each run was trained.', [''] + [r.name for r in runs],
                           [[row.label] + row.cells for row in setup]),
      figures=figures, conclusions=findings.conclusions(runs), classes=_class_tables(runs))


def write(doc: document.Document, confusion: dict[str, Drawing], output: str,
          paper: str = 'A4') -> dict[str, pathlib.Path]:
  """Writes report.pdf, report.html and every figure's PNG into `output`, all laid out first and
  then put in place together, so that a report that fails leaves the previous one as it was."""
  out = pathlib.Path(output)
  page = document.render_html(doc, paper)
  pngs = {image.alt: image.png for figure in doc.figures for image in figure.images}
  pngs.update({f'{_slug(name)}_confusion': _image(d, '').png for name, d in confusion.items()})
  out.mkdir(parents=True, exist_ok=True)
  written = {stem: out / f'{stem}.png' for stem in pngs}
  files.write_all({out / 'report.pdf': document.pdf(page), out / 'report.html': page,
                   **{written[stem]: png for stem, png in pngs.items()}})
  return {**written, 'html': out / 'report.html', 'pdf': out / 'report.pdf'}


def default_output(workdirs: Sequence[str]) -> str:
  return str(pathlib.Path(workdirs[0], 'report'))


def report(workdirs: Sequence[str], output: str | None = None,
           configs: Sequence[ml_collections.ConfigDict] | None = None,
           gradcam_layer: str | None = None, paper: str = 'A4') -> dict[str, pathlib.Path]:
  """The report of `workdirs` (each evaluated), written to `output` (default: the first
  workdir's report/ folder); returns the paths written.

  configs: each run's config (default: its config.json).

  gradcam_layer: the submodule path whose output Grad-CAM explains (default: the last feature map).
  Grad-CAM runs first, so that a layer the model does not have stops the report before it draws.
  """
  if not 1 <= len(workdirs) <= 3:
    raise UserError(f'a report compares one to three runs, not {len(workdirs)}')
  configs = configs or [None] * len(workdirs)
  runs = [load_run(workdir, config, name)
          for workdir, config, name in zip(workdirs, configs, run_names(workdirs), strict=True)]
  with console.phase(f'loading {runs[0].config.data.name}'):
    splits = cifar100.source(runs[0].config).load_splits(runs[0].config)
  cams = {}
  for run in runs:
    if not run.is_ensemble:
      with console.phase(f'Grad-CAM of {run.name}'):
        cams[run.name] = gradcam_maps(run, splits['test'].images[:GRADCAM_IMAGES], gradcam_layer)
  with console.phase(f'drawing the report of {console.plural(len(runs), "run")}'):
    doc = build(runs, splits['test'], splits['train'].images[:SHOWN_IMAGES], cams)
    confusion = {run.name: plots.confusion_matrix(np.asarray(run.evaluation['confusion_matrix']),
                                                  cifar100.CLASS_NAMES) for run in runs}
  with console.phase('laying out the PDF'):
    return write(doc, confusion, output or default_output(workdirs), paper)
