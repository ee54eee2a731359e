"""The report's figures, drawn with matplotlib: each function returns one Figure.

Figures are built without pyplot, so no global state keeps them alive and no display is needed.
"""

from collections.abc import Sequence

import matplotlib.colors
import numpy as np
from matplotlib.figure import Figure

from cifar100_flax.data import cifar100

# Matplotlib's default cycle, one colour per run in every figure.
_COLOURS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple')


def _subplots(rows: int = 1, columns: int = 1, *, figsize: tuple[float, float],
              layout: str | None = None, **kwargs):
  figure = Figure(figsize=figsize, layout=layout)
  return figure, figure.subplots(rows, columns, **kwargs)


def training_curves(histories: dict[str, Sequence[dict]]) -> Figure:
  """Top-1 accuracy and loss (training: running mean over each logging period, dashed;
  validation, where the run held a split out: solid) and the learning rate against the epoch, a
  colour per run."""
  fig, axes = _subplots(1, 3, figsize=(10, 2.8))
  for colour, (name, history) in zip(_COLOURS, histories.items()):
    # Every epoch's end is recorded with its step, validated or not (runs on all 50,000 images).
    ends = [r for r in history if 'epoch' in r]
    if not ends:
      continue
    epochs_per_step = ends[-1]['epoch'] / ends[-1]['step']
    train = [r for r in history if 'train_loss' in r]
    train_epochs = [r['step'] * epochs_per_step for r in train]
    validation = [r for r in history if 'val_accuracy' in r]
    for ax, key in zip(axes[:2], ('accuracy', 'loss')):
      ax.plot(train_epochs, [r[f'train_{key}'] for r in train], '--', color=colour, alpha=0.7,
              label=None if validation else name)
      ax.plot([r['epoch'] for r in validation], [r[f'val_{key}'] for r in validation], '.-',
              color=colour, label=name if validation else None)
    axes[2].plot(train_epochs, [r['learning_rate'] for r in train], color=colour, label=name)
  for ax, title in zip(axes, ('top-1 accuracy', 'loss', 'learning rate')):
    ax.set(xlabel='epoch', title=title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  return fig


def image_grid(images: np.ndarray, titles: Sequence[str], columns: int = 8) -> Figure:
  """uint8 or [0, 1] float HWC images in a grid, each with its title (the caption says the rest)."""
  rows = -(-len(images) // columns)
  fig, axes = _subplots(rows, columns, figsize=(0.95 * columns, 1.3 * rows), squeeze=False,
                        layout='constrained')
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, title in zip(axes.flat, images, titles):
    ax.imshow(image, interpolation='nearest')
    ax.set_title(title, fontsize=6.5)
  return fig


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
  """The 100x100 matrix, classes ordered by superclass so that its 5x5 blocks show;
  row-normalised."""
  order = np.argsort(cifar100.FINE_TO_COARSE, kind='stable')
  matrix = np.asarray(matrix)[np.ix_(order, order)]
  rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fig, ax = _subplots(figsize=(12, 11))
  # A square-root colour scale, so that the few-percent confusions off the diagonal show.
  image = ax.imshow(rates, cmap='viridis', norm=matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=1),
                    interpolation='nearest')
  ticks = np.arange(len(order))
  ax.set_xticks(ticks, [class_names[i] for i in order], rotation=90, fontsize=5)
  ax.set_yticks(ticks, [class_names[i] for i in order], fontsize=5)
  for edge in np.arange(5, len(order), 5) - 0.5:  # superclass blocks
    ax.axhline(edge, color='white', lw=0.3)
    ax.axvline(edge, color='white', lw=0.3)
  ax.set(xlabel='predicted', ylabel='true',
         title='Confusion matrix (row-normalised; by superclass)')
  fig.colorbar(image, ax=ax, fraction=0.03)
  fig.tight_layout()
  return fig


def coarse_confusion_matrix(matrix: np.ndarray, coarse_names: Sequence[str]) -> Figure:
  """The 20x20 superclass matrix, row-normalised, each cell labelled in percent."""
  matrix = np.asarray(matrix)
  rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fig, ax = _subplots(figsize=(5.6, 5.0))
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for (i, j), rate in np.ndenumerate(rates):
    if rate >= 0.005:
      ax.text(j, i, f'{100 * rate:.0f}', ha='center', va='center', fontsize=5.5,
              color='white' if rate > 0.5 else 'black')
  ticks = np.arange(len(coarse_names))
  names = [name.replace('_', ' ') for name in coarse_names]
  ax.set_xticks(ticks, names, rotation=90, fontsize=6.5)
  ax.set_yticks(ticks, names, fontsize=6.5)
  ax.set(xlabel='predicted superclass', ylabel='true superclass')
  fig.tight_layout()
  return fig


def class_scores(per_class_metrics: dict[str, dict]) -> Figure:
  """Per run: every class's F1, sorted (how many classes a run does well or badly), and each
  class's precision against its recall."""
  fig, (ranked, scatter) = _subplots(1, 2, figsize=(10, 3.4))
  for colour, (name, metrics) in zip(_COLOURS, per_class_metrics.items()):
    ranked.plot(np.sort(metrics['f1'])[::-1], color=colour, label=name)
    scatter.scatter(metrics['recall'], metrics['precision'], s=9, color=colour, alpha=0.7,
                    label=name)
  ranked.set(xlabel='classes, best first', ylabel='F1', ylim=(0, 1), title='F1 of each class')
  scatter.plot([0, 1], [0, 1], 'k:', lw=0.8)
  scatter.set(xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1),
              title='Precision and recall of each class')
  for ax in (ranked, scatter):
    ax.grid(alpha=0.3)
  ranked.legend(fontsize=7)
  fig.tight_layout()
  return fig


