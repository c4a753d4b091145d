"""The training loop, outermost first:

- `job`: the whole job (`train_and_evaluate`): build, resume, train, test
  the best checkpoint, write results.json;
- `experiment`: the one builder: every gin config validated, then the model
  and optimizer under the strategy;
- `outer_loop`: the controller: where each `tf.function` call stops and the
  `Boundary` handed to each `Action`;
- `trainer`: the `Trainer` settings and the inner loop (N train steps per
  call, timed);
- `steps`: what one train or eval step computes;
- `actions/`: what happens at boundaries, one module per action;
- `checkpoints`, `evaluator`, `progress`, `summaries`, `dashboard`: what the
  actions and the job use.

May import: the root's foundations, `config`, `data`, `model`, `optim`,
`cluster`.
"""
