r"""Training throughput: our loop against what a user would write instead.

  python -m seqmnist.tools.bench [--tasks=row,pixel] [--cells=gru,lstm] \
      [--units=128] [--batch_size=128] [--repeats=3] [--variants=...] \
      [--data_dir=../shared/data/mnist] [--output=bench.json] [--smoke]

Every measurement runs in a fresh subprocess (`--worker`), so no variant
inherits another's compiled functions, threads or memory; variants alternate
within each repetition, and the table reports medians. Variants:

  ours             the real trainer (`train_and_evaluate` from the task's gin
                   file): summaries and a checkpoint inside the timed span;
                   the first loop (tracing) and validation/test excluded;
                   Model.implementation='auto' (implementations.py decides)
  ours_keras       ours with Model.implementation='keras' (Keras' step loop)
  ours_fused       ours with Model.implementation='fused' (the oneDNN op)
  ours_unroll      ours with Model.implementation='unroll' (Keras' layer
                   unrolled; row only)
  onednn           ours with TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's own oneDNN
                   ops on (TensorFlow leaves them off on CPUs without
                   AVX-512; the package turns them on where they measured
                   faster: implementations.prepare_tensorflow)
  onednn_off       ours with TF_ENABLE_ONEDNN_OPTS=0: them off
  replicas_2       ours_keras as two replicas on two logical CPU devices
                   (Distribute.logical_cpus=2, TF_NUM_INTRAOP_THREADS=1),
                   each on half of the batch
  replicas_2_fused the same with Model.implementation='fused'
  keras_fit        the same model, optimizer (schedule, `clipnorm`) and batch
                   through `model.compile` + `model.fit` as a user writes
                   them: defaults, so jit_compile='auto' (XLA on a CPU), no
                   op determinism
  keras_fit_no_xla the same with jit_compile=False
  torch            a PyTorch model and update of the same shape (the `bench`
                   extra: pip install -e ".[bench]")
  limit            the same recurrence with no framework: the input
                   projection of all steps as one matmul, then per step one
                   matmul with the recurrent kernel and the gate arithmetic,
                   forward and backward in one tf.function, plain SGD, one
                   batch in memory: "ours / limit" is the framework's cost
  core_pipeline    our tf.function loop alone, on the real input pipeline
  core_in_memory   the same loop on one batch held in memory: the ratio of
                   the two is the input pipeline's overhead
  steps_per_loop_1 ours with one step per tf.function call
  jit              ours with Trainer.jit_compile=True (XLA)
  bf16             ours with Model.precision='mixed_bfloat16'

Training FLOPs per example (3x the forward matmuls) give an achieved GFLOP/s,
printed against a large float32 matmul's GFLOP/s measured in the same run.
The roofline of each cell divides those FLOPs by the GFLOP/s of the step's own
matmul ([batch, units] x [units, gates*units], chained), measured in the same
run: the examples/s no implementation of this recurrence can pass here.
Runs unchanged on a GPU (the strategy picks it; torch uses CUDA if present).
"""

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import flags

from seqmnist import cli
from seqmnist.model import cells
from seqmnist.model import implementations
from seqmnist.tools.bench_measurements import Spec
from seqmnist.tools.bench_measurements import environment
from seqmnist.tools.bench_measurements import measure
from seqmnist.tools.bench_measurements import step_matmul_gflops

VARIANTS = {
    'ours': 'our trainer (real loop: summaries, checkpoint), '
            "Model.implementation='auto' (implementations.py)",
    'ours_keras': "ours, Model.implementation='keras' (Keras' step loop)",
    'ours_fused': "ours, Model.implementation='fused' (the oneDNN op)",
    'ours_unroll': "ours, Model.implementation='unroll' (row only)",
    'onednn': "ours with TF_ENABLE_ONEDNN_OPTS=1",
    'onednn_off': "ours with TF_ENABLE_ONEDNN_OPTS=0",
    'replicas_2': "ours_keras on 2 logical CPUs (Distribute.logical_cpus=2),"
                  " one TensorFlow thread each",
    'replicas_2_fused': "the same with Model.implementation='fused'",
    'keras_fit': 'Keras model.fit, same model/optimizer/batch, defaults',
    'keras_fit_no_xla': 'Keras model.fit, jit_compile=False',
    'torch': 'PyTorch reference, same model/update',
    'limit': 'the bare recurrence: no Keras layer, plain SGD, in memory',
    'core_pipeline': 'our tf.function loop, real input pipeline',
    'core_in_memory': 'our tf.function loop, one in-memory batch',
    'steps_per_loop_1': 'ours, steps_per_loop=1',
    'jit': 'ours, Trainer.jit_compile=True',
    'bf16': "ours, Model.precision='mixed_bfloat16'",
}
# Per task: steps per loop, and measured steps (its gin file: TASK_GIN_FILES).
TASKS = {
    'row': (50, 300),
    'pixel': (10, 30),
}

