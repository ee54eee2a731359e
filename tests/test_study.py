"""examples/study.ipynb, executed at smoke size (tiny runs on synthetic images) as a user runs it,
so that it cannot rot."""

import pathlib
import re
import subprocess

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_the_study_notebook_runs_start_to_end_and_writes_the_report(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  monkeypatch.setenv('CIFAR100_STUDY', 'smoke')
  monkeypatch.setenv('CIFAR100_STUDY_WORKDIR', str(tmp_path / 'study'))
  notebook = nbformat.read(REPO / 'examples' / 'study.ipynb', as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(REPO)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code'
             for o in cell.get('outputs', [])]
  assert not [o for o in outputs if o.output_type == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 3  # curves, superclass confusion and Grad-CAM, inline
  report = pathlib.Path(tmp_path / 'study' / 'report')
  assert (report / 'report.pdf').read_bytes().startswith(b'%PDF')
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'macro_precision' in text and str(report / 'report.pdf') in text


def test_the_study_script_parses_and_names_the_notebook_s_configs():
  script = REPO / 'examples' / 'study.sh'
  assert subprocess.run(['bash', '-n', str(script)]).returncode == 0
  models = re.search(r'for model in ([\w ]+); do', script.read_text()).group(1).split()
  assert all((REPO / 'configs' / f'{model}.py').is_file() for model in models)
  notebook = (REPO / 'examples' / 'study.ipynb').read_text()
  assert all(f"('{model}', {{}})" in notebook for model in models)
