"""Prefix trie over the item catalogue's target token sequences, for constrained decoding.

Every item of the catalogue is named by a token id sequence that ends with EOS (its public ID as
target text, encoded by `rec_t5x.vocabulary`, plus EOS). `build_item_trie` validates the sequences
and compiles them into a compressed-sparse-row (CSR) trie:

    node 0 is the root; node n's children are edges offsets[n] .. offsets[n+1]-1
    child_tokens[e] / child_nodes[e]: the token on edge e and the node it leads to
    (sorted by token within a node), leaf_item[n]: the item whose EOS edge ends at n, else -1

Why CSR and not a dense `[num_nodes, vocab]` next-node table: with the T5 vocabulary (32,128) and
ML-1M (about 7,400 nodes) a dense int32 table is ~950 MB, while the CSR form is about 120 KB.
Inside `jit` a node's children are read with one gather of `max_children` edges (`children`), so
the per-step cost is `[rows, max_children]` (11 for digit IDs), and the allowed-token mask over the
vocabulary is only materialised on request (`allowed_token_mask`).

`ItemTrie` is the host-side (numpy) object with the validation messages and lookups;
`ItemTrie.arrays()` gives the `TrieArrays` pytree that the jit-compiled search consumes (pass it as
an argument so the tables are device buffers, not constants baked into the program).

Excluding items (e.g. a user's history) prunes whole branches: `blocked_nodes` marks, per example,
every node whose items are all excluded (from `item_nodes`, the path of each item, and
`subtree_items`, the number of items below each node), and the search never extends a hypothesis
into a blocked node. Without this a beam would spend its slots on prefixes of excluded items and
drop them only at EOS: with one token per item (atomic IDs) a model that likes to repeat its
input filled ~30% of the top-20 with excluded history items that way. The EOS step still masks
excluded items (`eos_edge`), so an excluded item can never be finished; see `rec_t5x.beam_search`.
"""
from collections.abc import Callable, Sequence
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EOS_ID = 1
PAD_ID = 0
ROOT = 0


