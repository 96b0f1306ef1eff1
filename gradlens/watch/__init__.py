"""``gradlens watch``: follow a run while training writes it, led by the doctor's verdict.

Two modes, one page (:mod:`gradlens.watch.page`) and one reading of the run (:mod:`gradlens.watch.data`,
summaries only; :mod:`gradlens.watch.verdict`, the live doctor's findings and the post-hoc doctor):

- :func:`watch` (:mod:`gradlens.watch.files`): keeps an HTML file current, rewritten when a flush was committed;
- :func:`serve` (:mod:`gradlens.watch.server`): serves the page on localhost; the page asks for new points only.
"""

from gradlens.watch.files import DEFAULT_EVERY, DEFAULT_STALE, watch
from gradlens.watch.server import serve

__all__ = ["DEFAULT_EVERY", "DEFAULT_STALE", "serve", "watch"]
