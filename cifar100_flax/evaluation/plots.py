"""The report's figures, drawn with matplotlib: each function returns one Figure.

Figures are built without pyplot, so no global state keeps them alive and no display is needed.
"""

from collections.abc import Sequence

import matplotlib.colors
import numpy as np
from matplotlib.figure import Figure

from cifar100_flax.data import cifar100


def _subplots(rows: int = 1, columns: int = 1, *, figsize: tuple[float, float], **kwargs):
  figure = Figure(figsize=figsize)
  return figure, figure.subplots(rows, columns, **kwargs)


def training_curves(history: Sequence[dict]) -> Figure:
  """Accuracy and loss (training and validation) and the learning rate, against the epoch."""
  validation = [r for r in history if 'val_accuracy' in r]
  train = [r for r in history if 'train_loss' in r]
  epochs_per_step = (validation[-1]['epoch'] / validation[-1]['step']) if validation else None
  fig, axes = _subplots(1, 3, figsize=(13, 3.6))
  for ax, key in zip(axes[:2], ('accuracy', 'loss')):
    if train and epochs_per_step:
      ax.plot([r['step'] * epochs_per_step for r in train], [r[f'train_{key}'] for r in train],
              label='training (running)', alpha=0.8)
    ax.plot([r['epoch'] for r in validation], [r[f'val_{key}'] for r in validation], 'o-',
            label='validation')
    ax.set(xlabel='epoch', title=key)
    ax.legend()
    ax.grid(alpha=0.3)
  if train and epochs_per_step:
    axes[2].plot([r['step'] * epochs_per_step for r in train], [r['learning_rate'] for r in train])
  axes[2].set(xlabel='epoch', title='learning rate')
  axes[2].grid(alpha=0.3)
  fig.tight_layout()
  return fig


def image_grid(images: np.ndarray, titles: Sequence[str], columns: int = 8,
               suptitle: str = '') -> Figure:
  """uint8 or [0, 1] float HWC images in a grid, each with its title."""
  rows = -(-len(images) // columns)
  fig, axes = _subplots(rows, columns, figsize=(1.6 * columns, 2.1 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, title in zip(axes.flat, images, titles):
    ax.imshow(image, interpolation='nearest')
    ax.set_title(title, fontsize=7)
  if suptitle:
    fig.suptitle(suptitle)
  fig.tight_layout()
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
  fig, ax = _subplots(figsize=(10, 9))
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for (i, j), rate in np.ndenumerate(rates):
    if rate >= 0.005:
      ax.text(j, i, f'{100 * rate:.0f}', ha='center', va='center', fontsize=6,
              color='white' if rate > 0.5 else 'black')
  ticks = np.arange(len(coarse_names))
  ax.set_xticks(ticks, coarse_names, rotation=90, fontsize=7)
  ax.set_yticks(ticks, coarse_names, fontsize=7)
  ax.set(xlabel='predicted superclass', ylabel='true superclass', title='Superclass confusion (%)')
  fig.tight_layout()
  return fig


def per_class(per_class_metrics: dict, class_names: Sequence[str], count: int = 10) -> Figure:
  """Precision, recall and F1 of the `count` best and worst classes by F1."""
  f1 = np.asarray(per_class_metrics['f1'])
  order = np.argsort(f1, kind='stable')
  fig, axes = _subplots(1, 2, figsize=(13, 4), sharey=True)
  for ax, chosen, title in ((axes[0], order[::-1][:count], f'best {count} by F1'),
                            (axes[1], order[:count], f'worst {count} by F1')):
    x = np.arange(len(chosen))
    for offset, key in zip((-0.27, 0, 0.27), ('precision', 'recall', 'f1')):
      ax.bar(x + offset, np.asarray(per_class_metrics[key])[chosen], 0.27, label=key)
    ax.set_xticks(x, [class_names[i] for i in chosen], rotation=45, ha='right', fontsize=8)
    ax.set(title=title, ylim=(0, 1))
    ax.grid(axis='y', alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  return fig


def coarse_accuracy(coarse_matrix: np.ndarray, coarse_names: Sequence[str]) -> Figure:
  """Recall of each superclass (the share of its test images given a class of that superclass)."""
  coarse_matrix = np.asarray(coarse_matrix)
  recall = np.diag(coarse_matrix) / np.maximum(coarse_matrix.sum(axis=1), 1)
  order = np.argsort(recall, kind='stable')
  fig, ax = _subplots(figsize=(7, 5))
  ax.barh(np.arange(len(order)), recall[order])
  ax.set_yticks(np.arange(len(order)), [coarse_names[i] for i in order], fontsize=8)
  ax.set(xlim=(0, 1), xlabel='superclass accuracy', title='Accuracy per superclass')
  ax.grid(axis='x', alpha=0.3)
  fig.tight_layout()
  return fig


def reliability(calibration: dict) -> Figure:
  """Accuracy against confidence per bin, with the diagonal of perfect calibration."""
  edges = np.asarray(calibration['bin_edges'])
  centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
  fig, (ax, counts) = _subplots(2, 1, figsize=(5, 6), sharex=True,
                                   gridspec_kw=dict(height_ratios=(3, 1)))
  ax.bar(centres, calibration['bin_accuracy'], width, edgecolor='black', label='accuracy')
  ax.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
  ax.set(ylabel='accuracy', xlim=(0, 1), ylim=(0, 1),
         title=f"Reliability (ECE {calibration['expected_calibration_error']:.3f})")
  ax.legend(loc='upper left')
  counts.bar(centres, calibration['bin_count'], width, color='grey')
  counts.set(xlabel='confidence (top-1 probability)', ylabel='test images')
  fig.tight_layout()
  return fig


def heatmaps(images: np.ndarray, maps: np.ndarray, titles: Sequence[str],
             columns: int = 6) -> Figure:
  """Each image above the same image overlaid with its [0, 1] heatmap (Grad-CAM)."""
  count = len(images)
  columns = min(columns, count)
  rows = -(-count // columns)
  fig, axes = _subplots(2 * rows, columns, figsize=(1.9 * columns, 3.9 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for index, (image, heatmap, title) in enumerate(zip(images, maps, titles)):
    row, column = 2 * (index // columns), index % columns
    top, bottom = axes[row, column], axes[row + 1, column]
    top.imshow(image)
    top.set_title(title, fontsize=7)
    bottom.imshow(image)
    bottom.imshow(heatmap, cmap='jet', alpha=0.45, vmin=0, vmax=1)
  fig.tight_layout()
  return fig
