"""Exact matmul FLOP counts for a T5 v1.1 / FLAN-T5 encoder-decoder, and benchmark model shapes.

Used by the benchmark scripts to turn step times into model FLOPs utilisation (MFU). Only matrix
multiplications are counted (projections, attention scores and values, the gated MLP and the output
layer); training is counted as 3 x forward, as in the anchors of ../shared/reference/performance.md.
For FLAN-T5-small dims, batch 8, encoder length 128 and decoder length 16 this gives 170.3 GFLOP per
training step, the figure those anchors quote.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
  """Network dimensions that determine the FLOP count and the benchmark models."""
  name: str
  d_model: int
  num_heads: int
  head_dim: int
  d_ff: int
  num_encoder_layers: int
  num_decoder_layers: int
  vocab_size: int = 32128


SHAPES = {
    "tiny": Shape("tiny", 128, 4, 32, 512, 2, 2),
    "small": Shape("small", 512, 6, 64, 1024, 8, 8),
    "base": Shape("base", 768, 12, 64, 2048, 12, 12),
}


def _attention_flops(q_len: int, kv_len: int, d_model: int, inner: int, self_attention: bool) -> int:
  """Projections, scores and weighted values of one attention block for one example."""
  q_proj = 2 * q_len * d_model * inner
  kv_proj = 2 * 2 * kv_len * d_model * inner
  out_proj = 2 * q_len * inner * d_model
  scores = 2 * q_len * kv_len * inner
  values = 2 * q_len * kv_len * inner
  del self_attention  # The same count either way; kept for readability at call sites.
  return q_proj + kv_proj + out_proj + scores + values


def forward_flops_per_example(shape: Shape, encoder_length: int, decoder_length: int) -> int:
  """Matmul FLOPs of one forward pass over one (padded) example.

  Args:
    shape: network dimensions.
    encoder_length: encoder tokens per example (padded length: padding is computed too).
    decoder_length: decoder tokens per example.

  Returns:
    FLOPs as an integer (2 per multiply-add).
  """
  inner = shape.num_heads * shape.head_dim
  mlp = lambda length: 2 * 2 * length * shape.d_model * shape.d_ff + 2 * length * shape.d_ff * shape.d_model
  encoder_layer = _attention_flops(encoder_length, encoder_length, shape.d_model, inner, True) + mlp(encoder_length)
  decoder_layer = (
      _attention_flops(decoder_length, decoder_length, shape.d_model, inner, True)
      + _attention_flops(decoder_length, encoder_length, shape.d_model, inner, False)
      + mlp(decoder_length))
  logits = 2 * decoder_length * shape.d_model * shape.vocab_size
  return (shape.num_encoder_layers * encoder_layer + shape.num_decoder_layers * decoder_layer + logits)


def train_step_flops(shape: Shape, batch_size: int, encoder_length: int, decoder_length: int) -> int:
  """Matmul FLOPs of one training step (forward + backward = 3 x forward)."""
  return 3 * batch_size * forward_flops_per_example(shape, encoder_length, decoder_length)


if __name__ == "__main__":
  print(f"{train_step_flops(SHAPES['small'], 8, 128, 16) / 1e9:.1f} GFLOP (FLAN-T5-small, 8 x 128 -> 16)")
