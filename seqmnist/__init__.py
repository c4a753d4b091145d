"""seqmnist: distributed training of recurrent networks on sequential MNIST.

The package is laid out by role (BUILD.md, "Architecture"): the training core
here, the tools beside training in `seqmnist.tools`, export and prediction in
`seqmnist.serving`. Importing the package imports nothing heavy; it only lets
the modules that moved into the subpackages still answer at their old names
(`moved.py`), so `python -m seqmnist.sweep` and old scripts keep working.
"""
from seqmnist import moved as _moved

_moved.install()
