import dataclasses
import json
import shutil

import numpy as np
import pytest

from cifar100_flax import console
from cifar100_flax.config import checks, loading
from cifar100_flax.data import cifar100
from cifar100_flax.errors import UserError
from cifar100_flax.evaluation import evaluate, findings, plots, report
from cifar100_flax.evaluation.results import load_run, run_names
from tests.helpers import mocked_cifar, run_main, tiny_config

FIGURES = ('fig01_curves', 'fig02_augmented_run0', 'fig03_superclass_accuracy',
           'fig04_superclass_confusion_run0', 'fig05_class_scores', 'fig06_calibration',
           'fig07_mistakes_run0', 'fig08_gradcam', 'run0_confusion')


def pdf_pages(path) -> list[tuple[tuple[float, float], str]]:
  """(width, height) in points and the text of each page, as a reader's PDF viewer gets them."""
  pdfium = pytest.importorskip('pypdfium2')
  document = pdfium.PdfDocument(str(path))
  try:
    return [(page.get_size(), page.get_textpage().get_text_range()) for page in document]
  finally:
    document.close()


@pytest.fixture(scope='module')
def written(trained, tmp_path_factory):
  workdir, _ = trained
  output = tmp_path_factory.mktemp('report')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    return report.report([str(workdir)], str(output))


def test_report_writes_every_figure_as_png_beside_the_html_and_pdf(written):
  for figure in FIGURES:
    path = written[figure]
    assert path.parent == written['pdf'].parent and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  page = written['html'].read_text()
  assert page.startswith('<!DOCTYPE html>') and page.rstrip().endswith('</html>')
  assert page.count('src="data:image/png;base64,') == len(FIGURES) - 1  # not the 100 x 100 matrix


def test_report_pdf_is_an_a4_document_of_five_to_eight_pages_with_its_tables_as_text(
    trained, written):
  pages = pdf_pages(written['pdf'])
  assert 5 <= len(pages) <= 8
  assert all(size == pytest.approx((595.3, 841.9), abs=0.5) for size, _ in pages)
  evaluation = json.loads((trained[0] / 'eval_test.json').read_text())
  first = pages[0][1]
  for label, key in (('Test top-1 accuracy', 'top1_accuracy'),
                     ('Macro precision', 'macro_precision'), ('Macro recall', 'macro_recall'),
                     ('Macro F1', 'macro_f1')):
    assert f'{label} {100 * evaluation[key]:.2f}%' in first, label
  assert 'run0 reaches test top-1' in first  # the findings, written from the numbers
  text = ' '.join(t for _, t in pages)
  for number in range(1, 9):
    assert f'Figure {number}. ' in text
  appendix = text[text.index('Appendix: every class'):]
  assert all(name in appendix for name in cifar100.CLASS_NAMES)
  assert f'page 1 of {len(pages)}' in first


def test_report_numbers_equal_the_eval_json(trained, written):
  evaluation = json.loads((trained[0] / 'eval_test.json').read_text())
  page = written['html'].read_text()
  for key in ('top1_accuracy', 'top5_accuracy', 'macro_precision', 'macro_recall', 'macro_f1'):
    assert f'<td>{100 * evaluation[key]:.2f}%</td>' in page, key
  true, predicted, count = evaluation['most_confused_pairs'][0]
  names = evaluation['class_names']
  support = evaluation['per_class']['support'][true]
  assert f'<td>{names[true]} → {names[predicted]}: {count} of {support}</td>' in page


def _worse_copy(workdir, folder, by: float = 0.01):
  shutil.copytree(workdir, folder)
  evaluation = json.loads((folder / 'eval_test.json').read_text())
  evaluation['top1_accuracy'] -= by
  evaluation['calibration']['expected_calibration_error'] += 0.1
  (folder / 'eval_test.json').write_text(json.dumps(evaluation))
  return evaluation


def test_comparison_marks_the_best_of_each_row_and_names_the_winner(trained, tmp_path):
  workdir, _ = trained
  _worse_copy(workdir, tmp_path / 'worse')
  runs = [load_run(str(tmp_path / 'worse')), load_run(str(workdir))]
  rows = {row.label: row for row in findings.results_table(runs)}
  assert rows['Test top-1 accuracy'].best == (1,)
  assert rows['Expected calibration error'].best == (1,)  # lower is better
  assert rows['Parameters'].best == (0, 1)  # a tie: both marked
  assert rows['Training hardware'].best == ()
  assert findings.findings(runs).startswith(f'{runs[1].name} is the most accurate')


