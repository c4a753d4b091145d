"""A search's space: specs parsed into Optuna distributions and gin
bindings; bad specs refused with one line naming them; every end checked by
the validators of a plain run; storages, samplers and pruners by name."""
import optuna
import pytest

from seqmnist.errors import UserError
from seqmnist.tools import search_space
from seqmnist.tools import search_study


def test_specs_become_distributions_and_bindings():
  lr = search_space.parse('LEARNING_RATE=loguniform(1e-4, 3e-3)')
  assert lr.distribution() == optuna.distributions.FloatDistribution(
      1e-4, 3e-3, log=True)
  assert lr.binding(0.001) == 'LEARNING_RATE=0.001'
  units = search_space.parse('UNITS = int(32, 128)')
  assert units.distribution() == optuna.distributions.IntDistribution(32, 128)
  assert units.ends() == ['UNITS=32', 'UNITS=128']
  assert search_space.parse('UNITS=logint(8, 64)').distribution().log
  dropout = search_space.parse('Model.output_dropout=uniform(0, 0.5)')
  assert dropout.ends() == ['Model.output_dropout=0.0',
                            'Model.output_dropout=0.5']
  cell = search_space.parse("Model.cell=choice('gru', 'lstm')")
  assert cell.distribution().choices == ('gru', 'lstm')
  assert cell.binding('lstm') == "Model.cell='lstm'"
  # A tuple is stored as its gin text and bound as the tuple.
  dilations = search_space.parse('Model.dilations=choice((1, 4), (1, 2))')
  assert dilations.distribution().choices == ('(1, 4)', '(1, 2)')
  assert dilations.binding('(1, 2)') == 'Model.dilations=(1, 2)'


@pytest.mark.parametrize('spec, message', [
    ('LEARNING_RATE', 'must be NAME=DIST(...)'),
    ('x=normal(0, 1)', "'normal' is not a distribution; use one of"),
    ('x=uniform(1)', 'uniform() takes two bounds, (low, high); got 1'),
    ('x=uniform(1, 1)', 'the range is empty (low = high = 1)'),
    ('x=uniform(2, 1)', 'the range is inverted (low 2 > high 1)'),
    ('x=loguniform(0, 1)', 'loguniform() needs low > 0 (log scale); got 0'),
    ('x=int(1.5, 4)', 'int() takes integer bounds; 1.5 is not one'),
    ("x=uniform('a', 1)", "the bound 'a' is not a finite number"),
    ('x=choice()', 'choice() needs at least one value'),
    ('x=choice(1, 1)', 'a choice is given twice'),
    ('x=choice(gru)', 'a string needs quotes'),
], ids=['no-dist', 'unknown-kind', 'one-bound', 'empty', 'inverted',
        'log-zero', 'int-float', 'string-bound', 'no-choice', 'repeated',
        'unquoted'])
def test_bad_specs_name_themselves_and_what_is_wrong(spec, message):
  with pytest.raises(UserError) as e:
    search_space.parse(spec)
  assert str(e.value).startswith(f'--space={spec!r}')
  assert message in str(e.value)


def test_a_binding_given_twice_or_no_space_is_refused():
  with pytest.raises(UserError, match='--space gives UNITS more than once'):
    search_space.parse_all(['UNITS=int(8, 16)', 'UNITS=choice(8)'])
  with pytest.raises(UserError, match='give the space: at least one'):
    search_space.parse_all([])


def test_a_space_file_holds_one_spec_a_line(tmp_path):
  path = tmp_path / 'space.txt'
  path.write_text("# the learning rate\nLEARNING_RATE=loguniform(1e-4, 1e-2)"
                  "\n\nModel.cell=choice('gru', 'lstm')  # cells\n")
  assert search_space.read_file(str(path)) == [
      'LEARNING_RATE=loguniform(1e-4, 1e-2)',
      "Model.cell=choice('gru', 'lstm')"]
  (tmp_path / 'empty.txt').write_text('# nothing\n')
  with pytest.raises(UserError, match='holds no NAME=DIST'):
    search_space.read_file(str(tmp_path / 'empty.txt'))


def test_every_end_goes_through_the_run_validators():
  dims = search_space.parse_all(['Model.output_dropout=uniform(0, 0.5)',
                                 'UNITS=int(8, 64)'])
  assert search_space.check(dims, ['row.gin'], []) == {'steps': 8600,
                                                       'eval_every': 860}
  for spec, message in (
      ('Model.output_dropout=uniform(0, 0.99)',
       'Model.output_dropout=0.99 must be a number from 0 to 0.95'),
      ('Model.units=uniform(8, 64)',
       'Model.units=8.0 must be an integer from 1 to 8,192; an integer '
       'setting takes int(low, high) or choice(...)'),
      ("Model.cell=choice('gru', 'tree')", "Model.cell='tree' is not one of"),
      ('Model.unitz=int(8, 9)', "doesn't have a parameter named 'unitz'")):
    with pytest.raises(UserError, match='^' + __import__('re').escape(
        f'--space={spec!r}: ')) as e:
      search_space.check(search_space.parse_all([spec]), ['row.gin'], [])
    assert message in str(e.value)


def test_storages_samplers_and_pruners_by_name(tmp_path):
  with pytest.raises(UserError, match='must be journal:PATH or a database'):
    search_study.open_storage('study.db')
  with pytest.raises(UserError, match="journal file's folder"):
    search_study.open_storage(f'journal:{tmp_path}/no/such/j.log')
  journal = search_study.open_storage(f'journal:{tmp_path}/j.log')
  assert isinstance(journal, optuna.storages.JournalStorage)
  assert search_study.redact('postgresql://me:secret@db:5432/x') == (
      'postgresql://me:***@db:5432/x')
  dims = search_space.parse_all(['UNITS=int(8, 16)'])
  with pytest.raises(UserError, match='--sampler=grid takes choice'):
    search_study.make_sampler('grid', 0, 5, dims)
  assert isinstance(search_study.make_pruner('hyperband', 5, 10, 100),
                    optuna.pruners.HyperbandPruner)
  assert isinstance(search_study.make_pruner('none', 5, 10, 100),
                    optuna.pruners.NopPruner)
  # Never before the prune_from-th validation: here the 4th, step 40.
  median = search_study.make_pruner('median', 0, 10, 100, prune_from=4)
  study = optuna.create_study(direction='maximize', pruner=median)
  for value in (0.9, 0.8):
    done = study.ask()
    for step in (10, 20, 30, 40):
      done.report(value, step)
    study.tell(done, value)
  behind = study.ask()
  for step in (10, 20, 30):
    behind.report(0.1, step)
    assert not behind.should_prune(), step
  behind.report(0.1, 40)
  assert behind.should_prune()
