"""Tests for rec_t5x.trainer: sharded steps equal one device, metrics, microbatches, NaN guard.

Tolerance for "same as one device": the data-, model- and 2-D-parallel runs reorder float32
reductions (all-reduce of gradients, sharded matmuls), so losses must agree to 1e-5 relative and
parameters after three Adafactor steps to rtol 1e-5 / atol 1e-6.
"""
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from rec_t5x import models
from rec_t5x import network
from rec_t5x import optimizers
from rec_t5x import partitioning
from rec_t5x import trainer as trainer_lib

# Every dimension the standard rules shard is divisible by 8 (model-only mesh (1, 8)).
CONFIG = network.T5Config(vocab_size=64, emb_dim=16, num_heads=8, head_dim=4, mlp_dim=32,
                          num_encoder_layers=1, num_decoder_layers=1)
BATCH, ENC_LEN, DEC_LEN = 8, 10, 6
SHAPES = {"encoder_input_tokens": (BATCH, ENC_LEN), "decoder_input_tokens": (BATCH, DEC_LEN)}
FAST = {"xla_backend_optimization_level": 0}  # ~3x faster CPU compiles; tiny shapes run fast anyway
RTOL, ATOL = 1e-5, 1e-6


def make_batch(rng: np.random.RandomState) -> dict[str, np.ndarray]:
  """A padded EncDec batch; even rows hold 23 target tokens, odd rows 5 (microbatch test)."""
  targets = rng.randint(2, CONFIG.vocab_size, (BATCH, DEC_LEN)).astype(np.int32)
  lengths = [6, 1, 6, 2, 5, 1, 6, 1]
  for row, n in enumerate(lengths):
    targets[row, n:] = 0
  inputs = rng.randint(1, CONFIG.vocab_size, (BATCH, ENC_LEN)).astype(np.int32)
  inputs[BATCH // 2:, 7:] = 0
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]],
                                                 axis=1),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.float32)}


BATCHES = [make_batch(np.random.RandomState(i)) for i in range(3)]
MODEL = models.EncoderDecoderModel(network.Transformer(CONFIG), z_loss=1e-4)
OPTIMIZER = optimizers.adafactor(optimizers.LearningRateConfig("rsqrt", 0.1, warmup_steps=2))


def make_trainer(mesh_shape, num_microbatches=1):
  devices = jax.devices()[:mesh_shape[0] * mesh_shape[1]]
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=mesh_shape),
                                         devices=devices, compiler_options=FAST)
  return trainer_lib.Trainer(MODEL, OPTIMIZER, partitioner, SHAPES,
                             num_microbatches=num_microbatches)


def run(trainer, state, batches=BATCHES):
  metrics = []
  for batch in batches:
    state, m = trainer.train_step(state, batch)
    metrics.append(jax.device_get(m))
  return state, metrics


@pytest.fixture(scope="module")
def reference():
  """One device: the initial state, per-step metrics and final parameters."""
  trainer = make_trainer((1, 1))
  state = trainer.init_state(jax.random.PRNGKey(0))
  initial = jax.device_get(state)
  state, metrics = run(trainer, state)
  return {"trainer": trainer, "initial": initial, "metrics": metrics,
          "params": jax.device_get(state.params), "step": int(state.step)}


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
  flat_a = jax.tree_util.tree_flatten_with_path(actual)[0]
  flat_e = jax.tree.leaves(expected)
  assert len(flat_a) == len(flat_e)
  for (path, a), e in zip(flat_a, flat_e):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("mesh_shape", [(8, 1), (1, 8), (4, 2)],
                         ids=["data_only", "model_only", "data_x_model"])
def test_sharded_training_equals_one_device(reference, mesh_shape):
  trainer = make_trainer(mesh_shape)
  if mesh_shape == (4, 2):
    # Sharded initialisation (jit with out_shardings) gives the one-device numbers exactly.
    state = trainer.init_state(jax.random.PRNGKey(0))
    assert_trees_close(jax.device_get(state), reference["initial"], rtol=0, atol=0)
  else:
    state = jax.device_put(reference["initial"], trainer.state_shardings)
  kernel = state.params["decoder"]["logits_dense"]["kernel"]
  assert kernel.sharding.spec == P(None, "model")
  assert state.params["token_embedder"]["embedding"].sharding.spec == P("model", None)

  state, metrics = run(trainer, state)
  assert trainer.num_train_compilations == 1
  assert int(state.step) == reference["step"] == 3
  for got, want in zip(metrics, reference["metrics"]):
    for name in ("loss", "z_loss", "cross_entropy", "grad_norm"):
      np.testing.assert_allclose(got[name], want[name], rtol=RTOL, err_msg=name)
    for name in ("num_target_tokens", "num_correct_tokens", "learning_rate"):
      assert got[name] == want[name], name
  assert_trees_close(jax.device_get(state.params), reference["params"])


