"""``gradlens export``: a run's records as TensorBoard event files or as tidy CSV / Parquet tables.

- :mod:`gradlens.export.events`: TensorBoard event files written from numpy (protobuf bytes and CRC-32C for many
  steps at once);
- :mod:`gradlens.export.tensorboard`: :func:`export_tensorboard`, the tags and what goes where;
- :mod:`gradlens.export.tables`: :func:`tables` and :func:`export_tables`, streamed slab by slab.
"""

from gradlens.export.tables import export_tables, tables
from gradlens.export.tensorboard import export_tensorboard

__all__ = ["export_tables", "export_tensorboard", "tables"]