def test_a_report_of_two_runs_on_letter_paper(trained, tmp_path, mock_cifar):
  workdir, _ = trained
  _worse_copy(workdir, tmp_path / 'other', by=0.02)
  written = report.report([str(workdir), str(tmp_path / 'other')], str(tmp_path / 'report'),
                          paper='letter')
  pages = pdf_pages(written['pdf'])
  assert 5 <= len(pages) <= 8
  assert pages[0][0] == pytest.approx((612, 792), abs=0.5)
  assert 'run0 is the most accurate' in pages[0][1] and 'Against other' in pages[0][1]
  assert 'fig02_augmented_other' in written and 'other_confusion' in written


def test_ties_at_the_cut_of_the_worst_classes_are_said_as_ties(trained):
  run = load_run(str(trained[0]))
  f1 = np.linspace(0.9, 0.1, 100)
  f1[-7:] = 0.0  # seven classes never recognised
  run.evaluation['per_class']['f1'] = f1.tolist()
  best, worst = findings.ranked_classes(run.evaluation['per_class'], count=5)
  assert worst.text.startswith('7 classes tied at F1 0.00 (')
  assert len(worst.rows) == 7 and len(best.rows) == 5
  f1[-7:] = np.arange(7) / 100  # no tie: the five lowest, each with its F1
  run.evaluation['per_class']['f1'] = f1.tolist()
  worst = findings.ranked_classes(run.evaluation['per_class'])[1]
  assert worst.text.startswith(f'{cifar100.CLASS_NAMES[93]} (0.00), ')


def test_a_report_of_more_than_three_runs_or_of_one_run_twice_is_refused(trained):
  workdir = str(trained[0])
  with pytest.raises(UserError, match='one to three runs, not 4'):
    report.report([workdir] * 4)
  with pytest.raises(UserError, match='given twice'):
    report.report([workdir, f'{workdir}/.'])


def test_runs_in_folders_of_one_name_are_told_apart_by_the_folders_above():
  assert run_names(['x/a/run', 'x/b/run', 'y/c']) == ['a/run', 'b/run', 'y/c']
  assert run_names(['x/a', 'x/b']) == ['a', 'b']
  assert run_names(['p/a/run', 'q/a/run']) == ['p/a/run', 'q/a/run']


def test_a_run_without_evaluation_or_config_is_refused_clearly(tmp_path):
  with pytest.raises(UserError, match='has no test evaluation'):
    load_run(str(tmp_path))
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
  assert 'ensemble_confusion' in written and 'fig02_augmented_ensemble' not in written
  page = written['html'].read_text()
  assert '<th>ensemble</th>' in page and '<td>ensemble of 2 runs</td>' in page


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
    assert driver.title == 'CIFAR-100 image classification: run0'
    images = driver.execute_script(
        'return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0]);')
  finally:
    driver.quit()
  assert sorted(alt for alt, _ in images) == sorted(FIGURES[:-1])
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
  assert not (tmp_path / 'report' / 'report.pdf').exists()
  assert 'Traceback' in run_main(*args, '--traceback').stderr  # when asked for


def test_training_curves_of_a_run_on_all_training_images_are_drawn_without_validation():
  # A recorded run (validation_size=0) logs its epochs' ends but no validation: its training
  # curves are still drawn, at their epochs, and named in the legend.
  history = [{'step': 50, 'train_loss': 4.0, 'train_accuracy': 0.1, 'learning_rate': 0.05},
             {'step': 100, 'train_loss': 3.0, 'train_accuracy': 0.3, 'learning_rate': 0.02},
             {'step': 100, 'epoch': 2.0}]
  accuracy, loss, learning_rate = plots.training_curves({'all50k': history}).axes
  drawn = [line for line in accuracy.lines if len(line.get_xdata())]
  assert len(drawn) == 1 and list(drawn[0].get_xdata()) == [1.0, 2.0]
  assert list(drawn[0].get_ydata()) == [0.1, 0.3]
  assert [len(line.get_xdata()) for line in loss.lines + learning_rate.lines] == [2, 0, 2]
  assert [text.get_text() for text in accuracy.get_legend().get_texts()] == ['all50k']


def test_the_epochs_trained_are_told_for_a_run_without_validation(trained):
  run = load_run(str(trained[0]))
  num_epochs = run.config.train.num_epochs
  steps = [r for r in run.history if 'epoch' in r]
  untested = [{'step': r['step'], 'epoch': r['epoch']} for r in steps]  # as validation_size=0 logs
  cells = {row.label: row.cells for row in findings.setup_table(
      [dataclasses.replace(run, history=untested), dataclasses.replace(run, history=untested[:1])])}
  assert untested[-1]['epoch'] == num_epochs
  assert cells['Epochs'][0] == console.plural(num_epochs, 'epoch')
  assert cells['Epochs'][1] == (f"{console.plural(untested[0]['epoch'], 'epoch')} of "
                                f"{console.plural(num_epochs, 'epoch')} (stopped early)")
