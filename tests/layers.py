"""The package's layers, lowest first (BUILD.md, "Architecture"): a module
may import modules of its own layer or below, never above.
tests/test_rundir.py::test_imports_only_run_downward holds the code to it."""

LAYERS = (
    # 0 foundations: errors, the checks every configurable runs, every
    #   reader of a user's path, the registry of named entries
    ('errors', 'validators', 'files', 'registry'),
    # 1 formats and places: IDX files, the run directory, cluster discovery,
    #   the command line's shared parts,
    #   gate biases, gradient clipping, TFDS's download cache, gin text,
    #   stateless dropout, the fused oneDNN recurrence, the cell registry and
    #   the Keras recurrent layers it builds, the dataset registry
    ('idx', 'rundir', 'cluster', 'gates', 'clipping', 'cli', 'tfds_cache',
     'gin_values', 'dropout', 'fused', 'cells', 'rnn_layers', 'datasets'),
    # 2 the experiment's parts: data, model, optimizer, strategy, step
    #   functions, event writers, config drift, weight averaging
    ('data', 'models', 'optimizers', 'distribute', 'steps', 'summaries',
     'drift', 'averaging'),
    # 3 run machinery: checkpoints, signals, progress, evaluation, the
    #   dashboard, the controller, the trainer config and inner loop
    ('checkpoints', 'preemption', 'progress', 'evaluator', 'dashboard',
     'controller', 'trainer'),
    # 4 assembly: the experiment builder, the loop's actions, gin parsing
    ('experiment', 'actions', 'config'),
    # 5 jobs: train+eval, export, predict, the bench's measurements, sweeps,
    #   the report
    ('train_eval', 'export', 'predict', 'bench_variants', 'sweeps',
     'sweep_arrays', 'report', 'release'),
    # 6 entry points
    ('main', 'bench', 'sweep', 'prepare_tfds', 'curves'),
)
