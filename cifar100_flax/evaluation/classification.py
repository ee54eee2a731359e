"""The numpy classification report of an evaluation: accuracies, per-class precision,
recall and F1, confusion matrix, calibration."""

import numpy as np

from cifar100_flax.data import cifar100


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """[true, predicted] counts."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """0 where the denominator is 0 (a class never predicted has precision 0, as in scikit-learn)."""
  return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)


def calibration(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
  """Reliability bins of the top-1 confidence and the expected calibration error (ECE).

  Written here because none of the project's libraries has it (clu, optax, tfds); equal-width bins
  as in Guo et al. 2017, "On Calibration of Modern Neural Networks".
  """
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.clip(np.searchsorted(edges, confidence, side='left') - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins).astype(np.float64)
  accuracy = _safe_divide(np.bincount(bins, correct, num_bins), count)
  mean_confidence = _safe_divide(np.bincount(bins, confidence, num_bins), count)
  return {'expected_calibration_error': float(np.sum(count * np.abs(accuracy - mean_confidence))
                                              / len(labels)),
          'bin_edges': edges.tolist(), 'bin_count': count.astype(int).tolist(),
          'bin_accuracy': accuracy.tolist(), 'bin_confidence': mean_confidence.tolist()}


def most_confused_pairs(matrix: np.ndarray, count: int = 20) -> list[tuple[int, int, int]]:
  """(true class, predicted class, test images) of the largest off-diagonal confusion counts."""
  off_diagonal = np.array(matrix, copy=True)
  np.fill_diagonal(off_diagonal, 0)
  order = np.argsort(-off_diagonal, axis=None, kind='stable')[:count]
  return [(int(t), int(p), int(off_diagonal[t, p]))
          for t, p in zip(*np.unravel_index(order, off_diagonal.shape)) if off_diagonal[t, p]]


def classification_report(probs: np.ndarray, labels: np.ndarray,
                          coarse_labels: np.ndarray) -> dict:
  """Top-1/top-5, macro and per-class precision/recall/F1, confusion matrices, superclass top-1."""
  num_classes = probs.shape[1]
  predictions = probs.argmax(axis=1)
  top5 = np.argsort(-probs, axis=1, kind='stable')[:, :5]
  matrix = confusion_matrix(labels, predictions, num_classes)
  true_positives = np.diag(matrix).astype(np.float64)
  precision = _safe_divide(true_positives, matrix.sum(axis=0))
  recall = _safe_divide(true_positives, matrix.sum(axis=1))
  f1 = _safe_divide(2 * precision * recall, precision + recall)
  coarse_predictions = cifar100.FINE_TO_COARSE[predictions]
  coarse_classes = len(np.unique(cifar100.FINE_TO_COARSE))
  return {
      'num_examples': int(len(labels)),
      'top1_accuracy': float((predictions == labels).mean()),
      'top5_accuracy': float((top5 == labels[:, None]).any(axis=1).mean()),
      'macro_precision': float(precision.mean()),
      'macro_recall': float(recall.mean()),
      'macro_f1': float(f1.mean()),
      'coarse_top1_accuracy': float((coarse_predictions == coarse_labels).mean()),
      'per_class': {'precision': precision.tolist(), 'recall': recall.tolist(), 'f1': f1.tolist(),
                    'support': matrix.sum(axis=1).tolist()},
      'confusion_matrix': matrix.tolist(),
      'coarse_confusion_matrix': confusion_matrix(coarse_labels, coarse_predictions,
                                                  coarse_classes).tolist(),
      'most_confused_pairs': most_confused_pairs(matrix),
      'calibration': calibration(probs, labels),
  }
