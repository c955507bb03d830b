"""my_mixture.py: a longer-history retrieval task and a mixture that uses it.

Import it like `seqio_tasks` (T5X: `MIXTURE_OR_TASK_MODULE=seqio_tasks.examples.my_mixture`, or
`import seqio_tasks.examples.my_mixture` in a gin file) and train on
`rec_t5x.ml1m.retrieval_h50_mim`.
"""
import seqio_tasks
from rec_t5x.prompts import SampleConfig

seqio_tasks.register_task(
    "ml1m", "retrieval", name="rec_t5x.ml1m.retrieval_h50",
    config=SampleConfig(max_history=50, max_train_samples_per_user=20))
seqio_tasks.register_mixture(
    "rec_t5x.ml1m.retrieval_h50_mim",
    ["rec_t5x.ml1m.retrieval_h50", "rec_t5x.ml1m.mim"],
    rates={"rec_t5x.ml1m.mim": 0.5})  # others: the gin-configurable seqio_tasks.mixing_rates table
