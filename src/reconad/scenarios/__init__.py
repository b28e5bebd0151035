"""Who is normal and which images form each set: the train / val / dev / eval / final splits
of every scenario kind, and the evaluated sets a scenario hands on.

Modules: ``_sets`` (:class:`EvalSet`, :class:`Splits` and the builders that keep images in
their stored dtype), ``_kinds`` (:func:`make_splits` for holdout, one-class, corruption and
contamination).
"""

from reconad.scenarios._kinds import make_splits, resolve_class_names
from reconad.scenarios._sets import (
    EvalSet,
    Splits,
    class_group,
    class_sets,
    concat_sets,
    ids_of,
    join_images,
    label_of,
    make_set,
    normal_set,
)

__all__ = ["EvalSet", "Splits", "class_group", "class_sets", "concat_sets", "ids_of", "join_images",
           "label_of", "make_set", "make_splits", "normal_set", "resolve_class_names"]
