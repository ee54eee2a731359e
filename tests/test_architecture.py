"""The import rules of docs/design.md, read from the code: every module's imports (at the top or
inside a function) are parsed, and an edge the rules do not allow fails with its file and line."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

PACKAGE = REPO / 'cifar100_flax'
# Modules any package may import: they import nothing of the project but each other.
BASE = {'errors', 'files', 'console', 'hardware'}
# What each package may import besides itself and BASE: the layers below it.
MAY_IMPORT = {
    'cpu': set(),
    'models': {'cpu'},
    'data': set(),
    'optim': set(),
    'config': {'models', 'data', 'optim', 'cpu'},
    'training': {'config', 'models', 'data', 'optim', 'cpu'},
    'inference': {'training', 'config', 'models', 'data', 'cpu'},
    'evaluation': {'inference', 'training', 'config', 'models', 'data', 'cpu'},
    'cli': {'evaluation', 'inference', 'training', 'config', 'models', 'data', 'optim', 'cpu'},
}
ENTRY_POINTS = {'__main__', 'pretrained'}  # `python -m` spellings of the command line: cli only
API = 'api'  # the Python API: like cli, above every package (and beside cli, not above it)
TRAINING_LOOP = 'training.loop'  # only the command line and the Python API run training


def _place(path: pathlib.Path) -> str:
  """'training.loop', 'errors', '__init__', ... for a module of the package."""
  return '.'.join(path.relative_to(PACKAGE).with_suffix('').parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, 'training.loop') for each project module `path` imports, wherever it does."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == 'cifar100_flax' or node.module.startswith('cifar100_flax.')):
      base = node.module.removeprefix('cifar100_flax').lstrip('.')
      for alias in node.names:
        name = f'{base}.{alias.name}' if base else alias.name
        found.append((node.lineno, name if (PACKAGE / name.replace('.', '/')).exists()
                      or (PACKAGE / f'{name.replace(".", "/")}.py').exists() else base))
    elif isinstance(node, ast.Import):
      found += [(node.lineno, a.name.removeprefix('cifar100_flax.')) for a in node.names
                if a.name.startswith('cifar100_flax.')]
  return found


def _allowed(importer: str, imported: str) -> bool:
  importer_package, imported_package = importer.split('.')[0], imported.split('.')[0]
  if imported == TRAINING_LOOP or imported.startswith(f'{TRAINING_LOOP}.'):
    return importer_package in ('cli', API)
  if importer in ENTRY_POINTS:
    return imported_package == 'cli'
  if importer == '__init__':  # the package's lazy door to the API
    return imported == API
  if importer == API:
    return imported_package in MAY_IMPORT['cli'] | BASE
  if importer_package in BASE:
    return imported_package in BASE
  if imported_package in BASE or imported_package == importer_package:
    return True
  return imported_package in MAY_IMPORT.get(importer_package, set())


def _modules() -> list[pathlib.Path]:
  return sorted(PACKAGE.rglob('*.py'))


def test_every_package_is_in_the_rules_and_says_what_it_is_for():
  packages = {p.parent.name for p in PACKAGE.glob('*/__init__.py')}
  assert packages == set(MAY_IMPORT)
  top_level = {p.stem for p in PACKAGE.glob('*.py')} - {'__init__'}
  assert top_level == BASE | ENTRY_POINTS | {API}
  for package in packages:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / '__init__.py').read_text()))
    assert doc and 'Imports:' in doc, f'{package}/__init__.py: say what it is for and may import'


def test_no_import_breaks_the_rules():
  broken = [f'cifar100_flax/{path.relative_to(PACKAGE)}:{line} imports {imported}'
            for path in _modules() for line, imported in _imports(path)
            if not _allowed(_place(path), imported)]
  assert not broken, '\n'.join(broken)


@pytest.mark.parametrize('importer, imported, allowed', [
    ('evaluation.report', 'training.loop', False),   # nothing but the CLI runs training
    ('cli.modes', 'training.loop', True),
    ('models.resnet', 'training.states', False),     # a lower layer never imports a higher one
    ('config.checks', 'models.pretrained', True),
    ('errors', 'config.defaults', False),
    ('pretrained', 'models.pretrained', False),      # the old spelling forwards to the CLI only
    ('api', 'training.loop', True),                  # the Python API trains
    ('api', 'cli.modes', False),                     # ... without the command line
    ('__init__', 'api', True),
    ('__init__', 'training.loop', False),
])
def test_the_rules_refuse_what_they_should(importer, imported, allowed):
  assert _allowed(importer, imported) is allowed


def test_the_library_imports_tensorflow_only_for_the_dataset():
  """Everything but the tfds pipeline (and the SavedModel export, which imports TensorFlow when
  asked) loads without TensorFlow: synthetic runs, predict and export need none."""
  modules = [f'cifar100_flax.{_place(p)}' for p in _modules()
             if _place(p) not in ('data.tfds_pipeline', '__main__', 'pretrained')
             and not _place(p).endswith('__init__')]
  code = (f'import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; '
          f'print("tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == 'False'


# A path in the repository, ending in a file's extension or naming a folder.
_NAMED_PATH = re.compile(r'(?<![\w/.~-])((?:cifar100_flax|tests|configs|bench|docs)/[\w/]*\w'
                         r'(?:\.(?:py|md|sh|cc|txt|json|gz|npz|safetensors)\b)*)(?![\w.])')


def _texts() -> list[pathlib.Path]:
  """The docs, and the code's comments and docstrings (tests name missing paths on purpose)."""
  texts = [REPO / 'README.md', REPO / 'pyproject.toml', REPO / '.ci' / 'run',
           *(REPO / 'docs').glob('*.md')]
  for folder in ('cifar100_flax', 'configs', 'bench'):
    texts += [p for p in (REPO / folder).rglob('*') if p.suffix in ('.py', '.sh')
              and 'fixtures' not in p.parts]
  return [*texts, REPO / 'main.py']


