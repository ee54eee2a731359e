import json
import re
import shutil

import numpy as np
import pytest

from cifar100_flax.config import checks, loading
from cifar100_flax.errors import UserError
from cifar100_flax.evaluation import evaluate, report
from tests.helpers import mocked_cifar, run_main, tiny_config

FIGURES = ('curves', 'augmented', 'confusion', 'superclass_confusion', 'per_class',
           'superclass_accuracy', 'misclassified', 'reliability', 'gradcam')


@pytest.fixture(scope='module')
def written(trained, tmp_path_factory):
  workdir, _ = trained
  output = tmp_path_factory.mktemp('report')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    return report.report([str(workdir)], str(output))


def test_report_writes_every_figure_as_png_and_valid_html_and_pdf(written):
  run = 'run0'
  for figure in FIGURES:
    path = written[f'{run}_{figure}']
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', figure
  pdf = written['pdf'].read_bytes()
  assert pdf.startswith(b'%PDF') and pdf.rstrip().endswith(b'%%EOF')
  assert len(re.findall(rb'/Type\s*/Page\b', pdf)) == 1 + len(FIGURES)  # summary page + figures
  page = written['html'].read_text()
  assert page.startswith('<!DOCTYPE html>') and page.endswith('</html>')
  assert page.count('src="data:image/png;base64,') == len(FIGURES)


def test_report_numbers_equal_the_eval_json(trained, written):
  evaluation = json.loads((trained[0] / 'eval_test.json').read_text())
  page = written['html'].read_text()
  for key in ('top1_accuracy', 'top5_accuracy', 'macro_f1'):
    assert f'<td>{evaluation[key]:.4f}' in page, key
  names = evaluation['class_names']
  true, predicted, count = evaluation['most_confused_pairs'][0]
  assert f'<td>{names[true]}</td><td>{names[predicted]}</td><td>{count}</td>' in page


def test_comparison_marks_the_best_run(trained, tmp_path):
  workdir, _ = trained
  worse = tmp_path / 'worse'
  shutil.copytree(workdir, worse)
  evaluation = json.loads((worse / 'eval_test.json').read_text())
  evaluation['top1_accuracy'] -= 0.01
  (worse / 'eval_test.json').write_text(json.dumps(evaluation))
  runs = [report.load_run(str(worse)), report.load_run(str(workdir))]
  header, rows = report.comparison_table(runs)
  top1 = header.index('top-1')
  assert not rows[0][top1].endswith('*') and rows[1][top1].endswith('*')
  assert rows[1][header.index('parameters')] == f"{evaluation['num_params']:,}"


def test_a_run_without_evaluation_or_config_is_refused_clearly(tmp_path):
  with pytest.raises(UserError, match='has no test evaluation'):
    report.load_run(str(tmp_path))
  with pytest.raises(UserError, match='config.json is missing'):
    loading.load_config(str(tmp_path))


def test_a_run_saved_before_a_config_key_existed_gets_its_default(trained, tmp_path):
  workdir, _ = trained
  saved = json.loads((workdir / 'config.json').read_text())
  del saved['eval']['translate_tta'], saved['augment']['flip'], saved['model']['kwargs']['dropout']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  config = loading.load_config(str(tmp_path))
  assert config.eval.translate_tta == 0 and config.augment.flip
  assert 'dropout' not in config.model.kwargs  # the model's own arguments, not the default model's
  checks.validate(config)


def test_augmented_samples_are_what_training_sees_at_its_size():
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
  config = tiny_config(image_size=48)
  config.augment.flip = True
  samples = report.augmented_samples(config, images)
  assert samples.shape == (4, 48, 48, 3)
  assert samples.min() == 0 and samples.max() == 1


def test_an_ensemble_of_two_copies_of_a_model_is_that_model_and_is_reported_beside_it(
    trained, tmp_path, mock_cifar):
  workdir, _ = trained
  copies = [tmp_path / 'a', tmp_path / 'b']
  for copy in copies:
    shutil.copytree(workdir, copy)
  config = loading.load_config(str(workdir))
  single = evaluate.evaluate(config, str(workdir))
  ensemble = evaluate.evaluate_ensemble([config, config], [str(c) for c in copies],
                                        str(tmp_path / 'ensemble'))
  for key in ('top1_accuracy', 'top5_accuracy', 'macro_f1'):
    assert ensemble[key] == pytest.approx(single[key]), key
  assert ensemble['members'] == [str(c) for c in copies]
  assert ensemble['num_params'] == 2 * single['num_params']
  written = report.report([str(workdir), str(tmp_path / 'ensemble')], str(tmp_path / 'report'))
  assert 'ensemble_confusion' in written and 'ensemble_gradcam' not in written
  assert '<td>ensemble</td>' in written['html'].read_text()


@pytest.mark.skipif(not shutil.which('chromedriver'),
                    reason='needs Debian chromium-driver (.ci/run installs it)')
def test_report_loads_in_headless_chromium_with_every_image(written):
  webdriver = pytest.importorskip('selenium.webdriver')
  options = webdriver.ChromeOptions()
  for argument in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'):
    options.add_argument(argument)
  driver = webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(shutil.which('chromedriver')))
  try:
    driver.get(written['html'].as_uri())
    assert driver.title == 'CIFAR-100 report'
    images = driver.execute_script(
        'return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0]);')
  finally:
    driver.quit()
  assert sorted(alt for alt, _ in images) == sorted(f'run0_{figure}' for figure in FIGURES)
  assert all(loaded for _, loaded in images), images


@pytest.mark.slow
def test_main_names_an_unknown_gradcam_layer_in_one_line_before_drawing(trained, tmp_path):
  args = ('--mode', 'report', '--workdir', str(trained[0]), '--output', str(tmp_path / 'report'),
          '--gradcam_layer=nope')
  result = run_main(*args)
  assert result.returncode != 0
  # The last line; the lines before are mock_data's own warnings (a real run has none).
  assert result.stderr.strip().splitlines()[-1] == (
      "error: the model has no submodule 'nope'; its feature maps are at Conv_0, BatchNorm_0")
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'report' / 'report.html').exists()
  assert 'Traceback' in run_main(*args, '--traceback').stderr  # when asked for
