"""The package installs in every pip mode and works in a fresh interpreter.

test_install_mode (slow) copies the tracked files to a temporary folder and
installs them into a new virtual environment: editable (PEP 660), as a wheel
(`pip install .`), editable twice with wheel present (the README's two
set-up commands, which once fell back to `setup.py develop` and lost the
recipes), and with `setup.py develop`. The environment sees the already
installed dependencies (TensorFlow, ...) and the same pip, setuptools and
wheel through a .pth file, so that nothing is downloaded; dp_medtf itself is
hidden from it. Each install is then checked from another folder, in a
fresh interpreter: where dp_medtf is imported from, that the demo recipe
loads and that `python -m dp_medtf.train --helpshort` exits 0.

test_saved_model_loads_in_fresh_interpreter saves a ResNet-9, a U-Net and
an imprinted model and loads each in a new interpreter after `import
dp_medtf` only.
"""

import os
import shutil
import site
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Entries of the current site-packages that the test environment must not
# see: the package under test, and setuptools' .pth start-up hooks.
_HIDDEN = ('dp_medtf', '__editable__', '__editable___dp_medtf',
           'distutils-precedence.pth', 'easy-install.pth')


def _clean_env() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('PYTHON', 'PIP_', 'VIRTUAL_ENV'))}
  env.update(PYTHONNOUSERSITE='1', PIP_NO_INDEX='1', PIP_NO_INPUT='1',
             PIP_DISABLE_PIP_VERSION_CHECK='1')
  return env


def _sh(args, cwd, timeout=300):
  proc = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, (
      f'{" ".join(map(str, args))} exited {proc.returncode}:\n'
      f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
  return proc


def _copy_tracked_files(dest: str) -> None:
  """The files git tracks (as in the working tree), like a fresh clone."""
  listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, check=True,
                          capture_output=True).stdout.decode().split('\0')
  for path in filter(None, listed):
    source = os.path.join(REPO, path)
    if os.path.isfile(source):
      os.makedirs(os.path.join(dest, os.path.dirname(path)), exist_ok=True)
      shutil.copy2(source, os.path.join(dest, path))


def _dependencies(dest: str) -> str:
  """A folder of links to this environment's packages, minus dp_medtf."""
  os.makedirs(dest)
  for folder in site.getsitepackages():
    for name in sorted(os.listdir(folder)):
      if (not name.startswith(_HIDDEN) and
          not os.path.exists(os.path.join(dest, name))):
        os.symlink(os.path.join(folder, name), os.path.join(dest, name))
  return dest


def _venv(path: str, deps: str) -> str:
  """A new environment that sees `deps`; its python."""
  _sh([sys.executable, '-m', 'venv', '--without-pip', path], cwd='/')
  python = os.path.join(path, 'bin', 'python')
  site_packages = _sh([python, '-c', 'import sysconfig; '
                       'print(sysconfig.get_paths()["purelib"])'],
                      cwd='/').stdout.strip()
  with open(os.path.join(site_packages, '_dp_medtf_test_deps.pth'),
            'w') as f:
    f.write(deps + '\n')
  return python


_PIP = ['-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
        '--no-index']
_MODES = {
    'editable': [_PIP + ['-e', '.']],
    'wheel': [_PIP + ['.']],
    'editable_twice': [_PIP + ['-e', '.'], _PIP + ['-e', '.[test]']],
    'setup_py_develop': [['setup.py', '--quiet', 'develop', '--no-deps']],
}


@pytest.fixture(scope='module')
def deps(tmp_path_factory):
  return _dependencies(str(tmp_path_factory.mktemp('deps') / 'site'))


@pytest.mark.slow
@pytest.mark.parametrize('mode', sorted(_MODES))
def test_install_mode(mode, deps, tmp_path):
  source = str(tmp_path / 'dp_medtf_src')
  _copy_tracked_files(source)
  python = _venv(str(tmp_path / 'venv'), deps)
  for command in _MODES[mode]:
    _sh([python, *command], cwd=source)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  check = _sh([python, '-c', textwrap.dedent('''
      import dp_medtf
      from dp_medtf import recipes
      print(dp_medtf.__file__)
      print(recipes.load('demo').dataset)
      ''')], cwd=elsewhere)
  location, dataset = check.stdout.split()
  expected_root = source if mode != 'wheel' else str(tmp_path / 'venv')
  assert location.startswith(expected_root + os.sep), location
  assert dataset == 'demo'
  helpshort = _sh([python, '-m', 'dp_medtf.train', '--helpshort'],
                  cwd=elsewhere)
  assert '--epsilon' in helpshort.stdout


_LOAD = '''
import sys
import numpy as np
order = sys.argv[1]
if order == 'tensorflow_first':
  import tensorflow as tf
  import dp_medtf
else:
  import dp_medtf
  import tensorflow as tf
for name in sys.argv[2:]:
  if order == 'documented_loader':
    model = dp_medtf.models.load_model(name + '.keras')
  else:
    model = tf.keras.models.load_model(name + '.keras')
  np.testing.assert_allclose(model(np.load(name + '_x.npy')).numpy(),
                             np.load(name + '_y.npy'), rtol=1e-5, atol=1e-6)
print('loaded', len(sys.argv) - 2)
'''


@pytest.fixture(scope='module')
def saved_models(tmp_path_factory):
  """ResNet-9, U-Net and imprinted ResNet-9, saved with their outputs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import models  # pylint: disable=g-import-not-at-top
  from dp_medtf.attacks import imprint  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp('saved')
  tf.keras.utils.set_random_seed(0)
  resnet = models.build({'name': 'resnet9', 'width': 8}, (16, 16, 3), 2)
  built = {
      'resnet9': (resnet, (2, 16, 16, 3)),
      'unet3d': (models.build({'name': 'unet3d', 'width': 4, 'levels': 3},
                              (8, 16, 16, 1), 3), (1, 8, 16, 16, 1)),
      'imprinted': (imprint.imprint_model(resnet, num_bins=3),
                    (2, 16, 16, 3)),
  }
  rng = np.random.default_rng(0)
  for name, (model, shape) in built.items():
    x = rng.uniform(size=shape).astype(np.float32)
    model.save(str(folder / f'{name}.keras'))
    np.save(folder / f'{name}_x.npy', x)
    np.save(folder / f'{name}_y.npy', model(x).numpy())
  return folder


@pytest.mark.parametrize(
    'order', ['dp_medtf_first', 'tensorflow_first', 'documented_loader'])
def test_saved_model_loads_in_fresh_interpreter(order, saved_models):
  proc = subprocess.run(
      [sys.executable, '-c', _LOAD, order, 'resnet9', 'unet3d', 'imprinted'],
      cwd=saved_models, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == 'loaded 3'
