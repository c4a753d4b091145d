"""The package's layers, lowest first (BUILD.md, "Architecture"): a module
may import modules of its own layer or below, never above. Modules of the
subpackages are named with their package (`loop.trainer`); a subpackage's
__init__ holds only its docstring.

PACKAGES says which folders a folder's modules may import from: the parts
of an experiment (config, data, model, optim, cluster) import only the
root's foundations and themselves; the loop builds on them; serving and the
tools on everything below. tests/test_rundir.py::test_imports_only_run_downward
holds the code to both."""

LAYERS = (
    # 0 foundations: the package, errors, the checks every configurable
    #   runs, every reader of a user's file, the registry of named entries
    ('__init__', 'errors', 'validators', 'user_files', 'registry'),
    # 1 formats and places: the run directory, the command line's shared
    #   parts, gin text; IDX files, TFDS's download cache, image shifts, the
    #   dataset registry; the cell registry, how layers run on this
    #   machine, the Keras recurrent layers it builds, the fused oneDNN
    #   recurrence, gate biases, stateless dropout;
    #   gradient clipping; cluster discovery
    ('rundir', 'cli', 'config.gin_text',
     'data.idx', 'data.tfds_cache', 'data.augment', 'data.datasets',
     'model.cells', 'model.implementations', 'model.rnn_layers',
     'model.fused', 'model.gates',
     'model.dropout', 'optim.clipping', 'cluster.discover'),
    # 2 the experiment's parts: data, model, optimizer, weight average,
    #   strategy, step functions, event writers, config drift
    ('data.pipeline', 'model.network', 'optim.optimizers', 'optim.averaging',
     'cluster.distribute', 'loop.steps', 'loop.summaries', 'config.drift'),
    # 3 run machinery: checkpoints, signals, progress, evaluation, the
    #   dashboard, the outer loop, the trainer config and inner loop
    ('loop.checkpoints', 'cluster.preemption', 'loop.progress',
     'loop.evaluator', 'loop.dashboard', 'loop.outer_loop', 'loop.trainer'),
    # 4 assembly: the experiment builder, the loop's actions, gin parsing
    ('loop.experiment', 'loop.actions.validate',
     'loop.actions.save_checkpoint', 'loop.actions.show_progress',
     'loop.actions.write_train_summaries',
     'loop.actions.write_gradient_histograms', 'loop.actions.stop_on_signal',
     'loop.actions.report_to_trial',
     'gin_files'),
    # 5 jobs: train+eval; serving: export, predict; tools: the bench's
    #   measurements, sweeps (the grid, the backends), the report, release
    ('loop.job', 'serving.export', 'serving.predict',
     'tools.bench_measurements', 'tools.sweep_grid', 'tools.sweep_cluster',
     'tools.sweep_backends', 'tools.search_space', 'tools.search_study',
     'tools.report', 'tools.release'),
    # 6 entry points: training, and the tools' command lines
    ('main', 'tools.bench', 'tools.sweep', 'tools.search',
     'tools.search_trial', 'tools.prepare_tfds',
     'tools.curves', 'scripts'),
)

# Folder -> the folders its modules may import from ('' is the root's
# foundations: layers 0-1 of the root; the root's gin_files, main and
# scripts sit above every folder).
FOUNDATIONS = ('__init__', 'errors', 'validators', 'user_files', 'registry',
               'rundir', 'cli')
PACKAGES = {
    'config': ('', 'config'),
    'data': ('', 'data'),
    'model': ('', 'model'),
    'optim': ('', 'optim'),
    'cluster': ('', 'cluster'),
    'loop': ('', 'config', 'data', 'model', 'optim', 'cluster', 'loop'),
    'serving': ('', 'config', 'data', 'model', 'optim', 'cluster', 'loop',
                'serving', 'gin_files'),
    # main: a search's trial (tools/search_trial.py) trains through
    # seqmnist.main's own flags and function.
    'tools': ('', 'config', 'data', 'model', 'optim', 'cluster', 'loop',
              'serving', 'tools', 'gin_files', 'main'),
}
