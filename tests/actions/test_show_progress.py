"""ShowProgress: the progress line from the boundary's output and the
newest validation."""
from seqmnist.loop.actions.show_progress import ShowProgress

import job_parts


def test_show_progress_prints_the_output_and_the_newest_validation(
    tmp_path, mnist_dir):
  parts, _, _, stream = job_parts.make(tmp_path, mnist_dir)
  action = ShowProgress.build(parts)
  assert action.every == 0 and action.after == ('Validate',)
  action(job_parts.boundary(20, job_parts.output(loss=0.5),
                            validation={'accuracy': 0.75}))
  line = stream.getvalue().strip()
  assert line.startswith('step 20/20 [====================] 100% ')
  assert 'loss 0.5000 acc 0.2500 ex/s 123 val_acc 0.7500' in line