_TASKS = flags.DEFINE_list('tasks', ['row', 'pixel'], 'Tasks: row, pixel.')
# The cells with a PyTorch counterpart (cells.py) the reference can run.
BENCH_CELLS = tuple(c for c in cells.names() if cells.get(c).torch)
_CELLS = flags.DEFINE_list('cells', ['gru'], 'Cells: ' + ', '.join(
    BENCH_CELLS) + '.')
_UNITS = flags.DEFINE_integer('units', 128, 'Recurrent units.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Measured steps per run; 0 = the '
                              "task's default (row 300, pixel 30).")
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Repetitions (medians).')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS), 'Variants to run.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'MNIST IDX folder, or '
                                "TFDS's data_dir (see seqmnist.main).")
_OUTPUT = flags.DEFINE_string('output', 'bench.json', 'JSON results file.')
_SMOKE = flags.DEFINE_boolean('smoke', False, 'A tiny run that only checks '
                              'the harness works (row, 8 units, 4 steps).')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: run one measurement '
                              '(JSON spec) and print its result.')

RESULT_PREFIX = 'BENCH_RESULT '


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
  """float32 GFLOP/s of a large matmul: the machine's practical peak."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.normal([size, size])
  b = tf.random.normal([size, size])
  matmul = tf.function(lambda: tf.matmul(a, b))
  matmul().numpy()
  start = time.perf_counter()
  for _ in range(repeats):
    matmul().numpy()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def train_flops_per_example(task: str, cell: str, units: int) -> float:
  """3x the forward matmul FLOPs (forward + backward) per example."""
  steps, features = {'row': (28, 28), 'pixel': (784, 1)}[task]
  gates = cells.get(cell).gates
  forward = steps * 2 * gates * (features * units + units * units)
  forward += 2 * units * 10
  return 3.0 * forward


# The harness ------------------------------------------------------------


def _run_worker(spec: Spec) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             **environment(spec.variant))
  proc = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.bench',
       f'--worker={json.dumps(dataclasses.asdict(spec))}'],
      capture_output=True, text=True, env=env, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  tail = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
  return {'error': f'exit {proc.returncode}: {tail}'}


def machine() -> dict:
  """The machine the figures hold for: the CPU, its vector extensions and
  TensorFlow's oneDNN state (in this, the harness's, process)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flags_ = implementations.cpu_flags()
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  return {
      'cpu': implementations.cpu_model(), 'cores': os.cpu_count(),
      'vector_extensions': implementations.vector_extensions(),
      'cpu_kind': implementations.cpu_kind(),
      'onednn_ops': implementations.onednn_ops_on(),
      'onednn_state': implementations.onednn_state(),
      'bf16_instructions': 'avx512_bf16' in flags_ or 'amx_bf16' in flags_,
      'gpus': [d.name for d in tf.config.list_physical_devices('GPU')],
      'tensorflow': tf.__version__, 'keras': keras.__version__,
      'torch': torch_version, 'python': platform.python_version(),
  }


def _median(values):
  values = [v for v in values if v]
  return statistics.median(values) if values else None