# Named as files that are not there: a fault case's missing config, a file the reader makes.
_ABSENT_ON_PURPOSE = {'configs/nonexistent.py', 'configs/cnn_fast35.py'}


def test_every_path_the_docs_and_comments_name_exists():
  """A file moved or renamed leaves no path to it behind in prose (placeholders such as
  models/NAME.py aside)."""
  missing = sorted({f'{text.relative_to(REPO)}: {path}' for text in _texts()
                    for path in _NAMED_PATH.findall(text.read_text())
                    if not (REPO / path).exists() and path not in _ABSENT_ON_PURPOSE
                    and not any(c.isupper() for c in path)})
  assert not missing, '\n'.join(missing)


def _temporaries(tree: ast.AST) -> set[str]:
  """The names bound by `with files.replaced(...) as NAME` and `files.replaced_together`."""
  names = set()
  for node in ast.walk(tree):
    for item in getattr(node, 'items', []) if isinstance(node, ast.With) else []:
      call, target = item.context_expr, item.optional_vars
      if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
          and isinstance(call.func.value, ast.Name) and call.func.value.id == 'files'):
        names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} if target else set()
  return names


def test_every_file_is_written_whole():
  """Outputs go through files.write_text/write_bytes/write_all, or are written to the temporaries
  of files.replaced/replaced_together (then renamed): nothing else in the package writes a file
  in place."""
  writes = []
  for path in _modules():
    tree = ast.parse(path.read_text())
    allowed = {'files', *_temporaries(tree)}
    writes += [f'cifar100_flax/{path.relative_to(PACKAGE)}:{node.lineno}'
               for node in ast.walk(tree) if path.name != 'files.py'
               and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr in ('write_text', 'write_bytes')
               and not (isinstance(node.func.value, ast.Name) and node.func.value.id in allowed)]
  assert not writes, '\n'.join(writes)
