"""Read gradlens runs: ``load(path) -> Run``, by step range, stride, layers or summary, and as tidy frames.

The file layout is defined in :mod:`gradlens.schema` and documented in ``docs/schema.md``. The package's rooms:

- :mod:`gradlens.loader.files`: open a run file safely (superblock checks, bounded SWMR retries, one-line errors)
  and decode its layer table and quantity declarations;
- :mod:`gradlens.loader.rows`: the committed rows of one table, by range, stride and layers (version 3 tails
  included), every chunk read checked against truncation;
- :mod:`gradlens.loader.summary`: :class:`Summary` (min / max / mean / last per block of records), from stored
  blocks or from records;
- :mod:`gradlens.loader.run`: :class:`Run` and :func:`load`.
"""

from gradlens.loader.files import (
    RunFileError,
    Superblock,
    damaged,
    layer_rows,
    open_run_file,
    read_layers,
    stored_quantities,
    superblock,
)
from gradlens.loader.rows import TableReader, check_chunks
from gradlens.loader.run import Run, load
from gradlens.loader.summary import Summary, summarise, summary_block

__all__ = [
    "Run",
    "RunFileError",
    "Summary",
    "Superblock",
    "TableReader",
    "check_chunks",
    "damaged",
    "layer_rows",
    "load",
    "open_run_file",
    "read_layers",
    "stored_quantities",
    "summarise",
    "summary_block",
    "superblock",
]
