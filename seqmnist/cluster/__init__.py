"""Where a run runs: cluster discovery from TF_CONFIG, Slurm or Kubernetes
(`discover`; `python -m seqmnist.cluster.discover` prints what it finds), the
`Distribute` settings and the tf.distribute strategy (`distribute`), and
SIGTERM / Ctrl-C agreed on by every worker (`preemption`).

May import: the root's foundations.
"""
