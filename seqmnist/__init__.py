"""seqmnist: distributed training of recurrent networks on sequential MNIST.

The package is laid out by role (BUILD.md, "Architecture"); each folder says
in its docstring what it holds and what it may import:

- the root: what every command shares (`errors`, `validators`, `registry`,
  `user_files`, `cli`, `rundir`), gin parsing (`gin_files`) and the entry
  points (`main`, `scripts`);
- `config/`: gin text as written, and whether a config may resume a run;
- `data/`: datasets, IDX and TFDS reading, the split, sequence orders, input
  pipelines;
- `model/`: the cell registry, the recurrent layers and the Keras model;
- `optim/`: optimizers, gradient clipping, the weight average;
- `cluster/`: cluster discovery, the tf.distribute strategy, preemption;
- `loop/`: the training job, its outer loop, steps and actions;
- `serving/` (export, predict) and `tools/` (bench, sweep, report, ...):
  what runs beside training, built on the rest.

Importing the package imports nothing.
"""
