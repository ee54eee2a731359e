
import jax
import numpy as np
import pytest

from cifar100_flax.errors import CheckpointError, TrainingDivergedError
from cifar100_flax.evaluation import evaluate
from cifar100_flax.models import pretrained
from cifar100_flax.training import checkpoints, flops, loop, restore, states, writers
from tests.helpers import REPO, best_step, mocked_cifar, saved_steps, stop_after, tiny_config

# Dropout and every augmentation on, so that resuming must restore the RNG exactly; the EMA and
# recalibrated BatchNorm statistics too.
RESUME_CONFIG = dict(num_epochs=2, eval_every_steps=5, ema_decay=0.9, recalibration_images=32,
                     model_kwargs=dict(widths=(8,), convs_per_stage=1, hidden=16, dropout=0.2))


def _config(**overrides):
  config = tiny_config(**overrides)
  config.augment.update(rotation_degrees=10.0, zoom=0.1, shear_degrees=5.0, cutout_size=8,
                        auto_augment='trivial', random_erasing=0.25, mixup_alpha=0.2,
                        cutmix_alpha=1.0)
  return config


def _final_params(config, workdir):
  template, _ = states.create_train_state(config, steps_per_epoch=1)
  state, progress = checkpoints.Checkpointer(workdir).restore_latest(template)
  return state, progress


def test_training_lowers_the_loss(mock_cifar, tmp_path):
  loop.train_and_evaluate(tiny_config(num_epochs=4, learning_rate=0.1), str(tmp_path))
  losses = [r['train_loss'] for r in writers.read_history(str(tmp_path)) if 'train_loss' in r]
  assert len(losses) == 8 and losses[-1] < losses[0] - 0.3
  assert saved_steps(tmp_path)[-1] == 40


def test_progressive_resizing_counts_each_sizes_flops(mock_cifar, tmp_path):
  config = tiny_config(num_epochs=2, image_size_schedule=((0, 16), (1, 32)))
  progress = loop.train_and_evaluate(config, str(tmp_path))
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  per_size = {size: flops.flops_per_step(config, state, config.data.batch_size, size)
              for size in (16, 32)}
  assert per_size[16] < per_size[32] / 2
  steps_per_epoch = (200 - 40) // 16
  assert progress['train_flops'] == pytest.approx(steps_per_epoch * (per_size[16] + per_size[32]))
  assert saved_steps(tmp_path)[-1] == 2 * steps_per_epoch


