"""Tests for rec_t5x.checkpoints: round trip, keep-K, resharding, exact resume, SIGTERM, initial."""
import dataclasses
import json
import os
import signal

import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rec_t5x import checkpoint_import
from rec_t5x import checkpoints
from rec_t5x import models
from rec_t5x import network
from rec_t5x import optimizers
from rec_t5x import partitioning
from rec_t5x import trainer as trainer_lib

# Dropout is on, so exact resume also checks that step s always uses the same dropout key.
CONFIG = network.T5Config(vocab_size=64, emb_dim=16, num_heads=8, head_dim=4, mlp_dim=32,
                          num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.1)
BATCH, ENC_LEN, DEC_LEN = 8, 10, 6
SHAPES = {"encoder_input_tokens": (BATCH, ENC_LEN), "decoder_input_tokens": (BATCH, DEC_LEN)}
FAST = {"xla_backend_optimization_level": 0}
MODEL = models.EncoderDecoderModel(network.Transformer(CONFIG))
OPTIMIZER = optimizers.adafactor(optimizers.LearningRateConfig("rsqrt", 0.1, warmup_steps=2))


def make_batch(index: int) -> dict[str, np.ndarray]:
  rng = np.random.RandomState(index)
  targets = rng.randint(2, CONFIG.vocab_size, (BATCH, DEC_LEN)).astype(np.int32)
  targets[::2, 4:] = 0
  inputs = rng.randint(1, CONFIG.vocab_size, (BATCH, ENC_LEN)).astype(np.int32)
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]],
                                                 axis=1),
          "decoder_target_tokens": targets}


def make_trainer(mesh_shape, model=MODEL, shapes=SHAPES):
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=mesh_shape),
                                         compiler_options=FAST)
  return trainer_lib.Trainer(model, OPTIMIZER, partitioner, shapes, dropout_seed=3)


@pytest.fixture(scope="module")
def trainer():
  return make_trainer((4, 2))


@pytest.fixture(scope="module")
def uninterrupted(trainer):
  """Four steps without interruption: the reference for the resume test."""
  state = trainer.init_state(jax.random.PRNGKey(0))
  for i in range(4):
    state, _ = trainer.train_step(state, make_batch(i))
  return jax.device_get(state)


def assert_trees_equal(actual, expected):
  for (path, a), e in zip(jax.tree_util.tree_flatten_with_path(actual)[0],
                          jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=jax.tree_util.keystr(path))


def test_resume_after_crash_is_exact(trainer, uninterrupted, tmp_path):
  """Train 2 steps, save, "crash" (drop state and manager), restore, train 2 more."""
  manager = checkpoints.CheckpointManager(tmp_path, save_every=2, keep=3)
  state = trainer.init_state(jax.random.PRNGKey(0))
  batches_read = 0
  for _ in range(3):
    state, _ = trainer.train_step(state, make_batch(batches_read))
    batches_read += 1
    manager.save(int(state.step), state, input_state={"batches_read": batches_read})
  manager.wait_until_finished()
  assert manager.all_steps() == [2]  # step 1 and 3 are not due
  del state, manager  # the crash: only what is on disk survives

  manager = checkpoints.CheckpointManager(tmp_path, save_every=2, keep=3)
  state, input_state = manager.restore(trainer.abstract_state)
  assert int(state.step) == 2 and input_state == {"batches_read": 2}
  for i in range(input_state["batches_read"], 4):
    state, _ = trainer.train_step(state, make_batch(i))
  assert_trees_equal(jax.device_get(state), uninterrupted)
  manager.close()


def test_round_trip_keep_k_bytes_and_other_mesh(trainer, tmp_path):
  state = trainer.init_state(jax.random.PRNGKey(1))
  with checkpoints.CheckpointManager(tmp_path, save_every=2, keep=2) as manager:
    saved = {}
    for i in range(6):
      state, _ = trainer.train_step(state, make_batch(i))
      step = int(state.step)
      if manager.save(step, state, input_state=b"\x00pos" + bytes([step])):
        saved[step] = jax.device_get(state)
    manager.wait_until_finished()
    assert sorted(saved) == [2, 4, 6]
    assert manager.all_steps() == [4, 6] and manager.latest_step() == 6  # keep=2
    assert not manager.save(6, state, force=True)  # already saved: no second write

    restored, input_state = manager.restore(trainer.abstract_state)
    assert input_state == b"\x00pos\x06"
    assert_trees_equal(jax.device_get(restored), saved[6])

    # Restore step 4 onto a model-parallel (1, 8) mesh.
    other = make_trainer((1, 8))
    restored, _ = manager.restore(other.abstract_state, step=4)
    assert restored.params["decoder"]["logits_dense"]["kernel"].sharding.mesh.shape == {
        "data": 1, "model": 8}
    assert restored.params["decoder"]["logits_dense"]["kernel"].sharding.spec == P(None, "model")
    assert_trees_equal(jax.device_get(restored), saved[4])
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 2 .* have \\[4, 6\\]"):
      manager.restore(trainer.abstract_state, step=2)


