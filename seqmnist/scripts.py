"""The console scripts setup.cfg installs: each runs its module exactly as
`python -m MODULE` does (as `__main__`, so absl's --help shows the module's
docstring and flags, and flags, output and exit codes are the module's)."""
import runpy


def _run_as_main(module: str) -> None:
  runpy.run_module(module, run_name='__main__', alter_sys=True)


def train():
  """`seqmnist`: python -m seqmnist.main."""
  _run_as_main('seqmnist.main')


def bench():
  """`seqmnist-bench`."""
  _run_as_main('seqmnist.tools.bench')


def curves():
  """`seqmnist-curves`."""
  _run_as_main('seqmnist.tools.curves')


def prepare_tfds():
  """`seqmnist-prepare-tfds`."""
  _run_as_main('seqmnist.tools.prepare_tfds')


def release():
  """`seqmnist-release`."""
  _run_as_main('seqmnist.tools.release')


def report():
  """`seqmnist-report`."""
  _run_as_main('seqmnist.tools.report')


def sweep():
  """`seqmnist-sweep`."""
  _run_as_main('seqmnist.tools.sweep')


def export():
  """`seqmnist-export`."""
  _run_as_main('seqmnist.serving.export')


def predict():
  """`seqmnist-predict`."""
  _run_as_main('seqmnist.serving.predict')
