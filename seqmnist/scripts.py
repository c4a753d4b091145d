"""The console scripts setup.cfg installs: each runs its module exactly as
`python -m MODULE` does (as `__main__`, so absl's --help shows the module's
docstring and flags, and flags, output and exit codes are the module's)."""
import runpy


def _runs(module: str):
  """The entry point of the console script that runs `module`."""

  def run() -> None:
    runpy.run_module(module, run_name='__main__', alter_sys=True)

  run.module = module
  return run


# Entry point -> the module it runs (script names: setup.cfg).
train = _runs('seqmnist.main')  # seqmnist
bench = _runs('seqmnist.tools.bench')  # seqmnist-bench
curves = _runs('seqmnist.tools.curves')  # seqmnist-curves
prepare_tfds = _runs('seqmnist.tools.prepare_tfds')  # seqmnist-prepare-tfds
release = _runs('seqmnist.tools.release')  # seqmnist-release
report = _runs('seqmnist.tools.report')  # seqmnist-report
sweep = _runs('seqmnist.tools.sweep')  # seqmnist-sweep
search = _runs('seqmnist.tools.search')  # seqmnist-search
export = _runs('seqmnist.serving.export')  # seqmnist-export
predict = _runs('seqmnist.serving.predict')  # seqmnist-predict
