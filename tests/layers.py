"""The package's layers, lowest first (BUILD.md, "Architecture"): a module
may import modules of its own layer or below, never above. Modules of the
subpackages are named with their package (`tools.report`); a subpackage's
__init__ holds only its docstring.
tests/test_rundir.py::test_imports_only_run_downward holds the code to it."""

LAYERS = (
    # 0 foundations: the package (its __init__ and the old names of moved
    #   modules), errors, the checks every configurable runs, every reader of
    #   a user's path, the registry of named entries
    ('__init__', 'moved', 'errors', 'validators', 'files', 'registry'),
    # 1 formats and places: IDX files, the run directory, cluster discovery,
    #   the command line's shared parts,
    #   gate biases, gradient clipping, TFDS's download cache, gin text,
    #   stateless dropout, image shifts, the fused oneDNN recurrence, the cell
    #   registry and the Keras recurrent layers it builds, the dataset registry
    ('idx', 'rundir', 'cluster', 'gates', 'clipping', 'cli', 'tfds_cache',
     'gin_values', 'dropout', 'augment', 'fused', 'cells', 'rnn_layers',
     'datasets'),
    # 2 the experiment's parts: data, model, optimizer, strategy, step
    #   functions, event writers, config drift, weight averaging
    ('data', 'models', 'optimizers', 'distribute', 'steps', 'summaries',
     'drift', 'averaging'),
    # 3 run machinery: checkpoints, signals, progress, evaluation, the
    #   dashboard, the controller, the trainer config and inner loop
    ('checkpoints', 'preemption', 'progress', 'evaluator', 'dashboard',
     'controller', 'trainer'),
    # 4 assembly: the experiment builder, the loop's actions, gin parsing
    ('experiment', 'actions', 'gin_files'),
    # 5 jobs: train+eval; serving: export, predict; tools: the bench's
    #   measurements, sweeps (the grid, cluster backends), the report, release
    ('train_eval', 'serving.export', 'serving.predict',
     'tools.bench_measurements', 'tools.sweep_grid', 'tools.sweep_cluster',
     'tools.report', 'tools.release'),
    # 6 entry points: training, and the tools' command lines
    ('main', 'tools.bench', 'tools.sweep', 'tools.prepare_tfds',
     'tools.curves', 'scripts'),
)
