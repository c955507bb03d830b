"""SeqIO tasks and mixtures of rec_t5x; importing this package registers all of them.

Registration is cheap (no data loading, no vocabulary training), so T5X can use it as
`MIXTURE_OR_TASK_MODULE=seqio_tasks`:

  tasks     rec_t5x.<dataset>.<task>     dataset in ml100k, ml1m, beauty, toys, sports, and
                                         each as <dataset>_atomic (one vocabulary piece per
                                         item ID, rec_t5x/item_ids.py), and both styles
                                         without titles (<dataset>_notitles,
                                         <dataset>_atomic_notitles: items shown by ID alone);
                                         task in retrieval, ranking, rating (splits train,
                                         validation, test) and mim, mlm, bpr (train only)
  mixtures  rec_t5x.<dataset>.rec_only   retrieval + ranking + rating
            rec_t5x.<dataset>.rec_mim    + masked item modeling
            rec_t5x.<dataset>.rec_bpr    + BPR pairs
            rec_t5x.<dataset>.rec_mlm    + masked language modeling on item text
            rec_t5x.<dataset>.rec_all    + all three auxiliary tasks

Mixing rates come from the gin-configurable `seqio_tasks.mixing_rates` (all 1.0 by default; see
seqio_tasks/rates.py). Datasets are loaded with `rec_t5x.data.catalog.load` and vocabularies
trained by `rec_t5x.vocabulary.get_vocabulary` on first read. Tasks default to on-the-fly
preprocessing (`use_cached=False`). To add tasks or mixtures of your own, see the example in
seqio_tasks/registry.py (and seqio_tasks/examples/my_mixture.py).
"""
from seqio_tasks.rates import mixing_rates
from seqio_tasks.registry import DEFAULT_DATASETS
from seqio_tasks.registry import MIXTURES
from seqio_tasks.registry import check_mixture_features
from seqio_tasks.registry import dataset_names
from seqio_tasks.registry import get
from seqio_tasks.registry import load_dataset
from seqio_tasks.registry import mixture_name
from seqio_tasks.registry import register_dataset
from seqio_tasks.registry import register_dataset_tasks
from seqio_tasks.registry import register_mixture
from seqio_tasks.registry import register_task
from seqio_tasks.registry import task_name


def _register_defaults() -> None:
  for dataset in DEFAULT_DATASETS:
    if dataset not in dataset_names():
      register_dataset(dataset)
      register_dataset_tasks(dataset)


_register_defaults()

__all__ = ["DEFAULT_DATASETS", "MIXTURES", "check_mixture_features", "dataset_names", "get",
           "load_dataset", "mixing_rates", "mixture_name", "register_dataset",
           "register_dataset_tasks", "register_mixture", "register_task", "task_name"]
