"""Markdown tables and the closing lines of a campaign (the fault and serve campaigns print both)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: the header, its rule, one line per row (cells as str())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_campaign(title: str, text: str, seconds: float, problems: list[tuple[str, str]]) -> None:
    """Print a campaign's table under `title`, its duration, then one line per problem found."""
    print(f"## {title}\n")
    print(text)
    print(f"\n{seconds:.0f} s")
    for name, problem in problems:
        print(f"- {name}: {problem}")
