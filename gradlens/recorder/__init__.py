"""The HDF5 recorder: buffered, crash-safe, SWMR-readable storage of probe records, scalars and events.

This is the one place where tensors become numpy. The file layout is defined in :mod:`gradlens.schema` and
documented in ``docs/schema.md``. The package's rooms, from the file up:

- :mod:`gradlens.recorder.chunks`: encode a whole chunk as HDF5's shuffle, deflate and Fletcher-32 filters would;
- :mod:`gradlens.recorder.tables`: append rows to a table (whole chunks compressed once, the rest in a tail);
- :mod:`gradlens.recorder.summary`: the multi-resolution summary, kept as the run records;
- :mod:`gradlens.recorder.layout`: create a file's groups and tables, check names and declarations;
- :mod:`gradlens.recorder.runfile`: an open file being written, and the two-phase commit;
- :mod:`gradlens.recorder.buffers`: buffered tensors to host arrays in their stored dtypes;
- :mod:`gradlens.recorder.copy`: copy a run's committed records (resume, repair);
- :mod:`gradlens.recorder.resume`: resume a run (the copy, and the check that the session matches it);
- :mod:`gradlens.recorder.writer`: :class:`Recorder` (buffering, flush policy, modes, lock, atomic replace);
- :mod:`gradlens.recorder.repair`: :func:`repair`, what ``gradlens repair`` runs.
"""

from gradlens.recorder.buffers import Value
from gradlens.recorder.repair import Repaired, repair
from gradlens.recorder.writer import MODES, RESERVED_META, STATUSES, Recorder
from gradlens.schema import Quantity

__all__ = ["MODES", "RESERVED_META", "STATUSES", "Quantity", "Recorder", "Repaired", "Value", "repair"]