def test_no_logged_point_averages_only_a_few_steps():
  logged = [step for step in range(1, 352) if loop._logs_at(step, 25, 351)]
  assert logged == list(range(25, 326, 25)) + [351]  # 350 joins the last period
  assert [step for step in range(1, 41) if loop._logs_at(step, 5, 40)] == list(range(5, 41, 5))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The workdir of a run of RESUME_CONFIG that nothing stopped."""
  workdir = str(tmp_path_factory.mktemp('whole'))
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    loop.train_and_evaluate(_config(**RESUME_CONFIG), workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('stop', ['crash', 'ctrl-c'])
def test_resuming_reproduces_the_uninterrupted_run(mock_cifar, tmp_path, monkeypatch, stop,
                                                   uninterrupted):
  config = _config(**RESUME_CONFIG)

  # A crash loses the steps since the last checkpoint (step 10); Ctrl-C while batch 12 is fetched
  # lets that step finish and saves at step 13.
  with monkeypatch.context() as patch:
    stop_after(patch, 12, stop)
    with pytest.raises(RuntimeError if stop == 'crash' else KeyboardInterrupt):
      loop.train_and_evaluate(config, str(tmp_path / 'cut'))
  saved = saved_steps(tmp_path / 'cut')
  assert saved[-1] == (10 if stop == 'crash' else 13)
  loop.train_and_evaluate(config, str(tmp_path / 'cut'))

  whole, whole_progress = _final_params(config, uninterrupted)
  cut, cut_progress = _final_params(config, str(tmp_path / 'cut'))
  assert int(cut.step) == int(whole.step) == 20
  for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(cut)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert cut_progress['early_stopping'] == whole_progress['early_stopping']
  assert cut_progress['best_step'] == whole_progress['best_step']
  assert cut_progress['recalibration'] == {'image_size': 0, 'images': 32}


def test_the_ema_model_is_validated_checkpointed_and_evaluated(mock_cifar, tmp_path):
  config = _config(ema_decay=0.9, recalibration_images=32, image_size=40, eval_image_size=48,
                   num_epochs=1)
  loop.train_and_evaluate(config, str(tmp_path))
  state, progress = _final_params(config, str(tmp_path))
  assert progress['recalibration'] == {'image_size': 48, 'images': 32}
  kernel = lambda tree: np.asarray(tree['Conv_0']['kernel'])
  assert not np.allclose(kernel(state.ema['params']), kernel(state.params))
  model, _ = restore.restore_model(config, str(tmp_path))  # already recalibrated: kept as saved
  np.testing.assert_array_equal(kernel(model.params), kernel(state.ema['params']))
  for got, saved in zip(jax.tree.leaves(model.batch_stats),
                        jax.tree.leaves(state.ema['batch_stats'])):
    np.testing.assert_array_equal(got, saved)
  # At another size the statistics are recalibrated again; the weights stay.
  config.eval.image_size = 64
  other, _ = restore.restore_model(config, str(tmp_path))
  np.testing.assert_array_equal(kernel(other.params), kernel(state.ema['params']))
  assert not np.allclose(jax.tree.leaves(other.batch_stats)[0],
                         jax.tree.leaves(state.ema['batch_stats'])[0])
  assert evaluate.evaluate(config, str(tmp_path))['num_examples'] == 200


def test_early_stopping_stops_and_stays_stopped(mock_cifar, tmp_path):
  # No evaluation can improve by 10: the first sets the best, the next two fail, and it stops.
  config = tiny_config(num_epochs=4, eval_every_steps=2, early_stopping_patience=2,
                       early_stopping_min_delta=10.0)
  progress = loop.train_and_evaluate(config, str(tmp_path))
  assert progress['early_stopping']['should_stop'] and progress['best_step'] == 2
  val_steps = [r['step'] for r in writers.read_history(str(tmp_path)) if 'val_accuracy' in r]
  assert val_steps == [2, 4, 6]
  loop.train_and_evaluate(config, str(tmp_path))  # resuming a stopped run trains no further
  assert _final_params(config, str(tmp_path))[0].step == 6


def test_diverging_loss_stops_with_a_clear_error(mock_cifar, tmp_path):
  config = tiny_config(learning_rate=1e30, warmup_epochs=0.0, weight_decay=0.0)
  with pytest.raises(TrainingDivergedError, match='diverged at step'):
    loop.train_and_evaluate(config, str(tmp_path))


def test_pretrained_weights_replace_all_but_the_head(tmp_path):
  import flax

  from cifar100_flax import models
  config = tiny_config(model='resnet18')
  config.model.kwargs = {'stem': 'cifar', 'width': 4}
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  other = models.create_model('resnet18', 10, stem='cifar', width=4).init(
      jax.random.PRNGKey(123), np.zeros((1, 32, 32, 3), np.float32), train=False)
  path = tmp_path / 'weights.msgpack'
  path.write_bytes(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, other)))
  config.model.pretrained = str(path)
  loaded = loop._with_pretrained(state, config)
  np.testing.assert_array_equal(loaded.params['conv1']['kernel'],
                                other['params']['conv1']['kernel'])
  np.testing.assert_array_equal(loaded.batch_stats['bn1']['var'],
                                other['batch_stats']['bn1']['var'])
  np.testing.assert_array_equal(loaded.params['fc']['kernel'], state.params['fc']['kernel'])
  assert loaded.params['fc']['kernel'].shape == (32, 100)


def test_a_timm_vit_fine_tunes_from_its_weights_at_another_size(mock_cifar, tmp_path):
  """The fixture's ViT (built for 64 px: 4x4 patches) trains at 32 px (2x2): its position
  embeddings resized, everything but the head loaded, with no BatchNorm to recalibrate."""
  fixture = str(REPO / 'tests' / 'fixtures' / 'vit_tiny.safetensors')
  config = tiny_config(model='vit_tiny_patch16', pretrained=fixture, normalisation='unit',
                       num_epochs=1, recalibration_images=32, ema_decay=0.9,
                       backbone_frozen_epochs=0.5, backbone_learning_rate_multiplier=0.5)
  config.model.kwargs = {'width': 32, 'depth': 2, 'heads': 2}
  state, _ = states.create_train_state(config, steps_per_epoch=1)
  loaded = loop._with_pretrained(state, config)
  weights = pretrained.convert_vit(pretrained.load_state_dict(fixture))['params']
  np.testing.assert_array_equal(loaded.params['blocks_1']['attn']['qkv']['kernel'],
                                weights['blocks_1']['attn']['qkv']['kernel'])
  assert loaded.params['pos_embed'].shape == (1, 1 + 2 * 2, 32)
  np.testing.assert_array_equal(loaded.params['fc']['kernel'], state.params['fc']['kernel'])
  loop.train_and_evaluate(config, str(tmp_path))
  report = evaluate.evaluate(config, str(tmp_path))
  assert report['num_examples'] == 200 and np.isfinite(report['top1_accuracy'])


def test_without_a_validation_split_the_last_model_is_the_best(mock_cifar, tmp_path):
  config = tiny_config(validation_size=0, early_stopping_patience=0, num_epochs=2)
  progress = loop.train_and_evaluate(config, str(tmp_path))
  steps = 2 * (200 // config.data.batch_size)  # every mock training image is trained on
  assert progress['best_step'] == steps and progress['total_steps'] == steps
  assert best_step(tmp_path) == steps and steps in saved_steps(tmp_path)


def test_a_full_disk_is_told_as_such_and_keeps_the_previous_checkpoint(mock_cifar, tmp_path,
                                                                       monkeypatch):
  config = tiny_config(num_epochs=1, eval_every_steps=5)
  real_save = checkpoints.ocp.CheckpointManager.save

  def save(manager, step, *args, **kwargs):
    if step > 5:
      raise OSError(28, 'No space left on device')  # ENOSPC, as orbax's writer would meet it
    return real_save(manager, step, *args, **kwargs)

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'save', save)
  with pytest.raises(CheckpointError, match='the disk is full: free some space') as raised:
    loop.train_and_evaluate(config, str(tmp_path))
  assert 'corrupt' not in str(raised.value) and isinstance(raised.value.__cause__, OSError)
  assert saved_steps(tmp_path) == [5]


def test_a_finished_run_run_again_says_so_before_loading_data(mock_cifar, tmp_path, capsys,
                                                               monkeypatch):
  config = tiny_config(num_epochs=1)
  first = loop.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert f"training finished: best val accuracy {first['best_metric']:.4f} at step 10" in out
  assert f'next: python main.py --mode eval --workdir {tmp_path}' in out
  with monkeypatch.context() as patch:  # the data is never loaded
    patch.setattr(loop.cifar100, 'source', lambda config: pytest.fail('loaded the data'))
    again = loop.train_and_evaluate(config, str(tmp_path))
  assert again['best_step'] == first['best_step'] == 10
  assert f'{tmp_path} has finished training (step 10 of 10)' in capsys.readouterr().out
