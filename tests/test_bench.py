"""The benchmark harness in its smoke mode: it runs every variant for real
(tiny sizes) and produces the table and JSON. No timing is asserted: speed is
measured by `python -m seqmnist.bench` itself (docs/benchmarks.md), never by a
test.
"""

import json
import subprocess
import sys

from conftest import REPO
from seqmnist import bench


def test_smoke_run_produces_the_table_and_json(tmp_path, mnist_dir):
  output = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.bench', '--smoke',
       f'--data_dir={mnist_dir}', f'--output={output}'],
      cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report['markdown'] in result.stdout
  assert report['machine']['tensorflow'].startswith('2.21')
  assert report['matmul_gflops'] > 0
  rows = {r['variant']: r for r in report['rows']}
  assert set(rows) == set(bench.VARIANTS)
  for name, row in rows.items():
    if name == 'torch' and report['machine']['torch'] is None:
      assert 'pip install -e ".[bench]"' in row['note']
      continue
    assert row['examples_per_second'] > 0, (name, row)
    assert row['ms_per_step'] > 0 and row['gflops'] > 0
    line = next(l for l in result.stdout.splitlines()
                if l.startswith(f'| row | gru | {name} |'))
    assert f'{row["examples_per_second"]:,.0f}' in line
  assert 'input pipeline overhead' in result.stdout
  assert 'steps_per_loop many vs 1' in result.stdout


def test_flops_per_example_by_hand():
  # GRU, row: 28 steps x 2 x 3 gates x (28*128 + 128*128) + head, x3.
  forward = 28 * 2 * 3 * (28 * 128 + 128 * 128) + 2 * 128 * 10
  assert bench.train_flops_per_example('row', 'gru', 128) == 3 * forward
  # LSTM, pixel: 784 steps of 1 feature, 4 gates.
  forward = 784 * 2 * 4 * (1 * 64 + 64 * 64) + 2 * 64 * 10
  assert bench.train_flops_per_example('pixel', 'lstm', 64) == 3 * forward


def test_unknown_variant_is_one_line_error():
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.bench', '--variants=ours,fast'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "seqmnist.bench: error: unknown task, cell or variant 'fast'")
