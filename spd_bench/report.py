"""Rich output for the pipeline: a line per stage (cached or computed) and progress bars."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from spd_bench.engine.pipeline import Reporter


class RichReporter(Reporter):
    def __init__(self, console: Any, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet

    def phase(self, description: str) -> None:
        if not self.quiet:
            from rich.markup import escape

            self.console.print(f"[bold]{escape(description)}[/bold]", highlight=False)

    def stage(self, cell: str, stage: str, cached: bool, seconds: float) -> None:
        if self.quiet:
            return
        state = "[green]cached[/green]" if cached else f"[yellow]computed[/yellow] in {seconds:.1f}s"
        self.console.print(f"  {stage:<8} {cell}: {state}", highlight=False)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if self.quiet or not self.console.is_terminal:  # a bar in a log file is only a blank line
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    def summary(self, stage_log: list[dict[str, Any]]) -> None:
        computed = [e for e in stage_log if not e["cached"]]
        cached = len(stage_log) - len(computed)
        if not computed:
            self.console.print(f"all {cached} stages served from cache: no model work done")
        else:
            seconds = sum(e["seconds"] for e in computed)
            self.console.print(f"{len(computed)} stages computed ({seconds:.0f}s), {cached} served from cache")
