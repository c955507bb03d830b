"""Tiny synthetic RecDatasets with planted structure for the baseline tests."""
import numpy as np

from rec_t5x.data import dataset as dataset_lib


def make_dataset(sequences, num_items: int, name: str = "synthetic") -> dataset_lib.RecDataset:
  """A RecDataset built directly from per-user item-index lists (chronological)."""
  lengths = [len(s) for s in sequences]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  items = np.asarray([i for s in sequences for i in s], dtype=np.int32)
  return dataset_lib.RecDataset(
      name=name,
      item_public_ids=(np.random.default_rng(0).permutation(num_items) + 1).astype(np.int64),
      item_titles=tuple(f"item {i}" for i in range(num_items)),
      user_offsets=offsets,
      items=items,
      ratings=np.ones(items.size, np.float32),
      timestamps=np.arange(items.size, dtype=np.int64),
      rating_scale=(1.0, 5.0))


def cluster_dataset(num_clusters: int = 4, cluster_size: int = 12, users_per_cluster: int = 25,
                    length: int = 7, seed: int = 0) -> dataset_lib.RecDataset:
  """Co-occurrence structure: each user draws distinct items from one cluster only.

  Item popularity is about uniform, so Pop is near random while a collaborative model that finds
  the clusters ranks the user's remaining cluster items first.
  """
  rng = np.random.default_rng(seed)
  sequences = []
  for c in range(num_clusters):
    for _ in range(users_per_cluster):
      sequences.append((c * cluster_size + rng.permutation(cluster_size)[:length]).tolist())
  rng.shuffle(sequences)
  return make_dataset(sequences, num_clusters * cluster_size, name="clusters")


def chain_dataset(num_items: int = 30, num_users: int = 80, length: int = 10,
                  seed: int = 0) -> dataset_lib.RecDataset:
  """Sequential structure: every user walks the same random cycle over all items.

  The next item is a deterministic function of the current one, while every item is equally
  popular, so only a sequential model can rank the target first.
  """
  rng = np.random.default_rng(seed)
  cycle = rng.permutation(num_items)
  sequences = []
  for _ in range(num_users):
    start = int(rng.integers(num_items))
    sequences.append([int(cycle[(start + k) % num_items]) for k in range(length)])
  return make_dataset(sequences, num_items, name="chain")
