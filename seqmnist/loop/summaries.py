"""TensorBoard event files: the run dir's train/, validation/ and test/
folders, and the run's HParams in the run folder itself (TensorBoard's
HParams plugin treats the folder holding them as the run and finds its
metrics in the subfolders).

Only the chief writes; every other worker gets no-op writers, so the calls
stay the same everywhere and nothing depends on who runs them.
"""

from typing import Mapping

import tensorflow as tf

from seqmnist import rundir


class Summaries:
  """One writer per split, real on the chief, no-op elsewhere."""

  def __init__(self, run_dir: rundir.RunDir, *, is_chief: bool):
    def writer(split):
      if is_chief:
        return tf.summary.create_file_writer(run_dir.events(split))
      return tf.summary.create_noop_writer()
    self.train = writer(rundir.TRAIN)
    self.validation = writer(rundir.VALIDATION)
    self.test = writer(rundir.TEST)
    self.root = writer('')
    self._writers = (self.train, self.validation, self.test, self.root)

  def scalars(self, writer, values: Mapping[str, float], step: int) -> None:
    with writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    writer.flush()

  def flush(self) -> None:
    for writer in self._writers:
      writer.flush()

  def close(self) -> None:
    for writer in self._writers:
      writer.flush()
      writer.close()