def run(tasks, cell_names, variants, units, batch_size, steps, repeats,
        data_dir, log=print) -> dict:
  """Runs every (task, cell, variant) `repeats` times, alternating."""
  specs = []
  for task in tasks:
    per_loop, default_steps = TASKS[task]
    n = steps or default_steps
    per_loop = min(per_loop, n)
    for cell in cell_names:
      for variant in variants:
        specs.append(Spec(variant, task, cell, units, batch_size, n, per_loop,
                          data_dir))
  runs = {s: [] for s in specs}
  peaks, step_peaks = [], {cell: [] for cell in cell_names}
  for r in range(repeats):
    peaks.append(matmul_gflops())
    for cell in cell_names:
      step_peaks[cell].append(step_matmul_gflops(cell, units, batch_size))
    for spec in specs:
      result = _run_worker(spec)
      runs[spec].append(result)
      log(f'bench: repeat {r + 1}/{repeats} {spec.task} {spec.cell} '
          f'{spec.variant}: ' + (f'{result["examples_per_second"]:,.0f} ex/s'
                                 if result.get('examples_per_second')
                                 else result.get('skipped') or
                                 result.get('error')))
  rows = []
  for spec, results in runs.items():
    ex_s = _median([r.get('examples_per_second') for r in results])
    note = next((r.get('skipped') or r.get('error') for r in results
                 if r.get('skipped') or r.get('error')), None)
    rows.append({
        **dataclasses.asdict(spec), 'runs': results,
        'examples_per_second': ex_s,
        'ms_per_step': 1000 * batch_size / ex_s if ex_s else None,
        'note': note,
        'gflops': (ex_s * train_flops_per_example(spec.task, spec.cell,
                                                  units) / 1e9
                   if ex_s else None),
    })
  rooflines = []
  for task in tasks:
    for cell in cell_names:
      gflops = _median(step_peaks[cell])
      rooflines.append({
          'task': task, 'cell': cell, 'step_matmul_gflops': gflops,
          'examples_per_second': gflops * 1e9 / train_flops_per_example(
              task, cell, units)})
  return {'machine': machine(), 'matmul_gflops': _median(peaks),
          'repeats': repeats, 'rows': rows, 'rooflines': rooflines}


def _ratio(a, b):
  return f'{a / b:.2f}x' if a and b else 'n/a'


