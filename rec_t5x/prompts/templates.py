"""Phrasings of every prompt task: several for training, others held out for evaluation.

Held-out phrasings play the role of P5's "unseen prompts": they are never used for training
samples, so evaluating on them measures whether the model learned the task rather than one
wording. Placeholders are `str.format` fields; each task declares the fields its phrasings must
use, and `validate()` (run at import) checks every phrasing against them.
"""
import dataclasses
import string

MASK = "[MASK]"


@dataclasses.dataclass(frozen=True)
class TemplateSet:
  """The phrasings of one task.

  Attributes:
    fields: placeholders every phrasing must contain exactly.
    training: phrasings for training samples.
    held_out: phrasings reserved for validation / test samples (empty for training-only tasks).
  """
  fields: frozenset[str]
  training: tuple[str, ...]
  held_out: tuple[str, ...]

  def phrasings(self, held_out: bool) -> tuple[str, ...]:
    return self.held_out if held_out else self.training


RETRIEVAL = TemplateSet(
    fields=frozenset({"history"}),
    training=(
        "A user interacted with these items, oldest first: {history}. Which item will the user "
        "interact with next? Answer with the item ID.",
        "Here is a user's history in chronological order: {history}. Predict the ID of the next item.",
        "Given the items a user engaged with ({history}), recommend the item the user will choose "
        "next. Reply with its ID.",
        "User history (most recent last): {history}. What is the next item? Give the item ID.",
        "Items consumed so far: {history}. Which item comes next for this user?",
        "Based on this sequence of items, {history}, what should be recommended next? Answer with "
        "an item ID.",
    ),
    held_out=(
        "Consider someone whose past choices were {history}. Name the ID of the item they will pick "
        "next.",
        "Sequence of past interactions: {history}. Output the identifier of the upcoming item.",
    ),
)

RANKING = TemplateSet(
    fields=frozenset({"history", "candidates"}),
    training=(
        "A user interacted with these items, oldest first: {history}. Which of the following "
        "candidates will the user interact with next? Candidates: {candidates}. Answer with the item "
        "ID.",
        "History: {history}. Candidates: {candidates}. Pick the candidate the user will choose next.",
        "Given the user's history ({history}), select the best item from these candidates: "
        "{candidates}. Reply with its ID.",
        "Rank these items for a user and return the top one. User history: {history}. Items: "
        "{candidates}.",
        "The user has engaged with {history}. From {candidates}, which item should be recommended? "
        "Give the ID.",
    ),
    held_out=(
        "Someone previously chose {history}. Among the options {candidates}, which one will they "
        "pick next? Output its identifier.",
        "Candidate items: {candidates}. Past interactions: {history}. Return the ID of the candidate "
        "most likely to come next.",
    ),
)

RATING = TemplateSet(
    fields=frozenset({"history", "item", "low", "high"}),
    training=(
        "A user rated these items: {history}. How will the user rate {item}? Answer with a rating "
        "from {low} to {high}.",
        "Past ratings: {history}. Predict the user's rating of {item} on a scale of {low} to {high}.",
        "Given this rating history, {history}, what score from {low} to {high} would the user give "
        "to {item}?",
        "User ratings so far: {history}. Rating ({low}-{high}) for {item}?",
        "The user has rated {history}. Estimate the rating ({low} to {high}) the user gives {item}.",
    ),
    held_out=(
        "Someone scored these items as follows: {history}. What score between {low} and {high} will "
        "they assign to {item}?",
        "Item to rate: {item}. Previous ratings by the same person: {history}. Output a number from "
        "{low} to {high}.",
    ),
)

MIM = TemplateSet(
    fields=frozenset({"history"}),
    training=(
        "Some items in this user's history are masked as " + MASK + ": {history}. Which items are "
        "masked? Answer with their IDs in order.",
        "Fill in the masked items of this interaction sequence: {history}. Give the item IDs.",
        "A user's chronological history with hidden items: {history}. Recover the IDs of the "
        "items marked " + MASK + ".",
        "History with masks: {history}. What are the missing items?",
        "Predict the item IDs behind each " + MASK + " in this sequence: {history}.",
    ),
    held_out=(),
)

MLM = TemplateSet(
    fields=frozenset({"history"}),
    training=(
        "Some words in this user's history are missing: {history}. Fill in the missing words.",
        "Restore the corrupted spans of this interaction history: {history}",
        "A user interacted with these items, with parts of the text removed: {history}. Complete "
        "the text.",
        "Fill in the blanks: {history}",
        "Recover the missing words in the item list {history}.",
    ),
    held_out=(),
)

BPR = TemplateSet(
    fields=frozenset({"history", "item_a", "item_b"}),
    training=(
        "A user interacted with these items, oldest first: {history}. Which item does the user "
        "prefer: {item_a} or {item_b}? Answer with the item ID.",
        "History: {history}. Between {item_a} and {item_b}, which one will the user choose?",
        "Given the user's history ({history}), would the user rather interact with {item_a} or "
        "with {item_b}? Reply with its ID.",
        "User history: {history}. Option A: {item_a}. Option B: {item_b}. Which option does the "
        "user prefer?",
        "Based on {history}, pick the item the user likes more: {item_a}; or {item_b}.",
    ),
    held_out=(),
)

TEMPLATES: dict[str, TemplateSet] = {
    "retrieval": RETRIEVAL,
    "ranking": RANKING,
    "rating": RATING,
    "mim": MIM,
    "mlm": MLM,
    "bpr": BPR,
}


def choose(task: str, split: str, eval_templates: str, rng) -> tuple[int, str]:
  """Draws the phrasing of one sample.

  Args:
    task: a key of TEMPLATES.
    split: "train" draws from the training phrasings; "validation" / "test" from the held-out ones
      when `eval_templates == "held_out"`, else from the training ones.
    eval_templates: SampleConfig.eval_templates.
    rng: the sample's numpy Generator.

  Returns:
    (template_id, phrasing); template_id numbers training phrasings first, then held-out ones.
  """
  template_set = TEMPLATES[task]
  held_out = split != "train" and eval_templates == "held_out"
  phrasings = template_set.phrasings(held_out)
  if not phrasings:
    raise ValueError(f"prompt task {task!r} has no held-out phrasings; it is training-only")
  index = int(rng.integers(len(phrasings)))
  return index + (len(template_set.training) if held_out else 0), phrasings[index]


def fields_of(phrasing: str) -> set[str]:
  """The `str.format` field names of a phrasing."""
  return {name for _, name, _, _ in string.Formatter().parse(phrasing) if name is not None}


def validate(templates: dict[str, TemplateSet]) -> None:
  """Raises ValueError naming the task and phrasing whose fields differ from the task's fields."""
  for task, template_set in templates.items():
    if not template_set.training:
      raise ValueError(f"prompt templates of {task!r}: no training phrasings")
    for kind in ("training", "held_out"):
      for index, phrasing in enumerate(getattr(template_set, kind)):
        found = fields_of(phrasing)
        if found != template_set.fields:
          raise ValueError(f"prompt template {task}.{kind}[{index}] has fields {sorted(found)}; "
                           f"expected {sorted(template_set.fields)}: {phrasing!r}")


validate(TEMPLATES)
