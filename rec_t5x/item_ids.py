"""How an item's public ID is written in text (the item-ID style), read back, and named in datasets.

Prompts show every item as its public ID plus its title, and name items in targets by the ID
alone. How the ID is spelled decides how the model sees it (Hua et al., "How to Index Item IDs for
Recommendation Foundation Models", arXiv 2305.06569, compare such schemes for P5):

  digits  `4821`: plain decimal. The vocabulary splits digits, so an ID is a handful of digit
          pieces shared by all items, and the model must learn an item from a digit combination.
          This is the only style that works with the real T5 vocabulary (FLAN-T5 fine-tunes).
  atomic  `<i4821>`: one vocabulary piece per item ("independent indexing"). The per-dataset
          SentencePiece model gets every catalogue ID as a user-defined symbol, so each item has
          its own input embedding and its own output row, as in SASRec, and a retrieval target
          is a single token. The angle brackets keep the symbols from matching numbers inside
          titles or ratings.

Both styles carry the same public ID, so metrics, tries and reports are unchanged: `parse_id`
reads either spelling. A dataset in the atomic style is registered as the variant
`<dataset>_atomic` (e.g. `ml100k_atomic`, tasks `rec_t5x.ml100k_atomic.retrieval`): same data,
same split, same public IDs, its own vocabulary.

This module has no dependencies beyond the standard library, so light modules (the experiment
grid, metrics, the dataset) can import it.
"""
from __future__ import annotations

import dataclasses
import re

DIGITS = "digits"
ATOMIC = "atomic"
STYLES = (DIGITS, ATOMIC)
# Dataset-name suffix of each non-default style's variant.
VARIANT_SUFFIXES = {ATOMIC: "_atomic"}
# Dataset-name suffix of a variant without titles; it comes last (`ml100k_atomic_notitles`).
NO_TITLES_SUFFIX = "_notitles"

_ATOMIC_RE = re.compile(r"<i(\d+)>")
_DIGITS_RE = re.compile(r"[+]?\d+")


def check_style(style: str, where: str = "item_id_style") -> str:
  """Returns `style`; ValueError naming `where` and the known styles otherwise."""
  if style not in STYLES:
    raise ValueError(f"{where}={style!r}: expected one of {STYLES}")
  return style


def format_id(public_id: int, style: str = DIGITS) -> str:
  """The text of a public ID: `4821` (digits) or `<i4821>` (atomic)."""
  check_style(style)
  public_id = int(public_id)
  if public_id < 1:
    raise ValueError(f"public item IDs are >= 1; got {public_id}")
  return f"<i{public_id}>" if style == ATOMIC else str(public_id)


def parse_id(token: str) -> int | None:
  """The public ID of one ID token in either style (`4821`, `+4821`, `<i4821>`); None otherwise."""
  match = _ATOMIC_RE.fullmatch(token)
  if match is not None:
    return int(match.group(1))
  if _DIGITS_RE.fullmatch(token):
    return int(token)
  return None


def atomic_symbols(num_items: int) -> list[str]:
  """The user-defined vocabulary symbols of a catalogue in the atomic style: `<i1>` .. `<iN>`.

  Public IDs are a permutation of 1..num_items (rec_t5x.data.dataset), so this is every ID.
  """
  if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 0:
    raise ValueError(f"num_items must be an integer >= 0; got {num_items!r}")
  return [format_id(i, ATOMIC) for i in range(1, num_items + 1)]


@dataclasses.dataclass(frozen=True)
class Variant:
  """What a dataset name says: its catalogue `base`, item-ID `style` and whether titles are shown."""
  base: str
  style: str = DIGITS
  titles: bool = True

  @property
  def name(self) -> str:
    return variant_name(self.base, self.style, self.titles)


def variant_name(base: str, style: str, titles: bool = True) -> str:
  """The dataset name of `base` in `style`: `ml100k`, `ml100k_atomic`, `ml100k_atomic_notitles`."""
  check_style(style)
  return base + VARIANT_SUFFIXES.get(style, "") + ("" if titles else NO_TITLES_SUFFIX)


def parse_variant(name: str) -> Variant:
  """The variant a dataset name spells: `ml100k_atomic_notitles` -> (`ml100k`, atomic, no titles).

  A bare suffix is a name, not a variant: `_atomic` is the dataset "_atomic" in the digits style.
  """
  titles = True
  if name.endswith(NO_TITLES_SUFFIX) and len(name) > len(NO_TITLES_SUFFIX):
    name, titles = name[:-len(NO_TITLES_SUFFIX)], False
  for style, suffix in VARIANT_SUFFIXES.items():
    if name.endswith(suffix) and len(name) > len(suffix):
      return Variant(name[:-len(suffix)], style, titles)
  return Variant(name, DIGITS, titles)


def split_variant(name: str) -> tuple[str, str]:
  """(base dataset, style) of a dataset name: `ml100k_atomic` -> (`ml100k`, `atomic`).

  Titles do not change the base: `ml100k_atomic_notitles` -> (`ml100k`, `atomic`) as well, so
  the variants share their catalogue's split and baselines.
  """
  variant = parse_variant(name)
  return variant.base, variant.style
