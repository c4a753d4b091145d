"""What every command's start shares (seqmnist/cli.py): TensorFlow and Keras
imported without the packages Keras would load for helpers no command calls,
which still import normally afterwards."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from seqmnist import cli


def test_a_hidden_package_fails_to_import_inside_and_imports_after(
    tmp_path, monkeypatch):
  (tmp_path / 'seqmnist_probe_a.py').write_text('VALUE = 1\n')
  (tmp_path / 'seqmnist_probe_b.py').write_text('VALUE = 2\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  import seqmnist_probe_b  # pylint: disable=import-outside-toplevel,unused-import
  try:
    with cli._hidden(('seqmnist_probe_a', 'seqmnist_probe_b')):  # pylint: disable=protected-access
      with pytest.raises(ImportError):
        import seqmnist_probe_a  # pylint: disable=import-outside-toplevel,unused-import
      # One already imported stays what it was.
      import seqmnist_probe_b as inside  # pylint: disable=import-outside-toplevel
      assert inside.VALUE == 2
    assert 'seqmnist_probe_a' not in sys.modules
    import seqmnist_probe_a as after  # pylint: disable=import-outside-toplevel
    assert after.VALUE == 1
  finally:
    for name in ('seqmnist_probe_a', 'seqmnist_probe_b'):
      sys.modules.pop(name, None)


@pytest.mark.e2e
def test_tensorflow_starts_without_the_extras_keras_would_load():
  # A process of its own: this one may have imported them already.
  probe = ('import sys\n'
           'from seqmnist import cli\n'
           'cli.import_tensorflow_quietly()\n'
           "print(sorted(n for n in ('IPython', 'matplotlib') "
           'if n in sys.modules))\n'
           'import keras, matplotlib.pyplot\n'
           'print(keras.__version__.split(".")[0], '
           'matplotlib.pyplot.__name__)\n')
  result = subprocess.run(
      [sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == ['[]', '3 matplotlib.pyplot']
