import json

import pytest

from cifar100_flax.training import writers


@pytest.mark.parametrize('name, tag', [
    ('train_loss', 'train/loss'), ('val_accuracy', 'val/accuracy'),
    ('val_top5_accuracy', 'val/top5_accuracy'), ('learning_rate', 'train/learning_rate'),
    ('epoch', 'progress/epoch')])
def test_tensorboard_groups_the_scalars_by_what_they_measure(name, tag):
  assert writers.tensorboard_tag(name) == tag


def test_a_run_s_tensorboard_events_hold_grouped_scalars_and_its_config(trained):
  event_accumulator = pytest.importorskip(
      'tensorboard.backend.event_processing.event_accumulator')
  workdir, _ = trained
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'tensors': 0})
  events.Reload()
  tags = set(events.Tags()['tensors'])
  assert {'train/loss', 'train/accuracy', 'train/learning_rate', 'val/loss',
          'val/accuracy'} <= tags
  scalars = {tag for tag in tags if not tag.startswith('_hparams_/')}  # the HParams tab's own
  assert '_hparams_/session_start_info' in tags
  assert not any('_' in tag.split('/')[0] for tag in scalars), scalars  # no flat train_loss
  text = events.Tensors('config')[0].tensor_proto.string_val[0].decode()
  saved = json.loads((workdir / 'config.json').read_text())
  assert f"name: {saved['model']['name']}" in text and 'learning_rate:' in text
