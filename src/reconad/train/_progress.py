"""The training progress bar: one rich bar per epoch with the running losses."""

from __future__ import annotations


class ProgressBar:
    """A rich progress bar per epoch showing the running losses (silent when disabled)."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs = enabled, epochs
        self.task = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.fields[losses]}"), transient=False,
            )

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, n: int) -> None:
        if self.enabled:
            self.task = self.progress.add_task(
                f"epoch {epoch}/{self.epochs}", total=n, losses="")

    def advance(self, count: int, running_loss: float) -> None:
        if self.enabled:
            self.progress.update(self.task, advance=count, losses=f"train {running_loss:.5f}")

    def end_epoch(self, train_loss: float, val_loss: float | None) -> None:
        if self.enabled:
            val = "" if val_loss is None else f"  val {val_loss:.5f}"
            self.progress.update(self.task, losses=f"train {train_loss:.5f}{val}")
