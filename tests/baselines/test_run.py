"""Tests for rec_t5x.baselines.run (gin configs, train_and_evaluate) and outputs (save/load)."""
import gin
import numpy as np
import pytest

from rec_t5x import gin_utils
from rec_t5x.baselines import bpr_mf
from rec_t5x.baselines import common
from rec_t5x.baselines import outputs
from rec_t5x.baselines import run
from rec_t5x.baselines import sasrec
from tests.baselines import synthetic


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def test_gin_files_bind_the_config_dataclasses():
  model_config, train_config = run.parse_model_config("sasrec")
  assert isinstance(model_config, sasrec.SASRecConfig)
  assert (model_config.hidden_dim, model_config.num_blocks, model_config.max_len) == (64, 2, 50)
  assert train_config.batch_size == 64 and train_config.learning_rate == pytest.approx(1e-3)
  model_config, train_config = run.parse_model_config(
      "bpr_mf", gin_bindings=["common.TrainConfig.patience = 7", "bpr_mf.BPRConfig.l2 = 0.5"])
  assert isinstance(model_config, bpr_mf.BPRConfig) and model_config.l2 == 0.5
  assert train_config.patience == 7 and train_config.batch_size == 2048


@pytest.mark.parametrize("model", sorted(run.MODELS))
def test_every_model_gin_file_parses(model):
  model_config, train_config = run.parse_model_config(model)
  assert isinstance(model_config, run.MODELS[model].config_class)
  assert isinstance(train_config, common.TrainConfig)


def test_parse_model_config_names_the_bad_input():
  with pytest.raises(gin_utils.ConfigError, match="'gru4rec'"):
    run.parse_model_config("gru4rec")
  with pytest.raises(gin_utils.ConfigError, match="TrainConfig"):
    run.parse_model_config("pop", gin_bindings=["common.TrainConfig.no_such_field = 1"])


@pytest.mark.parametrize("model", ["pop", "bpr_mf"])
def test_train_and_evaluate_saves_outputs_that_load_back(tmp_path, model):
  ds = synthetic.cluster_dataset(users_per_cluster=10)
  model_config = run.MODELS[model].config_class()
  train_config = common.TrainConfig(max_epochs=2, batch_size=64, top_n=25)
  report = run.train_and_evaluate(ds, model, model_config, train_config, tmp_path / model,
                                  log=lambda _: None)
  loaded = outputs.load(tmp_path / model)
  assert loaded["metrics"]["test"] == pytest.approx(report["test"])
  assert loaded["metrics"]["validation"] == pytest.approx(report["validation"])
  topk = loaded["topk"]
  users = ds.eval_users()
  assert topk["users"].tolist() == users.tolist()
  for split in ("validation", "test"):
    assert topk[f"{split}_items"].shape == (len(users), 25)
    np.testing.assert_array_equal(topk[f"{split}_public_ids"],
                                  ds.item_public_ids[topk[f"{split}_items"]])
    assert np.all(np.diff(topk[f"{split}_scores"], axis=1) <= 0)
  assert topk["test_targets"].tolist() == [ds.test_item(int(u)) for u in users]
  emb = loaded["embeddings"]
  np.testing.assert_array_equal(emb["item_public_ids"], ds.item_public_ids)
  if model == "pop":
    assert emb["item_counts"].shape == (ds.num_items,)
  else:
    assert emb["user_embeddings"].shape == (ds.num_users, 64)
    assert emb["item_embeddings"].shape == (ds.num_items, 64)
  assert "| " + model + " |" in run.summary_table([report])


def test_load_names_the_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.json"):
    outputs.load(tmp_path)