def coarse_accuracy(coarse_matrices: dict[str, np.ndarray],
                    coarse_names: Sequence[str]) -> Figure:
  """Accuracy of each superclass (the share of its test images given a class of that
  superclass), a bar per run, ordered by the first run's."""
  accuracies = {name: np.diag(m) / np.maximum(np.asarray(m).sum(axis=1), 1)
                for name, m in ((n, np.asarray(m)) for n, m in coarse_matrices.items())}
  order = np.argsort(next(iter(accuracies.values())), kind='stable')
  height = 0.8 / len(accuracies)
  fig, ax = _subplots(figsize=(6, 0.09 * len(order) * (1 + 0.5 * (len(accuracies) - 1)) + 0.7))
  for k, (colour, (name, accuracy)) in enumerate(zip(_COLOURS, accuracies.items())):
    ax.barh(np.arange(len(order)) + (k - (len(accuracies) - 1) / 2) * height, accuracy[order],
            height, color=colour, label=name)
  ax.set_yticks(np.arange(len(order)), [coarse_names[i].replace('_', ' ') for i in order],
                fontsize=7)
  ax.set(xlim=(0, 1), xlabel='accuracy', title='Accuracy per superclass')
  ax.grid(axis='x', alpha=0.3)
  ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  return fig


def reliability(calibrations: dict[str, dict]) -> Figure:
  """Per run: accuracy against confidence in each confidence bin, beside the diagonal of perfect
  calibration, and how many test images fall in each bin."""
  fig, (ax, counts) = _subplots(1, 2, figsize=(9, 3.2))
  for colour, (name, calibration) in zip(_COLOURS, calibrations.items()):
    edges = np.asarray(calibration['bin_edges'])
    centres = (edges[:-1] + edges[1:]) / 2
    filled = np.asarray(calibration['bin_count']) > 0
    ax.plot(centres[filled], np.asarray(calibration['bin_accuracy'])[filled], 'o-', ms=3,
            color=colour, label=f"{name} (ECE {calibration['expected_calibration_error']:.3f})")
    counts.plot(centres, calibration['bin_count'], 'o-', ms=3, color=colour, label=name)
  ax.plot([0, 1], [0, 1], 'k--', lw=0.8, label='perfect calibration')
  ax.set(xlabel='confidence (top-1 probability)', ylabel='accuracy', xlim=(0, 1), ylim=(0, 1),
         title='Reliability')
  ax.legend(fontsize=7, loc='upper left')
  counts.set(xlabel='confidence (top-1 probability)', ylabel='test images', xlim=(0, 1),
             title='Test images per confidence bin')
  for axis in (ax, counts):
    axis.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def heatmaps(images: np.ndarray, titles: Sequence[str], maps: dict[str, np.ndarray],
             labels: dict[str, Sequence[str]]) -> Figure:
  """The images (top row, each with its title) and, a row per run, the same images under that
  run's [0, 1] heatmaps (Grad-CAM), each with its label; the heatmaps' colour scale at the right."""
  count = len(images)
  fig, axes = _subplots(1 + len(maps), count, figsize=(0.95 * count + 0.9, 1.25 * (1 + len(maps))),
                        squeeze=False, layout='constrained')
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
  for column, (image, title) in enumerate(zip(images, titles)):
    axes[0, column].imshow(image)
    axes[0, column].set_title(title, fontsize=6.5)
  for row, (name, run_maps) in enumerate(maps.items(), start=1):
    axes[row, 0].set_ylabel(name, fontsize=7)
    for column, (image, heatmap) in enumerate(zip(images, run_maps)):
      axes[row, column].imshow(image)
      shown = axes[row, column].imshow(heatmap, cmap='jet', alpha=0.5, vmin=0, vmax=1)
      axes[row, column].set_title(labels[name][column], fontsize=6)
  bar = fig.colorbar(shown, ax=axes[1:, :].ravel().tolist(), fraction=0.03, pad=0.02,
                     ticks=(0, 1))
  bar.ax.set_yticklabels(['none', 'most'], fontsize=6.5)
  bar.set_label('evidence', fontsize=6.5)
  return fig
