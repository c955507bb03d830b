"""rec_t5x: teach T5-family language models recommendation knowledge.

Sub-packages:
  data     readers for interaction logs (MovieLens, Amazon, CSV) and the processed, split dataset.
  prompts  natural-language samples for the recommendation and auxiliary tasks.
The SeqIO registries live in the top-level `seqio_tasks` package.
"""
