"""Logical axis names for parameters and activations.

Layers annotate every parameter and activation with these names; `rec_t5x.partitioning` is the only
place that maps them onto the ('data', 'model') device mesh. The names follow T5X, so T5X's logical
axis rules (and users' gin overrides of them) apply unchanged.
"""

# Parameter axes.
VOCAB = "vocab"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"
JOINED_KV = "joined_kv"
RELPOS_BUCKETS = "relpos_buckets"
LAYERS = "layers"

# Activation axes.
BATCH = "batch"
LENGTH = "length"
ACT_EMBED = "embed"
ACT_MLP = "mlp"
ACT_HEADS = "heads"
ACT_KV = "kv"
ACT_VOCAB = "vocab"
