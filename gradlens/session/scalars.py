"""The logging rule of a session: at which step a scalar logged with ``session.log(...)`` lands.

A value logged after a forward that builds a graph and before the next ``optimizer.step()`` belongs to that
upcoming step; a value logged after the step and before the next such forward belongs to the step just taken.
Where training is in that cycle is kept by the session's hooks (:mod:`gradlens.session.hooks`): the forward
pre-hook sets ``_forward_since_step``, the step hooks set ``_in_step`` and clear both.
"""

from __future__ import annotations

from gradlens.session.clipping import MAX_NORM, PRECLIP, ClipRecord

#: Clipping calls kept as tensors before they are converted (one transfer) and logged as scalars.
CLIP_BATCH = 32


class ScalarLog:
    """The ``log`` of :class:`gradlens.session.Session` (a mixin).

    Reads the session's ``step``, ``recording``, ``recorder`` and the hooks' ``_in_step`` and
    ``_forward_since_step``; a recorder failure goes to ``_recorder_failed``
    (:class:`~gradlens.session.firing.ProbeFiring`).
    """

    step: int
    recording: bool
    _in_step: bool
    _forward_since_step: bool
    _clips: ClipRecord

    def log(self, step: int | None = None, **scalars: float) -> None:
        """Record scalars (loss, accuracy, lr, ...) at the step they belong to.

        Rule (without ``step``): a value logged after a forward pass that builds a graph (grad enabled) and
        before the next ``optimizer.step()`` belongs to that upcoming step — under gradient accumulation the
        loss of every micro-batch lands on the step its gradient feeds; so does a value logged inside a closure
        during ``optimizer.step(closure)``. A value logged after ``optimizer.step()`` and before the next such
        forward belongs to the step just taken (0 before the first step): per-step losses logged after the
        step, evaluations under ``torch.no_grad()``, epoch summaries. ``step=`` overrides the rule.

        Raises:
            ValueError: a value that is not a real number or a name longer than 64 bytes (the recorder's rule).
        """
        if step is not None:
            at = int(step)
        elif self._in_step or self._forward_since_step:
            at = self.step
        else:
            at = max(self.step - 1, 0)
        values = {k: float(v) for k, v in scalars.items()}
        if not self.recording:
            return
        try:
            self.recorder.log_scalars(at, **values)
        except ValueError:
            raise
        except Exception as error:
            self._recorder_failed(error)
            return
        self._fed_scalars(at, values)

    def _log_clips(self, force: bool = False) -> None:
        """Log the pending clipping calls (``clip/preclip_norm``, ``clip/max_norm`` at the step each preceded)
        once ``CLIP_BATCH`` of them are kept, or now with ``force`` (flush, close, a live check)."""
        pending = len(self._clips.pending)
        if not pending or (pending < CLIP_BATCH and not force):
            return
        for step, norm, max_norm in self._clips.drain():
            scalars = {PRECLIP: norm, MAX_NORM: max_norm}
            if not self._guard_recorder(lambda: self.recorder.log_scalars(step, **scalars)):  # noqa: B023
                return
            self._fed_scalars(step, scalars)