def markdown(report: dict) -> str:
  """The table (and the derived ratios) as Markdown."""
  m = report['machine']
  peak = report['matmul_gflops']
  extensions = ', '.join(
      name if has else f'no {name}'
      for name, has in m.get('vector_extensions', {}).items())
  onednn = m.get('onednn_state') or {True: 'on', False: 'off'}.get(
      m.get('onednn_ops'), 'not recorded')
  lines = [
      f'CPU: {m["cpu"]} ({extensions or "vector extensions not recorded"}); '
      f"TensorFlow's oneDNN ops {onednn}; the onednn and onednn_off variants "
      'set them on and off.',
      '',
      f'Machine: {m["cpu"]}, {m["cores"]} cores, GPUs: '
      f'{", ".join(m["gpus"]) or "none"}; TensorFlow {m["tensorflow"]}, '
      f'Keras {m["keras"]}, torch {m["torch"] or "not installed"}; '
      f'{report["repeats"]} repetition(s), medians. Large float32 matmul: '
      f'{peak:.1f} GFLOP/s.', '',
      '| task | cell | variant | examples/s | ms/step | vs limit | '
      'vs keras_fit | vs keras_fit_no_xla | vs torch | GFLOP/s (% of '
      'matmul) |',
      '|---|---|---|---|---|---|---|---|---|---|']
  by_key = {(r['task'], r['cell'], r['variant']): r for r in report['rows']}
  for r in report['rows']:
    ex_s = r['examples_per_second']
    fit = by_key.get((r['task'], r['cell'], 'keras_fit'), {})
    fit_no_xla = by_key.get((r['task'], r['cell'], 'keras_fit_no_xla'), {})
    torch_row = by_key.get((r['task'], r['cell'], 'torch'), {})
    limit = by_key.get((r['task'], r['cell'], 'limit'), {})
    if ex_s:
      cells = [f'{ex_s:,.0f}', f'{r["ms_per_step"]:.1f}',
               _ratio(ex_s, limit.get('examples_per_second')),
               _ratio(ex_s, fit.get('examples_per_second')),
               _ratio(ex_s, fit_no_xla.get('examples_per_second')),
               _ratio(ex_s, torch_row.get('examples_per_second')),
               f'{r["gflops"]:.2f} ({100 * r["gflops"] / peak:.1f}%)']
    else:
      cells = [r['note'] or 'n/a', '', '', '', '', '', '']
    lines.append(f'| {r["task"]} | {r["cell"]} | {r["variant"]} | ' +
                 ' | '.join(cells) + ' |')
  derived = []
  pairs = list(dict.fromkeys((task, cell) for task, cell, _ in by_key))
  for task, cell in pairs:
    get = lambda v, t=task, c=cell: by_key.get((t, c, v), {}).get(  # pylint: disable=g-long-lambda
        'examples_per_second')
    pipe, mem = get('core_pipeline'), get('core_in_memory')
    if pipe and mem:
      derived.append(f'- {task} {cell}: input pipeline overhead '
                     f'{100 * (1 - pipe / mem):.1f}% (core_pipeline vs '
                     'core_in_memory)')
    # (numerator, denominator, what the ratio says)
    for top, bottom, what in (
        ('ours_fused', 'ours_keras', "the fused op vs Keras' layers"),
        ('ours', 'ours_keras', "ours (auto) vs Model.implementation='keras'"),
        ('ours_unroll', 'ours_keras', "unrolled vs Keras' step loop"),
        ('onednn', 'onednn_off', "TensorFlow's oneDNN ops on vs off"),
        ('ours', 'onednn_off', "ours vs ours with TensorFlow's oneDNN ops "
         'off'),
        ('replicas_2', 'ours_keras', '2 replicas x 1 thread vs 1 x 2'),
        ('replicas_2_fused', 'ours_keras',
         '2 replicas x 1 thread, fused, vs 1 x 2 keras'),
        ('ours', 'steps_per_loop_1', 'steps_per_loop many vs 1'),
        ('jit', 'ours', 'XLA on vs off'), ('bf16', 'ours', 'bf16 vs float32')):
      if get(top) and get(bottom):
        derived.append(f'- {task} {cell}: {what}: '
                       f'{_ratio(get(top), get(bottom))}')
  for roof in report.get('rooflines', []):
    derived.append(
        f'- {roof["task"]} {roof["cell"]}: roofline '
        f'{roof["examples_per_second"]:,.0f} examples/s (the step\'s matmul '
        f'at {roof["step_matmul_gflops"]:.1f} GFLOP/s, '
        f'{100 * roof["step_matmul_gflops"] / peak:.0f}% of the large '
        'matmul\'s)')
  if derived:
    lines += ['', *derived]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  implementations.prepare_tensorflow()  # as every training process does
  if _WORKER.value:
    spec = Spec(**json.loads(_WORKER.value))
    print(RESULT_PREFIX + json.dumps(measure(spec)), flush=True)
    return
  if _SMOKE.value:
    tasks, cell_names, units, batch = ['row'], ['gru'], 8, 32
    steps, repeats = 4, 1
  else:
    tasks, cell_names = _TASKS.value, _CELLS.value
    units, batch = _UNITS.value, _BATCH.value
    steps, repeats = _STEPS.value, _REPEATS.value
  bad = ([t for t in tasks if t not in TASKS] +
         [c for c in cell_names if c not in BENCH_CELLS] +
         [v for v in _VARIANTS.value if v not in VARIANTS])
  if bad:
    sys.exit(f'seqmnist.tools.bench: error: unknown task, cell or variant '
             f'{bad[0]!r}; tasks: {", ".join(TASKS)}; cells: '
             f'{", ".join(BENCH_CELLS)}; '
             f'variants: {", ".join(VARIANTS)}')
  for name, value in (('units', units), ('batch_size', batch),
                      ('repeats', repeats)):
    if value < 1:
      sys.exit(f'seqmnist.tools.bench: error: --{name}={value} must be >= 1')
  report = run(tasks, cell_names, _VARIANTS.value, units, batch, steps,
               repeats, _DATA_DIR.value, log=lambda s: print(s, file=sys.stderr))
  table = markdown(report)
  print(table)
  from seqmnist import rundir  # pylint: disable=g-import-not-at-top
  rundir.write_json(_OUTPUT.value, {**report, 'markdown': table})


if __name__ == '__main__':
  cli.run('seqmnist.tools.bench', main)
