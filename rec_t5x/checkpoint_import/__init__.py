"""Checkpoint importers: T5X legacy, T5X Orbax and Hugging Face safetensors -> our parameter tree.

Every importer returns the nested parameter tree of `rec_t5x.network.Transformer` (T5X's names and
`[in, out]` kernel layout; float32 numpy arrays), ready for `module.apply({"params": params}, ...)`
or for sharding by the partitioner:

    params = load_t5x_legacy("flan_t5_small/checkpoint_1000000")
    params = load_t5x_orbax("model_dir/checkpoint_2000")
    params, config = load_hf("google_flan_t5_small/")         # directory with config.json
    params, config = detect_and_load(path)                    # any of the three; config may be None
    check_compatible(params, model_param_shapes(config))      # ValueError naming each mismatch
"""
import os
import pathlib

from rec_t5x import network
from rec_t5x.checkpoint_import.hf import load_hf
from rec_t5x.checkpoint_import.hf import t5_config_from_hf
from rec_t5x.checkpoint_import.t5x import load_t5x_legacy
from rec_t5x.checkpoint_import.t5x import load_t5x_orbax
from rec_t5x.checkpoint_import.t5x import t5x_config_from_json
from rec_t5x.checkpoint_import.tree import Params
from rec_t5x.checkpoint_import.tree import check_compatible
from rec_t5x.checkpoint_import.tree import model_param_shapes

__all__ = [
    "Params", "check_compatible", "detect_and_load", "detect_format", "load_hf", "load_t5x_legacy",
    "load_t5x_orbax", "model_param_shapes", "t5_config_from_hf", "t5x_config_from_json",
]


def detect_format(path: str | os.PathLike) -> str:
  """Returns "t5x_legacy", "t5x_orbax" or "hf" for a checkpoint path.

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: naming the path, what was looked for and what is there.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if path.is_file():
    if path.name == "checkpoint":
      return "t5x_legacy"
    if path.name.endswith((".safetensors", ".safetensors.index.json")):
      return "hf"
  else:
    if (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file():
      return "hf"
    if (path / "checkpoint").is_file():
      return "t5x_legacy"
    for state in (path / "state", path):
      if (state / "_METADATA").is_file() or (state / "manifest.ocdbt").is_file():
        return "t5x_orbax"
  entries = sorted(p.name for p in path.iterdir())[:10] if path.is_dir() else [path.name]
  raise ValueError(f"{path}: not a recognised checkpoint (looked for a T5X 'checkpoint' msgpack "
                   "index, an Orbax 'state/_METADATA', or model.safetensors[.index.json]); found "
                   f"{entries}")


def detect_and_load(path: str | os.PathLike) -> tuple[Params, network.T5Config | None]:
  """Recognises the checkpoint format and loads it.

  Args:
    path: a T5X `checkpoint_N` directory (legacy or Orbax), a legacy `checkpoint` file, a Hugging
      Face model directory, or a .safetensors file.

  Returns:
    (params, config): the config comes from a Hugging Face config.json; T5X checkpoints do not
    store the network hyper-parameters, so it is None for them (see `t5x_config_from_json`).
  """
  fmt = detect_format(path)
  if fmt == "t5x_legacy":
    return load_t5x_legacy(path), None
  if fmt == "t5x_orbax":
    return load_t5x_orbax(path), None
  return load_hf(path)
