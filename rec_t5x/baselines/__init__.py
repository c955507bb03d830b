"""Classical recommender baselines (Pop, BPR-MF, SASRec, LightGCN) on the language models' splits.

`python -m rec_t5x.baselines.run --dataset ml100k --model all`; see docs/baselines.md.
"""
