"""Modules that moved when the package was laid out by role, still reachable
at their old names.

`python -m seqmnist.sweep` runs `seqmnist.tools.sweep` (same flags and exit
codes; its messages name the new module), and `from seqmnist import sweeps`
gives the module now named `seqmnist.tools.sweep_grid`: one finder answers
every name in `MOVED`, so no file is left behind at the old place. New code
and docs use the new names.
"""
import importlib
import importlib.abc
import importlib.util
import sys

# Old module (under seqmnist.) -> where it lives now.
MOVED = {
    'bench': 'seqmnist.tools.bench',
    'bench_variants': 'seqmnist.tools.bench_measurements',
    'curves': 'seqmnist.tools.curves',
    'prepare_tfds': 'seqmnist.tools.prepare_tfds',
    'release': 'seqmnist.tools.release',
    'report': 'seqmnist.tools.report',
    'sweep': 'seqmnist.tools.sweep',
    'sweeps': 'seqmnist.tools.sweep_grid',
    'sweep_arrays': 'seqmnist.tools.sweep_cluster',
    'export': 'seqmnist.serving.export',
    'predict': 'seqmnist.serving.predict',
    'config': 'seqmnist.gin_files',
}


class _Forward(importlib.abc.Loader):
  """Loads an old name as the module at its new one."""

  def __init__(self, new: str):
    self.new = new

  def create_module(self, spec):
    return None  # a placeholder, which exec_module swaps for the real one

  def exec_module(self, module):
    # The import system returns what sys.modules holds under the old name
    # after this, so the real module is used as it is (its __spec__ and
    # __name__ untouched).
    sys.modules[module.__spec__.name] = importlib.import_module(self.new)

  def is_package(self, fullname):
    del fullname
    return False

  def get_code(self, fullname):
    """What `python -m OLD` runs: the new module as __main__."""
    return compile(f'import runpy\nrunpy.run_module({self.new!r}, '
                   "run_name='__main__', alter_sys=True)\n",
                   f'<{fullname}: moved to {self.new}>', 'exec')


class _Finder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    package, _, name = fullname.rpartition('.')
    if package != 'seqmnist' or name not in MOVED:
      return None
    return importlib.util.spec_from_loader(fullname, _Forward(MOVED[name]))


def install() -> None:
  """Puts the finder first, once (the package's __init__ calls this)."""
  if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
