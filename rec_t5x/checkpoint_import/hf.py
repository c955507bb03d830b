"""Hugging Face T5 / FLAN-T5 safetensors checkpoints -> our (T5X-layout) parameter tree.

Reads `model.safetensors` (or a sharded `model.safetensors.index.json`) with safetensors' numpy API
(no torch) and `config.json`. Name map (i = block index):

  shared.weight                                   -> token_embedder/embedding           (as is)
  {enc,dec}oder.block.i.layer.0.SelfAttention.{q,k,v,o}.weight
                                                  -> {..}/layers_i/{attention | self_attention}/
                                                     {query,key,value,out}/kernel       (transposed)
  decoder.block.i.layer.1.EncDecAttention.*       -> decoder/layers_i/encoder_decoder_attention/*
  *.DenseReluDense.{wi,wi_0,wi_1,wo}.weight       -> .../mlp/{wi,wi_0,wi_1,wo}/kernel  (transposed)
  *.layer.j.layer_norm.weight                     -> the pre-attention / pre-cross / pre-MLP norm
  {enc,dec}oder.final_layer_norm.weight           -> {encoder_norm | decoder_norm}/scale
  {..}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                                  -> {encoder,decoder}/relpos_bias/rel_embedding (T)
  lm_head.weight                                  -> decoder/logits_dense/kernel        (transposed)

`{encoder,decoder}.embed_tokens.weight` are aliases of `shared.weight` (checked equal, then
dropped); any other key is reported as an error.

Output layer: transformers rescales the decoder output by d_model**-0.5 when
`scale_decoder_outputs` is true, or, when that key is absent, when `tie_word_embeddings` is true
(T5 1.0). Rescaled output needs the tied embedding (`logits_via_embedding=True`, T5X's scaling);
without rescaling the output matrix is `lm_head.weight` when present (T5 v1.1 / FLAN-T5) or else a
copy of the embedding (tied without rescaling, numerically identical at inference).
"""
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors

from rec_t5x import network
from rec_t5x.checkpoint_import import tree

Params = tree.Params

