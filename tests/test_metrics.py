import numpy as np

from cifar100_flax import metrics


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
  top5 = [t in sorted(range(probs.shape[1]), key=lambda c: -p[c])[:5] for p, t in zip(probs, labels)]
  return {'top1_accuracy': np.mean(predictions == labels), 'top5_accuracy': np.mean(top5),
          'macro_precision': np.mean(precision), 'macro_recall': np.mean(recall),
          'macro_f1': np.mean(f1)}


def test_classification_report_matches_a_naive_reference():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 100, 300)
  probs = rng.dirichlet(np.ones(100), 300)
  probs[np.arange(150), labels[:150]] += 1.0  # half are right
  report = metrics.classification_report(probs, labels, metrics.FINE_TO_COARSE[labels])
  for key, value in _naive_report(probs, labels).items():
    np.testing.assert_allclose(report[key], value, err_msg=key)
  assert report['num_examples'] == 300
  matrix = np.array(report['confusion_matrix'])
  assert matrix.shape == (100, 100) and matrix.sum() == 300 and np.trace(matrix) >= 150
  assert np.array(report['coarse_confusion_matrix']).shape == (20, 20)
  assert report['coarse_top1_accuracy'] >= report['top1_accuracy']


def test_fine_to_coarse_is_a_partition_into_20_superclasses_of_5():
  assert np.bincount(metrics.FINE_TO_COARSE).tolist() == [5] * 20
