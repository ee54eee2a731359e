import numpy as np

from cifar100_flax.data import cifar100
from cifar100_flax.evaluation import classification


def _naive_report(probs, labels):
  """Per-class counting with Python loops: an independent reference."""
  predictions = probs.argmax(1)
  precision, recall, f1 = [], [], []
  for c in range(probs.shape[1]):
    tp = sum(1 for p, t in zip(predictions, labels) if p == c and t == c)
    predicted = sum(1 for p in predictions if p == c)
    actual = sum(1 for t in labels if t == c)
    pr = tp / predicted if predicted else 0.0
    rc = tp / actual if actual else 0.0
    precision.append(pr)
    recall.append(rc)
    f1.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
  top5 = [t in sorted(range(probs.shape[1]), key=lambda c: -p[c])[:5]
          for p, t in zip(probs, labels)]
  return {'top1_accuracy': np.mean(predictions == labels), 'top5_accuracy': np.mean(top5),
          'macro_precision': np.mean(precision), 'macro_recall': np.mean(recall),
          'macro_f1': np.mean(f1)}


def test_classification_report_matches_a_naive_reference():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 100, 300)
  probs = rng.dirichlet(np.ones(100), 300)
  probs[np.arange(150), labels[:150]] += 1.0  # half are right
  report = classification.classification_report(probs, labels, cifar100.FINE_TO_COARSE[labels])
  for key, value in _naive_report(probs, labels).items():
    np.testing.assert_allclose(report[key], value, err_msg=key)
  assert report['num_examples'] == 300
  matrix = np.array(report['confusion_matrix'])
  assert matrix.shape == (100, 100) and matrix.sum() == 300 and np.trace(matrix) >= 150
  assert np.array(report['coarse_confusion_matrix']).shape == (20, 20)
  assert report['coarse_top1_accuracy'] >= report['top1_accuracy']


def test_fine_to_coarse_is_a_partition_into_20_superclasses_of_5():
  assert np.bincount(cifar100.FINE_TO_COARSE).tolist() == [5] * 20


def test_calibration_matches_a_hand_count():
  # Confidences 0.28 (wrong), 0.26 (right), 0.9 (right), 0.95 (wrong) in 10 bins (lo, hi]: bin 2
  # holds the first two (accuracy 0.5, confidence 0.27), bins 8 and 9 one each.
  probs = np.array([[0.28, 0.24, 0.24, 0.24], [0.26, 0.25, 0.25, 0.24],
                    [0.9, 0.05, 0.03, 0.02], [0.95, 0.03, 0.01, 0.01]])
  labels = np.array([1, 0, 0, 2])
  calibration = classification.calibration(probs, labels, num_bins=10)
  assert calibration['bin_count'] == [0, 0, 2, 0, 0, 0, 0, 0, 1, 1]
  np.testing.assert_allclose(calibration['bin_accuracy'][2], 0.5)
  np.testing.assert_allclose(calibration['bin_confidence'][2], 0.27)
  expected = (2 * abs(0.5 - 0.27) + abs(1 - 0.9) + abs(0 - 0.95)) / 4
  np.testing.assert_allclose(calibration['expected_calibration_error'], expected)


def test_most_confused_pairs_are_the_largest_off_diagonal_counts_in_order():
  matrix = np.array([[9, 1, 4], [0, 7, 0], [2, 6, 3]])
  assert classification.most_confused_pairs(matrix, count=3) == [(2, 1, 6), (0, 2, 4), (2, 0, 2)]
  assert classification.most_confused_pairs(np.eye(3, dtype=int)) == []
