"""Progress bars on the console (rich), shared by the commands that stream frames."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import Progress, ProgressColumn
from rich.text import Text


class FpsColumn(ProgressColumn):
    """Frames per second of a progress-bar task."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} fps" if task.speed else "-- fps", style="progress.data.speed")


def progress_factory(progress: Progress) -> Callable[[str, int | None], Callable[[int], None]]:
    """``start(label, total)`` adds a task to ``progress`` and returns its ``advance(n)``."""

    def start(label: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(label, total=total)
        return lambda n: progress.advance(task, n)

    return start
