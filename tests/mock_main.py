"""Runs main.py as a user would, on mock CIFAR-100, in this fresh process:

  python -m tests.mock_main --mode eval --workdir WORKDIR
"""

import runpy
import sys

import pytest

from tests.helpers import REPO, mocked_cifar

if __name__ == '__main__':
  sys.argv = ['main.py', *sys.argv[1:]]
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    runpy.run_path(str(REPO / 'main.py'), run_name='__main__')
