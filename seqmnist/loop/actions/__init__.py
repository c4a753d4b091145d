"""What happens at the training loop's boundaries: one module per action.

Each module defines one `outer_loop.Action` subclass with `build(parts)`,
which makes it from the job's parts (`job.Parts`: the trainer config, the
evaluator, checkpoints, summaries, ...) or returns None when the run does
not want it. The job takes every action defined here
(`outer_loop.discover`) and runs them in the order their `after` requires
(`outer_loop.arrange`): a new action is one new module here, plus its test.

May import: what `loop` may, and `loop.outer_loop`.
"""
