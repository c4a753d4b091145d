"""Gin: shipped files parse, overrides reach their objects, bad names fail."""

import os

import gin
import pytest

from seqmnist import gin_files
from seqmnist.cluster import distribute
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError
from seqmnist.loop import trainer
from seqmnist.model import network

SHIPPED = sorted(f for f in os.listdir(gin_files.gin_dir())
                 if f.endswith('.gin') and f != 'base.gin')
ARTICLES = sorted('articles/' + f for f in
                  os.listdir(os.path.join(gin_files.gin_dir(), 'articles')))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _build_all():
  return (pipeline.DataConfig(), network.ModelConfig(), trainer.TrainerConfig(),
          distribute.DistributeConfig())


def test_row_pixel_permuted_are_shipped():
  assert {'row.gin', 'pixel.gin', 'permuted.gin'} <= set(SHIPPED)


@pytest.mark.parametrize('name', SHIPPED + ARTICLES)
def test_each_shipped_gin_file_parses_and_builds(name):
  gin_files.parse([name], [])
  data_config, model_config, trainer_config, _ = _build_all()
  assert data_config.order in pipeline.ORDERS
  assert model_config.units >= 1
  assert trainer_config.steps >= 1


@pytest.mark.parametrize('name', SHIPPED)
def test_every_recurrent_layer_a_shipped_recipe_builds_is_cudnn_eligible(
    name):
  """As a GPU run builds them (implementation='keras': on a GPU 'auto' never
  picks the fused op); every shipped recipe is a GRU or LSTM stack."""
  gin_files.parse([name], ["Model.implementation = 'keras'"])
  data_config, model_config, _, _ = _build_all()
  assert model_config.cell in ('gru', 'lstm'), name
  model = network.build(model_config, data_config.sequence_shape, 10, seed=0)
  layers = network.recurrent_layers(model)
  assert len(layers) == model_config.layers
  assert all(network.cudnn_eligible(layer) for layer in layers), name


@pytest.mark.parametrize('name, expected', [
    ('articles/day25_rnn.gin', ('row', 'simple', 128, 1, 'adam', 0.01, 100,
                                5000, 0.0)),
    ('articles/day25_lstm.gin', ('row', 'lstm', 128, 1, 'adam', 0.01, 100,
                                 5000, 0.0)),
    ('articles/popkes_lstm.gin', ('row', 'lstm', 20, 3, 'adam', 0.01, 100,
                                  2200, 0.0)),
    ('articles/understanding_lstm.gin', ('row', 'lstm', 128, 1, 'adam', 1e-3,
                                         128, 800, 0.0)),
    ('articles/ceshine_pixel_gru.gin', ('pixel', 'gru', 128, 1, 'rmsprop',
                                        None, 128, 21500, 2.0)),
    ('articles/ceshine_permuted_gru.gin', ('permuted', 'gru', 128, 1,
                                           'rmsprop', None, 128, 21500, 2.0)),
])
def test_article_configs_carry_the_articles_recipes(name, expected):
  gin_files.parse([name], [])
  d, m, t, _ = _build_all()
  lr = t.learning_rate if isinstance(t.learning_rate, float) else None
  assert (d.order, m.cell, m.units, m.layers, t.optimizer, lr, d.batch_size,
          t.steps, t.clip_norm) == expected
  if name.startswith('articles/ceshine'):
    assert m.batch_norm and d.permutation_seed == 100
    assert t.clip_exclude == ['(^|/)head/']


def test_orders_of_the_task_files():
  for name, order in (('row.gin', 'row'), ('pixel.gin', 'pixel'),
                      ('permuted.gin', 'permuted')):
    gin_files.parse([name], [])
    assert pipeline.DataConfig().order == order


def test_gin_param_reaches_its_object():
  gin_files.parse(['pixel.gin'], ['Trainer.steps = 7', "Model.cell = 'lstm'",
                               'Data.batch_size = 32', 'UNITS = 64'])
  data_config, model_config, trainer_config, _ = _build_all()
  assert trainer_config.steps == 7
  assert model_config.cell == 'lstm'
  assert model_config.units == 64  # through the macro
  assert data_config.batch_size == 32
  assert data_config.order == 'pixel'


def test_a_path_and_a_bare_name_are_the_same_file():
  path = os.path.join(gin_files.gin_dir(), 'row.gin')
  assert gin_files.resolve('row.gin') == path
  assert gin_files.resolve(path) == path


def test_later_files_override_earlier_ones(tmp_path):
  extra = tmp_path / 'short.gin'
  extra.write_text('Trainer.steps = 3\n')
  gin_files.parse(['row.gin', str(extra)], [])
  assert trainer.TrainerConfig().steps == 3


def test_unknown_name_fails_naming_it():
  with pytest.raises(ConfigError,
                     match="'Trainer' doesn't have a parameter named 'stepz'"):
    gin_files.parse(['row.gin'], ['Trainer.stepz = 5'])
  with pytest.raises(ConfigError, match='Nonsense'):
    gin_files.parse(['row.gin'], ['Nonsense.steps = 5'])


def test_missing_gin_file():
  with pytest.raises(ConfigError, match='--gin_file=nope.gin not found'):
    gin_files.parse(['nope.gin'], [])


def test_config_is_finalized():
  gin_files.parse(['row.gin'], [])
  with pytest.raises(RuntimeError):
    gin.bind_parameter('Trainer.steps', 5)


@pytest.mark.parametrize('binding, message', [
    ("Data.order = 'diagonal'", "Data.order='diagonal' is not one of"),
    ('Model.units = 0', 'Model.units=0 must be an integer from 1 to 8,192'),
    ('UNITS = 100000', 'Model.units=100000 must be an integer from 1 to 8,192'),
    ('Trainer.seed = 4294967296',
     'Trainer.seed=4294967296 must be an integer from 0 to 4,294,967,295'),
    ('Data.permutation_seed = 4294967296',
     'Data.permutation_seed=4294967296 must be an integer from 0 to'),
    ('Data.eval_batch_size = 1000000000',
     'Data.eval_batch_size=1000000000 must be an integer from 1 to 70,000'),
    ("Trainer.optimizer = 'adagrad'", "Trainer.optimizer='adagrad'"),
    ('Trainer.learning_rate = -1.0', 'Trainer.learning_rate=-1.0'),
    ('Trainer.clip_norm = -2', 'Trainer.clip_norm=-2'),
    ('Trainer.steps = 0',
     'Trainer.steps=0 must be an integer from 1 to 1,000,000,000'),
    ('Trainer.clip_norm = True', 'Trainer.clip_norm=True must be a finite'),
    ("Model.gate_init = 'zeros'", "Model.gate_init='zeros' is not one of"),
    ("Distribute.strategy = 'tpu'", "Distribute.strategy='tpu'"),
])
def test_wrong_values_fail_naming_the_binding(binding, message):
  gin_files.parse(['row.gin'], [binding])
  with pytest.raises(ConfigError, match=message):
    _build_all()
