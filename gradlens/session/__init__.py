"""``attach``: a recording session around a model and its optimizer (the package of the session's parts).

The session owns every hook gradlens installs and removes them all on exit; observation does not perturb
training: probes read gradients without modifying them, probe-batch evaluations run with buffers (BN running
statistics) restored afterwards and the global RNG state forked, and derivatives are taken with
``torch.autograd.grad`` so nothing accumulates into ``.grad``. One job per module:

- :mod:`~gradlens.session.core`: ``attach`` and the ``Session`` class (checks, recorder, context, close);
- :mod:`~gradlens.session.hooks`: where the hooks are installed and removed, and what each does (step pre- and
  post-hooks, closure wrapping, the forward pre-hook, the GradScaler wrapper);
- :mod:`~gradlens.session.firing`: which probes fire at a step, and how a probe's or the recorder's failure is
  contained;
- :mod:`~gradlens.session.discovery`: which layers are measured (declared, or traced on the first forward);
- :mod:`~gradlens.session.scalars`: the logging rule (at which step ``session.log`` values land);
- :mod:`~gradlens.session.ranks`: distributed checks (FSDP1 refused, FSDP2's reducer, notes on failures);
- :mod:`~gradlens.session.compiled`: compile guards (``torch.compile`` graphs guard on gradlens's hooks);
- :mod:`~gradlens.session.clipping`: ``clip_grad_norm_`` calls on the session's parameters (pre-clip norm and
  threshold per step);
- :mod:`~gradlens.session.activations`: forward hooks for ``ACTIVATIONS`` probes, only on due steps;
- :mod:`~gradlens.session.live`: the live doctor (findings as events and warnings, ``on_finding``,
  ``stop_on``), triggered detail and the flight recorder.

What a probe reads (``ProbeContext``, ``Captured``) lives below both probes and session, in
:mod:`gradlens.probes.context`, and is re-exported here.
"""

from gradlens.probes.context import Captured, LossFn, ProbeContext, eager_call
from gradlens.session.core import ParameterGroupWarning, Session, attach
from gradlens.session.firing import ProbeFailureWarning, RecorderFailureWarning
from gradlens.session.live import CallbackFailureWarning, FindingWarning, TrainingStopped

__all__ = [
    "CallbackFailureWarning",
    "Captured",
    "FindingWarning",
    "LossFn",
    "ParameterGroupWarning",
    "ProbeContext",
    "ProbeFailureWarning",
    "RecorderFailureWarning",
    "Session",
    "TrainingStopped",
    "attach",
    "eager_call",
]
