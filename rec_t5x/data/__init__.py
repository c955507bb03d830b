"""Interaction data: readers (MovieLens, Amazon, tables) -> processing -> cached `RecDataset`.

Typical use: `rec_t5x.data.catalog.load("ml1m")` after `python -m rec_t5x.data.fetch ml100k ml1m`.
See docs/architecture.md for the `RecDataset` contract.
"""