def test_metrics_by_hand(reference):
  metrics = reference["metrics"]
  # rsqrt(base 0.1, warm-up 2): steps 0, 1, 2 use 0.1 / sqrt(2).
  np.testing.assert_allclose([m["learning_rate"] for m in metrics], [0.1 / np.sqrt(2)] * 3,
                             rtol=1e-6)
  for m, batch in zip(metrics, BATCHES):
    assert m["num_target_tokens"] == np.sum(batch["decoder_target_tokens"] > 0) == 28
    assert m["accuracy"] == pytest.approx(m["num_correct_tokens"] / 28)
    assert m["loss"] == pytest.approx(m["cross_entropy"] + m["z_loss"], rel=1e-6)
    assert not m["nonfinite"]
  assert metrics[1]["loss"] != metrics[0]["loss"]


def test_grad_norm_and_first_loss_match_pure_functions(reference):
  """The compiled step's first metrics equal the pure pieces evaluated on the initial params."""
  params = reference["initial"].params
  grads, sums = jax.jit(lambda p, b: trainer_lib.compute_grads(MODEL, p, b, None),
                        compiler_options=FAST)(params, BATCHES[0])
  first = reference["metrics"][0]
  np.testing.assert_allclose(float(optax.tree.norm(grads)), first["grad_norm"], rtol=RTOL)
  np.testing.assert_allclose(float(sums["loss"]), first["loss"], rtol=RTOL)
  evaluated = reference["trainer"].eval_step(params, BATCHES[0])
  np.testing.assert_allclose(float(evaluated["loss"]), first["loss"], rtol=RTOL)
  np.testing.assert_allclose(float(evaluated["accuracy"]), first["accuracy"], rtol=RTOL)


def test_microbatches_equal_full_batch(reference):
  """Two microbatches (even / odd rows: 23 and 5 target tokens) on a (4, 2) mesh sum to the
  one-device full-batch gradient."""
  trainer = make_trainer((4, 2), num_microbatches=2)
  state = jax.device_put(reference["initial"], trainer.state_shardings)
  state, metrics = run(trainer, state)
  for got, want in zip(metrics, reference["metrics"]):
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=RTOL)
    assert got["num_target_tokens"] == want["num_target_tokens"]
  assert_trees_close(jax.device_get(state.params), reference["params"])


def test_nonfinite_loss_keeps_state_and_reports_step(reference):
  trainer = reference["trainer"]
  poisoned = jax.tree.map(np.array, reference["initial"])
  poisoned.params["decoder"]["logits_dense"]["kernel"][0, 0] = np.nan
  state = jax.device_put(poisoned, trainer.state_shardings)
  new_state, metrics = trainer.train_step(state, BATCHES[0])
  assert bool(metrics["nonfinite"]) and not np.isfinite(float(metrics["loss"]))
  assert int(new_state.step) == 0  # the update was refused
  np.testing.assert_array_equal(np.asarray(new_state.params["encoder"]["encoder_norm"]["scale"]),
                                poisoned.params["encoder"]["encoder_norm"]["scale"])
  with pytest.raises(trainer_lib.NonFiniteLossError, match="non-finite loss or gradient at step 7"):
    trainer_lib.raise_if_nonfinite(metrics, step=7)
  assert trainer.num_train_compilations == 1


def test_mesh_that_does_not_divide_heads_fails_before_compiling():
  config = network.T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=8, mlp_dim=32,
                            num_encoder_layers=1, num_decoder_layers=1)
  model = models.EncoderDecoderModel(network.Transformer(config))
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=8))
  with pytest.raises(ValueError, match=r"heads=4 is not divisible by mesh axis 'model' of size 8"):
    trainer_lib.Trainer(model, OPTIMIZER, partitioner, SHAPES)


def test_batch_and_microbatch_divisibility_errors():
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  shapes = {"encoder_input_tokens": (6, ENC_LEN), "decoder_input_tokens": (6, DEC_LEN)}
  with pytest.raises(ValueError, match="batch=6 is not divisible by mesh axis 'data' of size 4"):
    trainer_lib.Trainer(MODEL, OPTIMIZER, partitioner, shapes)
  with pytest.raises(ValueError, match="global batch size 8 is not divisible by num_microbatches=4 "
                                       "times the 'data' mesh axis size 4"):
    trainer_lib.Trainer(MODEL, OPTIMIZER, partitioner, SHAPES, num_microbatches=4)
