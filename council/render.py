"""Terminal rendering for `council run` and `council deliberate` (rich, to stderr/stdout).

Progress goes to stderr so that `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

from rich.console import Console
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table

from council.consensus import DeliberationResult
from council.events import Event
from council.pool import report_lines
from council.schemas import CouncilResult, RoleUsage


class ProgressPrinter:
    """One line per stage as it finishes; a spinner while it runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("starting the council...")
        self.status.start()

    def __call__(self, event: Event) -> None:
        cost = f"{event.tokens_so_far} tok ${event.cost_so_far:.4f}"
        where = f" [dim]{event.provider}:{event.model}[/]" if event.provider else ""
        if event.kind == "stage_started":
            who = f"{event.role} " if event.role else ""
            self.status.update(f"{event.stage}: {who}{event.detail} (pass {event.pass_no})")
        elif event.kind == "stage_finished":
            mark = "[green]ok[/]" if event.ok else "[red]failed[/]"
            self.console.print(
                f"  {mark} {event.stage:<10} {event.role or '':<12}{where} "
                f"[dim]{event.detail[:100]} | {cost}[/]"
            )
        elif event.kind == "pass_started":
            self.console.print(f"[bold]{event.detail}[/]")
        elif event.kind == "run_finished":
            self.status.stop()

    def stop(self) -> None:
        self.status.stop()


def usage_table(rows: list[RoleUsage]) -> Table:
    """Usage per role; estimated token counts (the server reported none) carry a ``~``."""
    caption = (
        "~ estimated: the server reported no usage" if any(r.estimated for r in rows) else None
    )
    table = Table(
        "role", "provider:model", "calls", "tokens in", "tokens out", "cost", "time",
        caption=caption,
    )  # fmt: skip
    for r in rows:
        mark = "~" if r.estimated else ""
        table.add_row(
            r.role,
            f"{r.provider}:{r.model}",
            str(r.calls),
            f"{mark}{r.prompt_tokens}",
            f"{mark}{r.completion_tokens}",
            f"${r.cost_usd:.4f}",
            f"{r.latency_s:.2f}s",
        )
    return table


def print_result(console: Console, result: CouncilResult) -> None:
    colour = {"approved": "green", "best_effort": "yellow"}.get(result.status, "red")
    console.rule(
        f"[{colour}]{result.status}[/] ({result.council_mode} mode, "
        f"{result.refinement_passes} refinements, {result.total_duration_secs:.1f}s)"
    )
    console.print(result.summary)
    if result.answer:
        console.print(Markdown(result.answer))
    if result.diagnosis and result.diagnosis.bugs:
        console.print("[bold]Bugs found[/]")
        for bug in result.diagnosis.bugs:
            console.print(f"  line {bug.line} [{bug.severity}] {bug.description} -> {bug.fix}")
    for f in result.code.files if result.code else []:
        console.print(f"[bold]{f.path}[/]")
        console.print(Syntax(f.content, "python", line_numbers=True))
    for line in report_lines(result.candidates, result.choice, result.disputed_tests):
        console.print(line, markup=False)
    report = result.test_report
    if report and report.execution:
        console.print(
            f"[bold]Tests[/] ({report.suite.path if report.suite else '-'}): "
            f"{report.execution.summary()}"
        )
        for case in report.execution.cases:
            if case.outcome != "passed":
                console.print(f"  {case.outcome} {case.name}: {case.message[:200]}")
    for error in result.errors:
        console.print(f"[red]error[/] {error}")
    if result.usage:
        console.print(usage_table(result.usage))
    console.print(f"cost ${result.cost_usd:.4f}, session {result.session_id}")


def print_deliberation(console: Console, result: DeliberationResult) -> None:
    colour = {"approved": "green", "best_effort": "yellow"}.get(result.status, "red")
    console.rule(
        f"[{colour}]{result.status}[/] ({len(result.answers)} members, "
        f"{result.total_duration_secs:.1f}s)"
    )
    table = Table("rank", "member", "Borda", "mean rank", "agreement")
    for s in result.standings:
        table.add_row(
            str(s.position),
            s.member,
            f"{s.borda:g}",
            "-" if s.mean_rank is None else f"{s.mean_rank:.2f}",
            "-" if s.agreement is None else f"{s.agreement:+.2f}",
        )
    console.print(table)
    console.print(Markdown(result.final_answer or "_no answer_"))
    if result.dissent:
        console.print("[bold]Dissent[/]")
        for point in result.dissent:
            console.print(f"  - {point}")
    for failure in result.failed:
        console.print(f"[red]failed[/] {failure}")
    if result.chairman:
        console.print(f"chairman {result.chairman}; cost ${result.cost_usd:.4f}")