@flax.struct.dataclass
class TrieArrays:
  """Device form of the trie (a pytree; `max_children`, `num_items` and `max_length` are static).

  Attributes:
    offsets: int32 [num_nodes + 1]; node n's edges are [offsets[n], offsets[n + 1]).
    child_tokens: int32 [num_edges], token of each edge, ascending within a node.
    child_nodes: int32 [num_edges], node each edge leads to.
    leaf_item: int32 [num_nodes], item index completed at this node (its EOS edge), else -1.
    item_nodes: int32 [num_items, max_length], the node reached after each token of each item
      (EOS included), -1 after its end.
    subtree_items: int32 [num_nodes], how many items' sequences pass through the node.
    max_children: most edges of any node (width of `children`).
    num_items: catalogue size.
    max_length: longest item sequence, EOS included.
    (`ItemTrie.arrays` may pad all of these to share one compilation across catalogues.)
  """
  offsets: Array
  child_tokens: Array
  child_nodes: Array
  leaf_item: Array
  item_nodes: Array
  subtree_items: Array
  max_children: int = flax.struct.field(pytree_node=False)
  num_items: int = flax.struct.field(pytree_node=False)
  max_length: int = flax.struct.field(pytree_node=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ItemTrie:
  """The compiled catalogue trie on the host (numpy); see the module docstring.

  Attributes:
    offsets, child_tokens, child_nodes, leaf_item, item_nodes, subtree_items: as in `TrieArrays`
      (numpy int32).
    item_tokens: int32 [num_items, max_length], each item's sequence padded with 0 after EOS (the
      teacher-forcing targets used by `rec_t5x.scoring`).
    item_lengths: int32 [num_items], tokens per item including EOS.
    item_names: [num_items] names used in messages (public IDs as text when built from texts).
    eos_id: end-of-sequence id that terminates every item.
  """
  offsets: np.ndarray
  child_tokens: np.ndarray
  child_nodes: np.ndarray
  leaf_item: np.ndarray
  item_nodes: np.ndarray
  subtree_items: np.ndarray
  item_tokens: np.ndarray
  item_lengths: np.ndarray
  item_names: tuple[str, ...]
  eos_id: int = EOS_ID

  @property
  def num_items(self) -> int:
    return int(self.item_tokens.shape[0])

  @property
  def num_nodes(self) -> int:
    return int(self.leaf_item.shape[0])

  @property
  def max_length(self) -> int:
    return int(self.item_tokens.shape[1])

  @property
  def max_children(self) -> int:
    return int(np.max(np.diff(self.offsets)))

  def arrays(self, *, num_nodes: int | None = None, num_edges: int | None = None,
             max_children: int | None = None, max_length: int | None = None,
             num_items: int | None = None) -> TrieArrays:
    """The jit-friendly `TrieArrays` (jnp int32), optionally padded to fixed sizes.

    Shapes and the static fields select a compilation; padding several catalogues to the same
    sizes lets them share one compiled search. Extra nodes are unreachable and childless.

    Args:
      num_nodes / num_edges / max_children / max_length / num_items: sizes to pad to (None: this
        trie's own); each must be at least the trie's own.

    Returns:
      The `TrieArrays`.
    """
    own = {"num_nodes": self.num_nodes, "num_edges": int(self.child_tokens.shape[0]),
           "max_children": self.max_children, "max_length": self.max_length,
           "num_items": self.num_items}
    asked = {"num_nodes": num_nodes, "num_edges": num_edges, "max_children": max_children,
             "max_length": max_length, "num_items": num_items}
    size = {}
    for name, value in asked.items():
      if value is not None and value < own[name]:
        raise ValueError(f"ItemTrie.arrays({name}={value}): the trie needs {name} >= {own[name]}")
      size[name] = own[name] if value is None else int(value)
    extra_nodes = size["num_nodes"] - own["num_nodes"]
    extra_edges = size["num_edges"] - own["num_edges"]
    offsets = np.concatenate([self.offsets, np.full(extra_nodes, self.offsets[-1], np.int32)])
    pad = lambda x, n, value: np.concatenate([x, np.full(n, value, np.int32)])
    item_nodes = np.full((size["num_items"], size["max_length"]), -1, np.int32)
    item_nodes[:own["num_items"], :own["max_length"]] = self.item_nodes
    return TrieArrays(offsets=jnp.asarray(offsets),
                      child_tokens=jnp.asarray(pad(self.child_tokens, extra_edges, -1)),
                      child_nodes=jnp.asarray(pad(self.child_nodes, extra_edges, -1)),
                      leaf_item=jnp.asarray(pad(self.leaf_item, extra_nodes, -1)),
                      item_nodes=jnp.asarray(item_nodes),
                      subtree_items=jnp.asarray(pad(self.subtree_items, extra_nodes, 0)),
                      max_children=size["max_children"], num_items=size["num_items"],
                      max_length=size["max_length"])

  def next_node(self, node: int, token: int) -> int | None:
    """The child of `node` along `token`, or None when the token is not allowed there."""
    lo, hi = int(self.offsets[node]), int(self.offsets[node + 1])
    pos = lo + int(np.searchsorted(self.child_tokens[lo:hi], token))
    if pos < hi and self.child_tokens[pos] == token:
      return int(self.child_nodes[pos])
    return None

  def item_index(self, tokens: Sequence[int]) -> int | None:
    """The item whose sequence is exactly `tokens` (EOS included), or None."""
    node = ROOT
    for token in tokens:
      node = self.next_node(node, int(token))
      if node is None:
        return None
    item = int(self.leaf_item[node])
    return item if item >= 0 else None

  def item_index_or_raise(self, tokens: Sequence[int], what: str = "sequence") -> int:
    """`item_index`, raising KeyError naming `what` and the tokens when they are no item."""
    item = self.item_index(tokens)
    if item is None:
      raise KeyError(f"{what} {list(map(int, tokens))} is not an item of the catalogue "
                     f"({self.num_items} items; every item ends with EOS id {self.eos_id})")
    return item


def _check_sequences(sequences: Sequence[Sequence[int]], names: Sequence[str], eos_id: int,
                     vocab_size: int | None) -> list[np.ndarray]:
  """Per-item checks; returns the sequences as int64 arrays."""
  if len(sequences) == 0:
    raise ValueError("item catalogue is empty: constrained decoding needs at least one item")
  if len(names) != len(sequences):
    raise ValueError(f"item_names has {len(names)} entries for {len(sequences)} items")
  out = []
  for i, seq in enumerate(sequences):
    arr = np.asarray(seq, dtype=np.int64).reshape(-1)
    label = f"item {i} ({names[i]!r})"
    if arr.size == 0:
      raise ValueError(f"{label} has an empty token sequence; expected ids ending with EOS "
                       f"{eos_id}")
    bad = arr[(arr <= PAD_ID) | ((arr >= vocab_size) if vocab_size else False)]
    if bad.size:
      allowed = f"[1, {vocab_size - 1}]" if vocab_size else ">= 1 (0 is padding)"
      raise ValueError(f"{label} tokens {arr.tolist()} contain id {int(bad[0])}; allowed {allowed}")
    eos_at = np.flatnonzero(arr == eos_id)
    if eos_at.size and eos_at[0] != arr.size - 1:
      raise ValueError(f"{label} tokens {arr.tolist()} have EOS {eos_id} at position "
                       f"{int(eos_at[0])} before their end; EOS may only be the last token")
    out.append(arr)
  _check_terminated(out, names, eos_id)
  return out


def _check_terminated(seqs: list[np.ndarray], names: Sequence[str], eos_id: int) -> None:
  """Every item must end with EOS; names the other item when a missing EOS makes it a prefix."""
  for i, arr in enumerate(seqs):
    if arr[-1] == eos_id:
      continue
    msg = (f"item {i} ({names[i]!r}) tokens {arr.tolist()} do not end with EOS {eos_id}; append "
           "EOS to every item sequence")
    for j, other in enumerate(seqs):
      if j != i and other.size > arr.size and np.array_equal(other[:arr.size], arr):
        msg += (f" (without it the item is a prefix of item {j} ({names[j]!r}) "
                f"{other.tolist()} and could not be told apart)")
        break
    raise ValueError(msg)


def _padded_table(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([s.size for s in seqs], dtype=np.int32)
  table = np.zeros((len(seqs), int(lengths.max())), dtype=np.int32)
  for i, s in enumerate(seqs):
    table[i, :s.size] = s
  return table, lengths


def _check_duplicates(table: np.ndarray, order: np.ndarray, names: Sequence[str]) -> None:
  """`order` sorts the rows; equal neighbours are duplicate items."""
  sorted_rows = table[order]
  same = np.all(sorted_rows[1:] == sorted_rows[:-1], axis=1)
  if np.any(same):
    k = int(np.flatnonzero(same)[0])
    a, b = sorted((int(order[k]), int(order[k + 1])))
    raise ValueError(f"items {a} ({names[a]!r}) and {b} ({names[b]!r}) have the same token "
                     f"sequence {table[a][table[a] > 0].tolist()}; every item needs its own")


def build_item_trie(sequences: Sequence[Sequence[int]], *, item_names: Sequence[str] | None = None,
                    eos_id: int = EOS_ID, vocab_size: int | None = None) -> ItemTrie:
  """Validates the catalogue and compiles its trie (vectorised with numpy sorting).

  Nodes are numbered depth by depth, and within a depth in lexicographic order of their prefixes;
  edges are then grouped by parent with ascending tokens, which is the CSR layout.

  Args:
    sequences: [num_items] token id sequences, each ending with `eos_id`; item i is index i.
    item_names: names for messages (default "0", "1", ...).
    eos_id: end-of-sequence id.
    vocab_size: when given, every token must be < vocab_size.

  Returns:
    The `ItemTrie`.

  Raises:
    ValueError: empty catalogue, an empty sequence, a padding / out-of-range id, EOS missing or
      not last (naming the item it would be a prefix of), or two items with the same sequence.
  """
  names = tuple(str(n) for n in (item_names if item_names is not None else range(len(sequences))))
  seqs = _check_sequences(sequences, names, eos_id, vocab_size)
  table, lengths = _padded_table(seqs)
  num_items, max_length = table.shape
  order = np.lexsort(table.T[::-1])  # lexicographic row order (padding 0 sorts first)
  _check_duplicates(table, order, names)
  rows = table[order]
  valid = np.arange(max_length)[None, :] < lengths[order][:, None]
  # differs[i, d]: row i's first d + 1 tokens differ from row i - 1's.
  differs = np.cumsum(np.concatenate([np.ones((1, max_length), bool), rows[1:] != rows[:-1]]),
                      axis=1) > 0
  node_of = np.zeros((num_items, max_length), np.int64)  # node reached after token d
  parents, tokens, child_ids = [], [], []
  next_id = 1
  parent_of_row = np.zeros(num_items, np.int64)  # root
  for d in range(max_length):
    new = valid[:, d] & differs[:, d]
    new_rows = np.flatnonzero(new)
    ids = next_id + np.arange(new_rows.size)
    next_id += new_rows.size
    # A row's node is the one opened by the last new row at or before it: shared prefixes are
    # contiguous after sorting, and the first valid row of a prefix differs from the row before.
    latest_new = np.maximum(np.cumsum(new) - 1, 0)
    node_of[:, d] = np.where(valid[:, d], ids[latest_new] if new_rows.size else -1, -1)
    parents.append(parent_of_row[new_rows])
    tokens.append(rows[new_rows, d])
    child_ids.append(ids)
    parent_of_row = np.where(valid[:, d], node_of[:, d], parent_of_row)
  parents, tokens, child_ids = (np.concatenate(x) for x in (parents, tokens, child_ids))
  num_nodes = next_id
  edge_order = np.lexsort((tokens, parents))
  offsets = np.zeros(num_nodes + 1, np.int64)
  np.add.at(offsets, parents + 1, 1)
  offsets = np.cumsum(offsets)
  leaf_item = np.full(num_nodes, -1, np.int64)
  last = node_of[np.arange(num_items), lengths[order] - 1]
  leaf_item[last] = order
  item_nodes = np.full((num_items, max_length), -1, np.int64)
  item_nodes[order] = node_of  # node_of is in sorted-row order; item_nodes in item order
  subtree_items = np.zeros(num_nodes, np.int64)
  np.add.at(subtree_items, node_of[node_of >= 0], 1)
  subtree_items[ROOT] = num_items
  return ItemTrie(offsets=offsets.astype(np.int32),
                  child_tokens=tokens[edge_order].astype(np.int32),
                  child_nodes=child_ids[edge_order].astype(np.int32),
                  leaf_item=leaf_item.astype(np.int32), item_nodes=item_nodes.astype(np.int32),
                  subtree_items=subtree_items.astype(np.int32), item_tokens=table,
                  item_lengths=lengths, item_names=names, eos_id=eos_id)


def build_item_trie_from_texts(texts: Sequence[str], encode: Callable[[str], Sequence[int]], *,
                               eos_id: int = EOS_ID, vocab_size: int | None = None) -> ItemTrie:
  """Trie of item target texts (e.g. public IDs "4821"), each encoded and followed by EOS.

  Args:
    texts: [num_items] target texts in item-index order.
    encode: text -> token ids without EOS (e.g. a seqio vocabulary's `encode`).
    eos_id: appended to every sequence.
    vocab_size: optional bound on the ids.

  Returns:
    The `ItemTrie`, with the texts as item names.
  """
  sequences = [list(encode(t)) + [eos_id] for t in texts]
  return build_item_trie(sequences, item_names=texts, eos_id=eos_id, vocab_size=vocab_size)


# --------------------------------------------------------------------------------------------------
# Jit-friendly queries on `TrieArrays`; `nodes` may have any shape, -1 marks a dead state.


def children(trie: TrieArrays, nodes: Array) -> tuple[Array, Array, Array]:
  """The edges leaving each node, padded to `max_children`.

  Args:
    trie: the trie arrays.
    nodes: int32 [...] node ids; -1 (dead) has no children.

  Returns:
    (tokens [..., max_children], next_nodes [..., max_children], valid bool [..., max_children]);
    padded slots have valid False, token -1 and next node -1.
  """
  safe = jnp.maximum(nodes, 0)
  start = trie.offsets[safe]
  count = jnp.where(nodes >= 0, trie.offsets[safe + 1] - start, 0)
  slot = jnp.arange(trie.max_children, dtype=jnp.int32)
  valid = slot < count[..., None]
  edge = jnp.where(valid, start[..., None] + slot, 0)
  tokens = jnp.where(valid, trie.child_tokens[edge], -1)
  next_nodes = jnp.where(valid, trie.child_nodes[edge], -1)
  return tokens, next_nodes, valid


def step(trie: TrieArrays, nodes: Array, tokens: Array) -> Array:
  """Follows `tokens` [...] from `nodes` [...]; -1 where the token is not allowed (or dead)."""
  child_tokens, next_nodes, valid = children(trie, nodes)
  hit = valid & (child_tokens == tokens[..., None])
  return jnp.max(jnp.where(hit, next_nodes, -1), axis=-1)


def allowed_token_mask(trie: TrieArrays, nodes: Array, vocab_size: int) -> Array:
  """bool [..., vocab_size]: True at the tokens allowed after each node (a scatter, not a table)."""
  tokens, _, valid = children(trie, nodes)
  flat_tokens = jnp.where(valid, tokens, vocab_size).reshape(-1, trie.max_children)
  rows = jnp.arange(flat_tokens.shape[0])[:, None]
  mask = jnp.zeros((flat_tokens.shape[0], vocab_size), bool)
  mask = mask.at[rows, flat_tokens].set(True, mode="drop")
  return mask.reshape(nodes.shape + (vocab_size,))


def eos_edge(trie: TrieArrays, nodes: Array, eos_id: int = EOS_ID) -> Array:
  """int32 [...]: the item an EOS after each node would complete, or -1 when EOS is not allowed."""
  return item_of_node(trie, step(trie, nodes, jnp.full(nodes.shape, eos_id, jnp.int32)))


def item_of_node(trie: TrieArrays, nodes: Array) -> Array:
  """int32 [...]: the item completed at each node (after its EOS), else -1."""
  return jnp.where(nodes >= 0, trie.leaf_item[jnp.maximum(nodes, 0)], -1)


def excluded_mask(excluded_items: Array, num_items: int) -> Array:
  """bool [batch, num_items] from item indices int [batch, max_excluded] padded with -1."""
  batch = excluded_items.shape[0]
  index = jnp.where(excluded_items >= 0, excluded_items, num_items)
  mask = jnp.zeros((batch, num_items), bool)
  return mask.at[jnp.arange(batch)[:, None], index].set(True, mode="drop")


def blocked_nodes(trie: TrieArrays, excluded: Array) -> Array:
  """bool [batch, num_nodes]: nodes every one of whose items is excluded for the example.

  Args:
    trie: the trie arrays.
    excluded: bool [batch, num_items] (`excluded_mask`; an item counts once however often it was
      listed).

  Returns:
    True where no allowed item lies below the node, so a hypothesis there can only end in an
    excluded item (or nowhere). Padding nodes (no items) are blocked; they are unreachable anyway.
  """
  batch = excluded.shape[0]
  nodes = trie.item_nodes  # [num_items, length]
  weights = (excluded[:, :, None] & (nodes >= 0)[None]).astype(jnp.int32)
  rows = jnp.arange(batch)[:, None, None]
  counts = jnp.zeros((batch, trie.subtree_items.shape[0]), jnp.int32)
  counts = counts.at[rows, jnp.maximum(nodes, 0)[None]].add(weights)
  return counts >= trie.subtree_items[None]


def check_excluded_items(excluded_items: np.ndarray, num_items: int) -> None:
  """Host check: int [batch, max_excluded] with entries in [0, num_items) or -1 (padding).

  Raises:
    ValueError: naming the first bad [example, position] and value.
  """
  arr = np.asarray(excluded_items)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"excluded_items: expected int [batch, max_excluded] item indices padded with "
                     f"-1, got {arr.dtype} {arr.shape}")
  bad = np.argwhere((arr < -1) | (arr >= num_items))
  if bad.size:
    b, k = map(int, bad[0])
    raise ValueError(f"excluded_items[{b}, {k}] = {int(arr[b, k])}: expected an item index in "
                     f"[0, {num_items}) or -1 (padding)")


def item_of_sequence(trie: TrieArrays, sequences: Array) -> Array:
  """int32 [...]: the item each token sequence names, or -1 when it names none.

  Args:
    trie: the trie arrays.
    sequences: int [..., length] token ids, EOS-terminated, 0 (padding) after EOS; a sequence that
      leaves the trie, or ends before an item's EOS, names no item.

  Returns:
    Item indices, -1 for sequences outside the catalogue (for the invalid rate of unconstrained
    decoding).
  """
  def walk(nodes, token):
    moved = step(trie, nodes, token)
    return jnp.where(token == PAD_ID, nodes, moved), None

  tokens = jnp.moveaxis(sequences.astype(jnp.int32), -1, 0)
  start = jnp.full(sequences.shape[:-1], ROOT, jnp.int32)
  nodes, _ = jax.lax.scan(walk, start, tokens)
  return item_of_node(trie, nodes)
