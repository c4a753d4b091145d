"""The tools beside training: benchmark, sweeps, report, curves, release,
and TFDS preparation. Each `python -m seqmnist.tools.NAME` is also a console
script (`seqmnist-NAME`)."""
