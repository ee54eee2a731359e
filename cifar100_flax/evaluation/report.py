"""The analysis a user reads: figures, tables and a written summary of evaluated runs, as HTML
and PDF.

  python main.py --mode report --workdir runs/a [--workdir runs/b ...] [--output DIR]

Each workdir must hold `--mode eval`'s eval_test.json and predictions_test.npz, and the
config.json training wrote. Figures are PNGs in the output folder; report.html embeds them (one
self-contained file) and report.pdf has one page per figure after a summary page.
"""

import base64
import dataclasses
import functools
import html
import io
import json
import pathlib
import textwrap
import zipfile
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from cifar100_flax import console, files
from cifar100_flax.config import loading
from cifar100_flax.data import cifar100, preprocessing
from cifar100_flax.errors import UserError
from cifar100_flax.evaluation import gradcam, plots
from cifar100_flax.inference import restore
from cifar100_flax.training import states, writers

GALLERY_SIZE = 24
AUGMENTED_SAMPLES = 24
GRADCAM_IMAGES = 12


@dataclasses.dataclass
class RunResults:
  """What `--mode eval` and training left in one workdir."""
  workdir: pathlib.Path
  name: str
  config: ml_collections.ConfigDict
  evaluation: dict  # eval_test.json
  probs: np.ndarray  # [N, classes], test order
  labels: np.ndarray
  ids: np.ndarray
  history: list[dict]


def load_run(workdir: str, config: ml_collections.ConfigDict | None = None) -> RunResults:
  directory = pathlib.Path(workdir)
  evaluation_path = directory / 'eval_test.json'
  predictions_path = directory / 'predictions_test.npz'
  if not evaluation_path.exists() or not predictions_path.exists():
    raise UserError(f'{directory} has no test evaluation: run `python main.py --mode eval '
                    f'--workdir {directory} ...` first')
  try:
    evaluation = json.loads(evaluation_path.read_text())
    with np.load(predictions_path) as predictions:
      probs, labels, ids = predictions['probs'], predictions['labels'], predictions['ids']
  except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f'{directory}\'s evaluation cannot be read ({evaluation_path.name} or '
                    f'{predictions_path.name}: {type(e).__name__}: {e}): evaluate the run again '
                    f'with `python main.py --mode eval --workdir {directory}`') from e
  return RunResults(workdir=directory, name=directory.name,
             config=config or loading.load_config(workdir), evaluation=evaluation,
             probs=probs, labels=labels, ids=ids, history=writers.read_history(workdir))


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


def gradcam_maps(run: RunResults, images: np.ndarray, layer: str | None = None) -> np.ndarray:
  """Grad-CAM maps [N, 32, 32] of the run's best checkpoint for its predicted classes."""
  state, _ = restore.restore_model(run.config, str(run.workdir))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply = functools.partial(state.apply_fn, variables, train=False)
  inputs = preprocessing.preprocess(jax.numpy.asarray(images), run.config)
  # A model may name its own (a ViT's); else gradcam's default, the last feature map.
  layer = layer or getattr(states.create_model(run.config, 'xla'), 'gradcam_layer', None)
  return np.asarray(gradcam.grad_cam(apply, inputs, layer=layer, size=images.shape[1:3]))


def misclassified(run: RunResults, count: int = GALLERY_SIZE) -> np.ndarray:
  """Indices of the `count` most confidently wrong test predictions."""
  predictions = run.probs.argmax(axis=1)
  wrong = np.flatnonzero(predictions != run.labels)
  return wrong[np.argsort(-run.probs[wrong].max(axis=1), kind='stable')][:count]


def _summary_rows(runs: Sequence[RunResults]) -> list[dict]:
  rows = []
  for run in runs:
    e = run.evaluation
    rows.append({'run': run.name, 'model': e.get('model', ''), 'top-1': e['top1_accuracy'],
                 'top-5': e['top5_accuracy'], 'macro F1': e['macro_f1'],
                 'ECE': e['calibration']['expected_calibration_error'],
                 'parameters': e.get('num_params'),
                 'training (min)': (e['train_seconds'] / 60) if e.get('train_seconds') else None,
                 'inference (ms/image)': e.get('inference_ms_per_image')})
  return rows


def _format(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4f}' if value < 1 else f'{value:,.1f}'
  if isinstance(value, int):
    return f'{value:,}'
  return str(value)


