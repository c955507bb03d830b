"""Tests for rec_t5x.item_trie: construction, validation, jit-friendly queries, exclusions."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import item_trie

EOS = item_trie.EOS_ID
CATALOGUE = [[5, 3, EOS], [5, 4, EOS], [6, EOS], [5, EOS], [7, 3, 3, EOS], [7, 3, EOS],
             [5, 4, 2, EOS]]


def _reference_children(sequences):
  """prefix tuple -> set of next tokens, built the obvious way (independent of the CSR code)."""
  out = {}
  for seq in sequences:
    for d in range(len(seq)):
      out.setdefault(tuple(seq[:d]), set()).add(seq[d])
  return out


def _prefixes(trie, sequences):
  """(prefix, node) for every prefix of every item, found by walking `next_node`."""
  out = {}
  for seq in sequences:
    node = item_trie.ROOT
    out[()] = node
    for d, token in enumerate(seq):
      node = trie.next_node(node, token)
      out[tuple(seq[:d + 1])] = node
  return out


def _digit_sequences(ids):
  return [[2 + int(c) for c in str(i)] + [EOS] for i in ids]  # digit d -> token 2 + d


def test_every_item_round_trips_and_nothing_else_is_an_item():
  trie = item_trie.build_item_trie(CATALOGUE)
  for i, seq in enumerate(CATALOGUE):
    assert trie.item_index(seq) == i
  assert trie.item_index([5, 3]) is None            # a prefix without EOS
  assert trie.item_index([5, 3, EOS, EOS]) is None  # past a leaf
  assert trie.item_index([9, EOS]) is None
  assert trie.num_items == len(CATALOGUE)
  assert trie.max_length == 4


def test_csr_children_equal_a_dictionary_trie():
  trie = item_trie.build_item_trie(CATALOGUE)
  reference = _reference_children(CATALOGUE)
  nodes = _prefixes(trie, CATALOGUE)
  assert trie.num_nodes == len(nodes)  # one node per distinct prefix (root included)
  for prefix, node in nodes.items():
    lo, hi = trie.offsets[node], trie.offsets[node + 1]
    tokens = trie.child_tokens[lo:hi].tolist()
    assert tokens == sorted(reference.get(prefix, set())), prefix
    is_leaf = prefix and prefix[-1] == EOS
    assert trie.leaf_item[node] == (CATALOGUE.index(list(prefix)) if is_leaf else -1)


@jax.jit
def _queries(arrays, ids):
  tokens, _, valid = item_trie.children(arrays, ids)
  every_token = jnp.arange(9, dtype=jnp.int32)
  steps = item_trie.step(arrays, jnp.broadcast_to(ids[:, None], (ids.shape[0], 9)),
                         jnp.broadcast_to(every_token, (ids.shape[0], 9)))
  return (tokens, valid, item_trie.allowed_token_mask(arrays, ids, vocab_size=9), steps,
          item_trie.eos_edge(arrays, ids))


def test_jit_queries_agree_with_host_walk():
  trie = item_trie.build_item_trie(CATALOGUE)
  nodes = _prefixes(trie, CATALOGUE)
  prefixes = list(nodes)
  ids = jnp.asarray([nodes[p] for p in prefixes] + [-1], jnp.int32)
  tokens, valid, mask, steps, eos_items = map(np.asarray, _queries(trie.arrays(), ids))
  reference = _reference_children(CATALOGUE)
  for row, prefix in enumerate(prefixes):
    allowed = sorted(reference.get(prefix, set()))
    assert tokens[row][valid[row]].tolist() == allowed
    assert np.flatnonzero(mask[row]).tolist() == allowed
    for token in range(9):
      want = trie.next_node(nodes[prefix], token)
      assert steps[row, token] == (-1 if want is None else want)
    want_item = trie.item_index(list(prefix) + [EOS])
    assert eos_items[row] == (-1 if want_item is None else want_item)
  # The dead state (-1) has no children and goes nowhere.
  assert not valid[-1].any() and not mask[-1].any() and eos_items[-1] == -1
  assert np.all(steps[-1] == -1)


def test_item_of_sequence_names_items_and_rejects_the_rest():
  arrays = item_trie.build_item_trie(CATALOGUE).arrays()
  rows = [seq + [0] * (5 - len(seq)) for seq in CATALOGUE]
  rows += [[5, 3, 0, 0, 0], [5, 3, EOS, 4, 0], [9, EOS, 0, 0, 0], [0] * 5]
  got = np.asarray(item_trie.item_of_sequence(arrays, jnp.asarray(rows)))
  assert got.tolist() == list(range(len(CATALOGUE))) + [-1, -1, -1, -1]


@jax.jit
def _eos_and_mask(arrays, ids):
  return item_trie.eos_edge(arrays, ids), item_trie.allowed_token_mask(arrays, ids, 9)


def test_padded_arrays_answer_like_the_exact_ones():
  trie = item_trie.build_item_trie(CATALOGUE)
  padded = trie.arrays(num_nodes=trie.num_nodes + 7, num_edges=40, max_children=6, max_length=9,
                       num_items=20)
  assert (padded.max_children, padded.max_length, padded.num_items) == (6, 9, 20)
  ids = jnp.arange(-1, trie.num_nodes + 7, dtype=jnp.int32)
  want = _eos_and_mask(trie.arrays(), jnp.where(ids < trie.num_nodes, ids, -1))
  for got, expected in zip(_eos_and_mask(padded, ids), want):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  with pytest.raises(ValueError, match=r"max_children=1\): the trie needs max_children >= 3"):
    trie.arrays(max_children=1)


def test_ml1m_sized_digit_catalogue_is_small_and_exact():
  ids = np.random.default_rng(0).permutation(np.arange(1, 3707))
  sequences = _digit_sequences(ids)
  trie = item_trie.build_item_trie(sequences, item_names=[str(i) for i in ids])
  assert trie.max_children == 11  # ten digits + EOS
  assert trie.num_nodes == 1 + 3706 + 3706  # root, one node per digit prefix (= per id), leaves
  memory = sum(a.nbytes for a in (trie.offsets, trie.child_tokens, trie.child_nodes,
                                  trie.leaf_item))
  assert memory < 200_000
  for index in (0, 17, 3705):
    assert trie.item_index(sequences[index]) == index


def test_from_texts_encodes_and_appends_eos():
  encode = lambda text: [2 + int(c) for c in text]
  trie = item_trie.build_item_trie_from_texts(["12", "1", "3"], encode, vocab_size=12)
  assert trie.item_index([3, 4, EOS]) == 0 and trie.item_index([3, EOS]) == 1
  assert trie.item_names == ("12", "1", "3")


@pytest.mark.parametrize("sequences, names, message", [
    ([], None, "item catalogue is empty"),
    ([[5, EOS], []], None, r"item 1 \('1'\) has an empty token sequence"),
    ([[5, 3, EOS], [6, EOS], [5, 3, EOS]], ["4821", "17", "99"],
     r"items 0 \('4821'\) and 2 \('99'\) have the same token sequence \[5, 3, 1\]"),
    ([[5, 3], [5, 3, 4, EOS]], ["53", "534"],
     r"item 0 \('53'\) tokens \[5, 3\] do not end with EOS 1.*prefix of item 1 \('534'\)"),
    ([[5, EOS, 3, EOS]], None, r"EOS 1 at position 1 before their end"),
    ([[5, 0, EOS]], None, r"contain id 0; allowed >= 1 \(0 is padding\)"),
    ([[5, 3, EOS], [5, 3]], ["a", "b"], r"item 1 \('b'\) tokens \[5, 3\] do not end with EOS"),
])
def test_invalid_catalogues_are_rejected_with_the_item_named(sequences, names, message):
  with pytest.raises(ValueError, match=message):
    item_trie.build_item_trie(sequences, item_names=names)


def test_out_of_vocabulary_token_and_name_count_are_rejected():
  with pytest.raises(ValueError, match=r"item 0 \('0'\) tokens \[5, 9, 1\] contain id 9; allowed "
                     r"\[1, 7\]"):
    item_trie.build_item_trie([[5, 9, EOS]], vocab_size=8)
  with pytest.raises(ValueError, match="item_names has 1 entries for 2 items"):
    item_trie.build_item_trie([[5, EOS], [6, EOS]], item_names=["5"])


def test_lookup_error_names_the_tokens():
  trie = item_trie.build_item_trie(CATALOGUE)
  with pytest.raises(KeyError, match=r"candidate \[0\]\[2\] \[9, 1\] is not an item"):
    trie.item_index_or_raise([9, EOS], what="candidate [0][2]")


def test_excluded_mask_and_its_check():
  mask = np.asarray(item_trie.excluded_mask(jnp.asarray([[2, -1, 0], [-1, -1, -1]]), num_items=4))
  np.testing.assert_array_equal(mask, [[True, False, True, False], [False] * 4])
  item_trie.check_excluded_items(np.array([[3, -1]]), num_items=4)
  with pytest.raises(ValueError, match=r"excluded_items\[0, 1\] = 4: expected an item index in "
                     r"\[0, 4\) or -1"):
    item_trie.check_excluded_items(np.array([[3, 4]]), num_items=4)
  with pytest.raises(ValueError, match="expected int"):
    item_trie.check_excluded_items(np.array([1.0, 2.0]), num_items=4)


def test_item_paths_subtree_counts_and_blocked_nodes():
  trie = item_trie.build_item_trie(CATALOGUE)
  prefixes = _prefixes(trie, CATALOGUE)
  for item, seq in enumerate(CATALOGUE):
    path = [prefixes[tuple(seq[:d + 1])] for d in range(len(seq))]
    assert trie.item_nodes[item].tolist() == path + [-1] * (trie.max_length - len(seq))
  for prefix, node in prefixes.items():
    below = sum(1 for seq in CATALOGUE if tuple(seq[:len(prefix)]) == prefix)
    assert trie.subtree_items[node] == below, prefix
  # Excluding [5, 3] and [5] (twice) blocks only their own leaves: [5] still leads to [5, 4, ...].
  for arrays in (trie.arrays(), trie.arrays(num_nodes=trie.num_nodes + 3, num_items=9,
                                            max_length=6)):
    excluded = item_trie.excluded_mask(jnp.asarray([[0, 3, 3, -1], [4, 5, -1, -1]]),
                                       arrays.num_items)
    blocked = np.asarray(item_trie.blocked_nodes(arrays, excluded))[:, :trie.num_nodes]
    for prefix, node in prefixes.items():
      for b, items in enumerate(([0, 3], [4, 5])):
        below = [i for i, seq in enumerate(CATALOGUE) if tuple(seq[:len(prefix)]) == prefix]
        assert blocked[b, node] == (set(below) <= set(items)), (b, prefix)
  assert np.asarray(blocked)[1, prefixes[(7,)]]  # both [7, 3, ...] items excluded: [7] is blocked


def test_trie_of_all_short_sequences_has_expected_size():
  # Every sequence over tokens {2, 3} of length <= 2, then EOS: 1 + 2 + 4 items.
  body = [list(p) for n in range(3) for p in itertools.product([2, 3], repeat=n)]
  trie = item_trie.build_item_trie([b + [EOS] for b in body])
  # Nodes: root, 2 + 4 inner prefixes, one leaf per item.
  assert trie.num_nodes == 1 + 6 + 7
  assert trie.max_children == 3
