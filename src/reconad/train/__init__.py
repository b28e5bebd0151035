"""Training: the fit loop with early stopping, the batches it reads (in memory or streamed),
resumable checkpoints and the progress bar.

Modules: ``_images`` (:class:`TrainingImages`: float32 batches from memory or disk),
``_checkpoint`` (:class:`Checkpoint`: the state written after every epoch), ``_progress``
(the rich bar), ``_loop`` (:func:`fit_model`), ``_segmenting`` (:func:`fit_segmenting`:
simulated anomalies for ``model.kind=draem``).
"""

from reconad.train._checkpoint import Checkpoint, random_states, set_random_states
from reconad.train._images import LOADER_WORKERS, TrainingImages
from reconad.train._loop import (
    History,
    fit_model,
    image_losses,
    make_optimizer,
    make_scheduler,
    mean_loss,
    set_threads,
    trimmed,
)
from reconad.train._progress import ProgressBar
from reconad.train._segmenting import fit_segmenting, focal_loss

__all__ = ["LOADER_WORKERS", "Checkpoint", "History", "ProgressBar", "TrainingImages",
           "fit_model", "fit_segmenting", "focal_loss", "image_losses", "make_optimizer",
           "make_scheduler", "mean_loss",
           "random_states", "set_random_states", "set_threads", "trimmed"]