def comparison_table(runs: Sequence[RunResults]) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the results table; the best top-1, top-5 and macro F1 marked with *."""
  rows = _summary_rows(runs)
  header = list(rows[0])
  best = {key: max(row[key] for row in rows) for key in ('top-1', 'top-5', 'macro F1')}
  table = [[_format(row[key]) + ('*' if len(rows) > 1 and best.get(key) == row[key] else '')
            for key in header] for row in rows]
  return header, table


def _run_text(run: RunResults) -> str:
  """A written paragraph of what the numbers say."""
  e, names = run.evaluation, run.evaluation['class_names']
  f1 = np.asarray(e['per_class']['f1'])
  order = np.argsort(f1, kind='stable')
  pairs = e['most_confused_pairs'][:3]
  confused = '; '.join(f'{names[t]} taken for {names[p]} {n} times' for t, p, n in pairs)
  history = [r for r in run.history if 'val_accuracy' in r]
  trained = (f"It trained for {history[-1]['epoch']:.0f} epochs; its best validation top-1 was "
             f"{max(r['val_accuracy'] for r in history):.4f}. ") if history else ''
  return (f"{run.name} ({e.get('model', '?')}, checkpoint step {e.get('checkpoint_step')}): "
          f"test top-1 {e['top1_accuracy']:.4f}, top-5 {e['top5_accuracy']:.4f}, macro F1 "
          f"{e['macro_f1']:.4f} over {e['num_examples']:,} test images; superclass top-1 "
          f"{e['coarse_top1_accuracy']:.4f}. {trained}Best classes by F1: "
          f"{', '.join(names[i] for i in order[::-1][:5])}; worst: "
          f"{', '.join(names[i] for i in order[:5])}. Most confused: {confused}. Expected "
          f"calibration error {e['calibration']['expected_calibration_error']:.3f} "
          f"(0 is perfectly calibrated).")


def _is_trained(run: RunResults) -> bool:
  """An ensemble has no training of its own, nor one checkpoint."""
  return not run.evaluation.get('members')


def run_figures(run: RunResults, test: cifar100.Split, train_images: np.ndarray,
                coarse_names: Sequence[str], cams: np.ndarray | None = None
                ) -> dict[str, Figure]:
  """name -> figure, for one run; `cams`: its Grad-CAM maps of test.images[:len(cams)]."""
  e, names = run.evaluation, run.evaluation['class_names']
  if not np.array_equal(test.ids, run.ids):
    raise UserError(f'{run.name}: predictions_test.npz does not follow the test split\'s order; '
                    f'evaluate the run again')
  wrong = misclassified(run)
  predictions = run.probs.argmax(axis=1)
  trained = _is_trained(run)
  figures = {}
  if trained:
    figures['curves'] = plots.training_curves(run.history)
    figures['augmented'] = plots.image_grid(
        augmented_samples(run.config, train_images), [''] * len(train_images),
        suptitle='Training images after the config\'s augmentation')
  figures.update({
      'confusion': plots.confusion_matrix(np.asarray(e['confusion_matrix']), names),
      'superclass_confusion': plots.coarse_confusion_matrix(
          np.asarray(e['coarse_confusion_matrix']), coarse_names),
      'per_class': plots.per_class(e['per_class'], names),
      'superclass_accuracy': plots.coarse_accuracy(np.asarray(e['coarse_confusion_matrix']),
                                                   coarse_names),
      'misclassified': plots.image_grid(
          test.images[wrong],
          [f'{names[run.labels[i]]}\n-> {names[predictions[i]]} {run.probs[i].max():.2f}'
           for i in wrong], suptitle='Most confident mistakes (true -> predicted, confidence)'),
      'reliability': plots.reliability(e['calibration']),
  })
  if cams is not None:
    shown = test.images[:len(cams)]
    figures['gradcam'] = plots.heatmaps(
        shown, cams,
        [f'{names[run.labels[i]]}\n-> {names[predictions[i]]}' for i in range(len(shown))])
  return figures


def _png(figure: Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=110, bbox_inches='tight')
  return buffer.getvalue()


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>'
                 for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _confused_pairs_table(run: RunResults) -> tuple[list[str], list[list[str]]]:
  names = run.evaluation['class_names']
  return (['true class', 'predicted as', 'test images'],
          [[names[t], names[p], str(n)] for t, p, n in run.evaluation['most_confused_pairs']])


def write_report(runs: Sequence[RunResults], output: str, test: cifar100.Split,
                 train_images: np.ndarray, coarse_names: Sequence[str],
                 cams: dict[str, np.ndarray] | None = None) -> dict[str, pathlib.Path]:
  """Writes <run>_<figure>.png, report.html and report.pdf into `output`; returns their paths.

  Everything is drawn before anything is written, and each file replaces its previous version
  whole, so that a report that fails leaves the previous one as it was."""
  out = pathlib.Path(output)
  header, table = comparison_table(runs)
  drawn = [(run, run_figures(run, test, train_images, coarse_names, (cams or {}).get(run.name)))
           for run in runs]
  summary = _text_page('CIFAR-100 report', header, table, [_run_text(r) for r, _ in drawn])
  sections = [f'<h1>CIFAR-100 report</h1><h2>Results</h2>{_html_table(header, table)}']
  pngs = {}
  for run, figures in drawn:
    sections.append(f'<h2>{html.escape(run.name)}</h2><p>{html.escape(_run_text(run))}</p>')
    for name, figure in figures.items():
      stem = f'{run.name}_{name}'
      pngs[stem] = _png(figure)
      encoded = base64.b64encode(pngs[stem]).decode('ascii')
      sections.append(f'<figure><img alt="{html.escape(stem)}" '
                      f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(name)}'
                      f'</figcaption></figure>')
      if name == 'superclass_confusion':
        sections.append('<h3>Most confused class pairs</h3>'
                        + _html_table(*_confused_pairs_table(run)))
  page = ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>CIFAR-100 report</title>'
          '<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}'
          'table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>'
          f'</head><body>{"".join(sections)}</body></html>')
  out.mkdir(parents=True, exist_ok=True)
  written = {}
  for stem, png in pngs.items():
    files.write_bytes(out / f'{stem}.png', png)
    written[stem] = out / f'{stem}.png'
  with files.replaced(out / 'report.pdf') as path, PdfPages(path) as pdf:
    for figure in [summary] + [f for _, figures in drawn for f in figures.values()]:
      pdf.savefig(figure)
  files.write_text(out / 'report.html', page)
  written.update(html=out / 'report.html', pdf=out / 'report.pdf')
  return written


def _text_page(title: str, header: Sequence[str], table: Sequence[Sequence[str]],
               paragraphs: Sequence[str]) -> Figure:
  """An A4 page with the results table and the written summaries."""
  figure = Figure(figsize=(8.27, 11.69))
  figure.text(0.06, 0.95, title, fontsize=16, weight='bold')
  ax = figure.add_axes((0.04, 0.72, 0.92, 0.2))
  ax.axis('off')
  ax.table(cellText=table, colLabels=header, loc='upper center').auto_set_font_size(True)
  text = '\n\n'.join(textwrap.fill(p, 100) for p in paragraphs)
  figure.text(0.06, 0.68, text, fontsize=8, va='top')
  return figure


def report(workdirs: Sequence[str], output: str | None = None,
           config: ml_collections.ConfigDict | None = None,
           gradcam_layer: str | None = None) -> dict[str, pathlib.Path]:
  """The report of `workdirs` (each evaluated), written to `output` (default: the first workdir).

  gradcam_layer: the submodule path whose output Grad-CAM explains (default: the last feature map).
  Grad-CAM runs first, so that a layer the model does not have stops the report before it draws.
  """
  runs = [load_run(workdir, config) for workdir in workdirs]
  with console.phase(f'loading {runs[0].config.data.name}'):
    splits = cifar100.source(runs[0].config).load_splits(runs[0].config)
  shown = splits['test'].images[:GRADCAM_IMAGES]
  cams = {}
  for run in filter(_is_trained, runs):
    with console.phase(f'Grad-CAM of {run.name}'):
      cams[run.name] = gradcam_maps(run, shown, gradcam_layer)
  with console.phase(f'drawing the report of {len(runs)} run{"s" * (len(runs) > 1)}'):
    return write_report(runs, output or workdirs[0], splits['test'],
                        splits['train'].images[:AUGMENTED_SAMPLES],
                        cifar100.COARSE_CLASS_NAMES, cams)
