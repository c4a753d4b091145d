"""SaveCheckpoint: a real rolling checkpoint at the boundary's step, after
Validate."""
import os

from seqmnist.loop.actions.save_checkpoint import SaveCheckpoint

import job_parts


def test_save_checkpoint_saves_at_the_boundary_and_says_so(tmp_path,
                                                           mnist_dir):
  parts, run_dir, _, _ = job_parts.make(tmp_path, mnist_dir)
  action = SaveCheckpoint.build(parts)
  assert action.every == 10 and action.after == ('Validate',)
  assert action(job_parts.boundary(10)) == {'saved_step': 10}
  assert parts.checkpoints.latest_step() == 10
  assert any(name.startswith('ckpt-10') for name in
             os.listdir(run_dir.checkpoints))