_ATTENTION = {"q": "query", "k": "key", "v": "value", "o": "out"}
_MLP = {"wi", "wi_0", "wi_1", "wo"}
# (stack, layer index in a block) -> (attention module name in HF, T5X name, T5X norm name)
_SUBLAYERS = {
    ("encoder", 0): ("SelfAttention", "attention", "pre_attention_layer_norm"),
    ("encoder", 1): ("DenseReluDense", "mlp", "pre_mlp_layer_norm"),
    ("decoder", 0): ("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
    ("decoder", 1): ("EncDecAttention", "encoder_decoder_attention",
                     "pre_cross_attention_layer_norm"),
    ("decoder", 2): ("DenseReluDense", "mlp", "pre_mlp_layer_norm"),
}
_BLOCK_KEY = re.compile(
    r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(\w+)\.(?:(\w+)\.)?weight$")
_FINAL_NORM = {"encoder": "encoder/encoder_norm/scale", "decoder": "decoder/decoder_norm/scale"}
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# transformers activation names -> rec_t5x.layers.ACTIVATIONS names.
_HF_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact",
                   "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh"}


def hf_key_to_t5x(key: str) -> tuple[str, bool] | None:
  """Maps one HF tensor name to (T5X parameter path, transpose?); None when not a T5 weight.

  `lm_head.weight`, `shared.weight` and the embedding aliases are handled by `load_hf`.
  """
  if key.startswith(("encoder.final_layer_norm.", "decoder.final_layer_norm.")):
    stack = key.split(".")[0]
    return (_FINAL_NORM[stack], False) if key.endswith(".weight") and key.count(".") == 2 else None
  match = _BLOCK_KEY.match(key)
  if not match:
    return None
  stack, block, sub, module, leaf = match.groups()
  names = _SUBLAYERS.get((stack, int(sub)))
  if names is None:
    return None
  hf_module, t5x_module, norm = names
  prefix = f"{stack}/layers_{block}"
  if module == "layer_norm" and leaf is None:
    return f"{prefix}/{norm}/scale", False
  if module != hf_module or leaf is None:
    return None
  if hf_module == "DenseReluDense":
    return (f"{prefix}/mlp/{leaf}/kernel", True) if leaf in _MLP else None
  if leaf in _ATTENTION:
    return f"{prefix}/{t5x_module}/{_ATTENTION[leaf]}/kernel", True
  if leaf == "relative_attention_bias" and block == "0" and hf_module == "SelfAttention":
    return f"{stack}/relpos_bias/rel_embedding", True
  return None


def _find_files(path: pathlib.Path) -> tuple[list[pathlib.Path], pathlib.Path | None]:
  """Safetensors files and config.json (None when absent) for a directory or a file."""
  if not path.exists():
    raise FileNotFoundError(f"Hugging Face checkpoint not found: {path}")
  directory = path if path.is_dir() else path.parent
  config = directory / "config.json"
  if path.is_dir():
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
      path = single
    elif index.is_file():
      path = index
    else:
      raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
  if path.name.endswith(".index.json"):
    try:
      weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: not a safetensors index with a 'weight_map': {e}") from e
    files = [directory / name for name in sorted(set(weight_map.values()))]
  else:
    files = [path]
  for f in files:
    if not f.is_file():
      raise FileNotFoundError(f"safetensors file not found: {f}")
  return files, (config if config.is_file() else None)


def _read_tensors(files: list[pathlib.Path]) -> dict[str, np.ndarray]:
  tensors: dict[str, np.ndarray] = {}
  for f in files:
    try:
      with safetensors.safe_open(str(f), framework="numpy") as reader:
        for key in reader.keys():
          if key in tensors:
            raise ValueError(f"{f}: tensor '{key}' also appears in another shard")
          tensors[key] = reader.get_tensor(key)
    except (OSError, safetensors.SafetensorError) as e:
      raise ValueError(f"{f}: cannot read safetensors file: {e}") from e
  return tensors


def _read_config(config_path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads(config_path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{config_path}: cannot parse JSON: {e}") from e


def rescales_decoder_output(hf_config: Mapping[str, Any]) -> bool:
  """Whether transformers multiplies the decoder output by d_model**-0.5 before the output layer."""
  if "scale_decoder_outputs" in hf_config:
    return bool(hf_config["scale_decoder_outputs"])
  return bool(hf_config.get("tie_word_embeddings", True))


def _mlp_activations(hf_config: Mapping[str, Any], where: str) -> tuple[str, ...]:
  proj = hf_config.get("feed_forward_proj", "relu")
  gated = proj.startswith("gated-")
  act = hf_config.get("dense_act_fn")
  if act is None:
    act = proj.split("-")[-1]
    act = "gelu_new" if (gated and act == "gelu") else act  # transformers' own special case
  if act not in _HF_ACTIVATIONS:
    raise ValueError(f"{where}: activation {act!r} (feed_forward_proj={proj!r}) is not supported; "
                     f"supported: {sorted(_HF_ACTIVATIONS)}")
  return (_HF_ACTIVATIONS[act], "linear") if gated else (_HF_ACTIVATIONS[act],)


def t5_config_from_hf(hf_config: Mapping[str, Any], *, logits_via_embedding: bool,
                      where: str = "config.json") -> network.T5Config:
  """Builds our T5Config from a transformers T5 `config.json` dict.

  Activations are float32 (`dtype`): the checkpoint's storage dtype says nothing about the dtype a
  user wants to run in.

  Args:
    hf_config: the parsed config.json.
    logits_via_embedding: the output-layer decision of `load_hf`.
    where: file name for error messages.

  Returns:
    the T5Config.
  """
  try:
    return network.T5Config(
        vocab_size=hf_config["vocab_size"], emb_dim=hf_config["d_model"],
        num_heads=hf_config["num_heads"], head_dim=hf_config["d_kv"], mlp_dim=hf_config["d_ff"],
        num_encoder_layers=hf_config["num_layers"],
        num_decoder_layers=hf_config.get("num_decoder_layers") or hf_config["num_layers"],
        mlp_activations=_mlp_activations(hf_config, where),
        dropout_rate=float(hf_config.get("dropout_rate", 0.0)),
        logits_via_embedding=logits_via_embedding, dtype="float32",
        relpos_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
        relpos_max_distance=hf_config.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)))
  except KeyError as e:
    raise ValueError(f"{where}: missing T5 config key {e}") from e
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from e


def _output_layer(tensors: dict[str, np.ndarray], hf_config: Mapping[str, Any] | None,
                  where: str) -> tuple[np.ndarray | None, bool]:
  """Decides the output layer: (logits_dense kernel or None, logits_via_embedding)."""
  shared = tensors["shared.weight"]
  lm_head = tensors.pop("lm_head.weight", None)
  if hf_config is None:  # no config: a separate lm_head means T5 v1.1, none means tied T5 1.0
    return (None, True) if lm_head is None else (lm_head.T, False)
  if rescales_decoder_output(hf_config):
    if lm_head is not None and not np.array_equal(lm_head, shared):
      raise ValueError(f"{where}: the config asks for a rescaled output tied to the embedding "
                       "(tie_word_embeddings / scale_decoder_outputs), but lm_head.weight differs "
                       "from shared.weight; a separate, rescaled output layer is not supported")
    return None, True
  return (shared if lm_head is None else lm_head).T, False


def load_hf(path: str | os.PathLike) -> tuple[Params, network.T5Config | None]:
  """Loads a transformers T5 checkpoint into our parameter tree.

  Args:
    path: a directory with config.json and model.safetensors (or model.safetensors.index.json),
      or a .safetensors / .safetensors.index.json file (config.json beside it is used if present).

  Returns:
    (params, config): nested float32 parameter tree in T5X's layout, and the matching T5Config
    (None when there is no config.json; the output layer is then decided by lm_head.weight alone).

  Raises:
    FileNotFoundError: naming the missing file.
    ValueError: naming unknown or missing tensors, shape mismatches, or unreadable files.
  """
  files, config_path = _find_files(pathlib.Path(path))
  where = str(files[0] if len(files) == 1 else files[0].parent)
  tensors = _read_tensors(files)
  if "shared.weight" not in tensors:
    raise ValueError(f"{where}: tensor 'shared.weight' (the token embedding) is missing")
  for alias in _EMBED_ALIASES:
    if alias in tensors and not np.array_equal(tensors.pop(alias), tensors["shared.weight"]):
      raise ValueError(f"{where}: '{alias}' differs from 'shared.weight'; untied input embeddings "
                       "are not supported")
  hf_config = _read_config(config_path) if config_path is not None else None
  logits_kernel, logits_via_embedding = _output_layer(tensors, hf_config, where)

  flat = {"token_embedder/embedding": tree.as_float32(tensors.pop("shared.weight"))}
  if logits_kernel is not None:
    flat["decoder/logits_dense/kernel"] = tree.as_float32(logits_kernel)
  unknown = []
  for key, value in tensors.items():
    mapped = hf_key_to_t5x(key)
    if mapped is None:
      unknown.append(key)
      continue
    name, transpose = mapped
    flat[name] = tree.as_float32(value.T if transpose else value)
  if unknown:
    raise ValueError(f"{where}: {len(unknown)} tensors are not T5 encoder-decoder weights we know "
                     f"how to map: {sorted(unknown)[:20]}")
  params = tree.unflatten(flat)
  if hf_config is None:
    return params, None
  config = t5_config_from_hf(hf_config, logits_via_embedding=logits_via_embedding,
                             where=str(config_path))
  try:
    tree.check_compatible(params, tree.model_param_shapes(config))
  except ValueError as e:
    raise ValueError(f"{where} vs {config_path}: {e}") from e
  return params, config
