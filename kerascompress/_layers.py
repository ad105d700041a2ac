"""The layers of the package: which part may import which.

A module may import its own package and any package of a *lower* layer, never one of
a higher layer nor a sibling in its own layer (siblings stay independent, so each can
change or be replaced alone). tests/test_layers.py reads every module and holds the
code to this table; docs/design.md shows it (`markdown_table`), and the same test
checks that the two agree. A new package must be given a layer here.
"""
from __future__ import annotations

#: Layers from the bottom up: (layer name, the packages or top-level modules in it).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("errors", "fileio", "paths", "console", "_layers")),
    ("base", ("targets", "data")),
    ("runtime", ("runtime", "metrics")),
    ("graph", ("graph",)),
    ("models", ("models",)),
    ("techniques", ("quant", "training", "legacy")),
    ("search", ("search",)),
    ("build", ("passes", "export")),
    ("pipeline", ("pipeline",)),
    ("facade", ("__init__",)),
    ("examples", ("examples",)),
    ("command line", ("cli",)),
    ("entry point", ("__main__",)),
)

#: Package (or top-level module) -> index of its layer, 0 at the bottom.
RANK: dict[str, int] = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def part_of(module: str) -> str:
    """The package or top-level module a dotted module name belongs to.

    ``kerascompress.passes.base`` -> ``passes``; ``kerascompress.cli`` -> ``cli``;
    ``kerascompress`` itself (the lazy facade of `kerascompress/__init__.py`) -> ``__init__``.
    """
    parts = module.split(".")
    if parts[0] != "kerascompress":
        raise ValueError(f"{module!r} is not a kerascompress module")
    return parts[1] if len(parts) > 1 else "__init__"


def markdown_table() -> str:
    """The table as docs/design.md shows it, top layer first."""
    rows = ["| layer | packages and modules |", "|---|---|"]
    for name, parts in reversed(LAYERS):
        rows.append(f"| {name} | {', '.join(f'`{p}`' for p in parts)} |")
    return "\n".join(rows)
