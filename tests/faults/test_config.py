"""Config files and values a careless user gives: each stops in one line, before any data is read
or anything compiled, and names the fix."""

import pytest

from tests.faults.battery import TINY, assert_user_error, main_py


def _train(tmp_path, *flags):
  return main_py(*TINY, f'--workdir={tmp_path / "run"}', '--config.data.dir=/nonexistent', *flags)


@pytest.mark.parametrize('flags', [(), ('--config.train.num_epochs=1',)],
                         ids=['alone', 'overridden'])
def test_a_missing_config_file(tmp_path, flags):  # issue 25, 1
  outcome = main_py('--config=configs/nonexistent.py', f'--workdir={tmp_path}', *flags)
  assert_user_error(outcome, 'configs/nonexistent.py: no such file')


@pytest.mark.parametrize('text, words', [
    ('x = (\n', ['does not load', 'line 1']),
    ('import no_such_module\n', ['does not load', 'no_such_module']),
    ('def get_config():\n  return 1 / 0\n', ['does not load', 'division by zero']),
    ('config = 1\n', ['get_config']),
], ids=['syntax', 'import', 'raises', 'no-get-config'])
def test_a_config_file_that_does_not_load(tmp_path, text, words):
  path = tmp_path / 'bad.py'
  path.write_text(text)
  assert_user_error(main_py(f'--config={path}', f'--workdir={tmp_path / "run"}'), *words)


def test_a_folder_as_config(tmp_path):
  assert_user_error(main_py('--config=configs', f'--workdir={tmp_path}'), 'no such file')


@pytest.mark.parametrize('flag, words', [
    ('--config.data.batch_size=abc', ['config.data.batch_size', "'abc'"]),
    ('--config.train.num_epochs=1.5', ['config.train.num_epochs', '1.5']),
    ('--config.optim.learning_rate=fast', ['config.optim.learning_rate', 'fast']),
    ('--config.model.kwargs.widths=abc', ['config.model.kwargs.widths']),
    ('--config.augment.flip=maybe', ['config.augment.flip', 'maybe']),
], ids=['int', 'fractional-epochs', 'float', 'tuple', 'bool'])
def test_a_value_of_the_wrong_type(tmp_path, flag, words):
  assert_user_error(_train(tmp_path, flag), *words)


@pytest.mark.parametrize('flag, words', [
    ('--config.augment.flipp=1', ['config.augment.flipp', 'did you mean config.augment.flip?']),
    ('--config.optim.learning_rat=0.1',
     ['config.optim.learning_rat', 'did you mean config.optim.learning_rate?']),
    ('--config.no_such_key=1', ['config.no_such_key', 'cifar100_flax/config/defaults.py']),
    ('--config.model.kwargs.widht=8', ['widht', 'widths']),
], ids=['misspelt-nested', 'misspelt', 'unknown', 'misspelt-model-argument'])
def test_an_unknown_key_is_named_with_a_readable_suggestion(tmp_path, flag, words):  # issue 23
  line = assert_user_error(_train(tmp_path, flag), *words)
  assert '\\n' not in line and '\\' not in line and '"' not in line


@pytest.mark.parametrize('flag, words', [
    ('--config.model.kwargs.widths=("a",)', ['config.model.kwargs.widths', 'positive integers']),
    ('--config.model.kwargs.widths=(8,-2)', ['config.model.kwargs.widths', 'positive integers']),
    ('--config.model.kwargs.hidden=-1', ['config.model.kwargs.hidden', '>= 0']),
    ('--config.model.kwargs.dropout=1.5', ['config.model.kwargs.dropout', '[0, 1)']),
    ('--config.model.kwargs.dropout=-0.1', ['config.model.kwargs.dropout', '[0, 1)']),
    ('--config.model.name=resnet18', ['config.model.kwargs', 'resnet18']),
], ids=['width-str', 'width-negative', 'hidden-negative', 'dropout-high', 'dropout-negative',
        'kwargs-of-another-model'])
def test_model_arguments_are_checked(tmp_path, flag, words):  # issue 25, 2
  assert_user_error(_train(tmp_path, flag), *words)


@pytest.mark.parametrize('flag, words', [
    ('--config.data.image_size=4096', ['config.data.image_size', 'at most']),
    ('--config.data.image_size=100000', ['config.data.image_size', 'at most']),
    ('--config.eval.image_size=100000', ['config.eval.image_size', 'at most']),
    ('--config.optim.learning_rate=inf', ['config.optim.learning_rate', 'finite']),
    ('--config.optim.learning_rate=nan', ['config.optim.learning_rate', 'finite']),
    ('--config.optim.weight_decay=inf', ['config.optim.weight_decay', 'finite']),
    ('--config.data.batch_size=100000', ['config.data.batch_size', 'training images']),
    ('--config.data.batch_size=0', ['config.data.batch_size', '> 0']),
    ('--config.eval.batch_size=1000000', ['config.eval.batch_size', 'at most']),
    ('--config.train.num_epochs=0', ['config.train.num_epochs', '> 0']),
    ('--config.train.label_smoothing=1.5', ['config.train.label_smoothing', '[0, 1)']),
    ('--config.train.label_smoothing=-0.1', ['config.train.label_smoothing', '[0, 1)']),
    ('--config.data.validation_size=-5', ['config.data.validation_size']),
    ('--config.optim.name=sgdd', ['config.optim.name', 'adamw']),
    ('--config.schedule.name=cosine', ['config.schedule.name', 'warmup_cosine']),
    ('--config.model.name=resnet', ['config.model.name', 'resnet50']),
    ('--config.model.dtype=float16', ['config.model.dtype', 'bfloat16']),
    ('--config.augment.mixup_alpha=-1', ['config.augment.mixup_alpha', '>= 0']),
    ('--config.optim.frozen_params=(', ['config.optim.frozen_params', 'regex']),
], ids=lambda v: v if isinstance(v, str) and v.startswith('--') else '')
def test_an_impossible_value_is_named(tmp_path, flag, words):  # issue 25, 3 and 4
  assert_user_error(_train(tmp_path, flag), *words)


@pytest.mark.parametrize('args, words', [
    (['--mode=trian'], ['--mode', 'train']),
    (['--no_such_flag'], ['no_such_flag']),
    (['stray'], ['unexpected arguments stray']),
    (['--mode=eval', '--workdir=b'], ['--output=DIR']),
    (['--mode=export', '--workdir=b'], ['one --workdir']),
    (['--mode=predict'], ['--images']),
    (['--mode=predict', '--images=x.png', '--top_k=0'], ['--top_k']),
], ids=['mode', 'flag', 'argument', 'ensemble-output', 'export-two', 'predict-images', 'top-k'])
def test_a_flag_out_of_place(tmp_path, args, words):
  assert_user_error(main_py(f'--workdir={tmp_path / "a"}', *args), *words)


def test_train_needs_a_config(tmp_path):
  assert_user_error(main_py(f'--workdir={tmp_path}'), '--config')