def test_sigterm_saves_then_stops(trainer, tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  state = trainer.init_state(jax.random.PRNGKey(0))
  stopped_at = None
  with checkpoints.CheckpointManager(tmp_path, save_every=100) as manager:
    with checkpoints.SigtermFlag() as flag:
      for i in range(10):
        state, _ = trainer.train_step(state, make_batch(i))
        step = int(state.step)
        manager.save(step, state)
        if step == 3:
          os.kill(os.getpid(), signal.SIGTERM)  # the scheduler preempts us
        if flag.requested():
          manager.save(step, state, input_state={"batches_read": i + 1}, force=True)
          manager.wait_until_finished()
          stopped_at = step
          break
    assert stopped_at == 3 and manager.all_steps() == [3]
    _, input_state = manager.restore(trainer.abstract_state)
    assert input_state == {"batches_read": 3}
  assert signal.getsignal(signal.SIGTERM) == previous


def test_restore_errors(trainer, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    checkpoints.CheckpointManager(tmp_path, save_every=1).restore(trainer.abstract_state)
  with pytest.raises(ValueError, match="CheckpointManager.save_every=0"):
    checkpoints.CheckpointManager(tmp_path, save_every=0)
  with pytest.raises(ValueError, match="CheckpointManager.keep=0"):
    checkpoints.CheckpointManager(tmp_path, save_every=1, keep=0)
  two_processes = {"kind": "json", "per_process": ["MQ==", "Mg=="]}
  with pytest.raises(ValueError, match="saved by 2 processes but 1 are running"):
    checkpoints._decode_input_state(two_processes, "ckpt")  # pylint: disable=protected-access


def test_restore_initial_from_our_checkpoint(trainer, tmp_path):
  state = trainer.init_state(jax.random.PRNGKey(5))
  state, _ = trainer.train_step(state, make_batch(0))
  with checkpoints.CheckpointManager(tmp_path, save_every=1) as manager:
    manager.save(1, state)
  expected = jax.device_get(state.params)
  other = make_trainer((1, 8))
  for path in (tmp_path, tmp_path / "1"):  # the run directory (latest step) or one step
    params = checkpoints.restore_initial(path, other.abstract_state.params)
    assert params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].sharding.spec == P(None, "model")
    assert_trees_equal(jax.device_get(params), expected)
  fresh = other.state_from_params(params)
  assert int(fresh.step) == 0
  wider = make_trainer((4, 2), models.EncoderDecoderModel(network.Transformer(
      dataclasses.replace(CONFIG, mlp_dim=64))))
  with pytest.raises(ValueError, match=r"shape mismatch for decoder/layers_0/mlp/wi_0/kernel: "
                                       r"checkpoint \(16, 32\) vs model \(16, 64\)"):
    checkpoints.restore_initial(tmp_path, wider.abstract_state.params)


def _fixture_config(shared_fixtures, **overrides):
  fields = json.loads((shared_fixtures / "t5x_config.json").read_text())["T5Config"]
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()
            if k != "float32_attention_logits"}
  return network.T5Config(**{**fields, **overrides})


@pytest.mark.parametrize("checkpoint", ["t5x_legacy/checkpoint_0", "t5x_orbax/checkpoint_0",
                                        "hf_t5"])
def test_restore_initial_from_imported_checkpoints(shared_fixtures, checkpoint):
  path = shared_fixtures / checkpoint
  shapes = {"encoder_input_tokens": (4, 8), "decoder_input_tokens": (4, 4)}
  model = models.EncoderDecoderModel(network.Transformer(_fixture_config(shared_fixtures)))
  target = make_trainer((4, 2), model, shapes)
  params = checkpoints.restore_initial(path, target.abstract_state.params)
  loaded, _ = checkpoint_import.detect_and_load(path)
  assert_trees_equal(params, loaded)
  assert params["decoder"]["logits_dense"]["kernel"].sharding.spec == P(None, "model")

  wrong = models.EncoderDecoderModel(network.Transformer(_fixture_config(shared_fixtures,
                                                                         mlp_dim=128)))
  with pytest.raises(ValueError, match=r"shape mismatch for encoder/layers_0/mlp/wi_0/kernel: "
                                       r"checkpoint \(32, 64\) vs model \(32, 128\)"):
    checkpoints.restore_initial(path, make_trainer((4, 2), wrong, shapes).abstract_state.params)
  deeper = models.EncoderDecoderModel(network.Transformer(_fixture_config(shared_fixtures,
                                                                          num_decoder_layers=3)))
  with pytest.raises(ValueError, match=r"missing parameter decoder/layers_2/mlp/wo/kernel "
                                       r"\(model shape \(64, 32\)\)"):
    checkpoints.restore_initial(path, make_trainer((4, 2), deeper, shapes).abstract_state.params)
