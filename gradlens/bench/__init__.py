"""Per-step overhead of GradStats beside the tools users would pick instead: ``python -m gradlens.bench``.

Every variant trains its own copy of the same model and optimizer on the same fixed batch. Variants alternate
in rounds inside one process (the order rotates each round) so that machine noise hits them alike; each round
gives a per-step time per variant, and the printed ratio is the median over rounds of (variant / bare) from
the same round. Timed steps are whole steps: ``zero_grad``, forward, backward, ``optimizer.step()`` and
whatever the variant adds (probes fire inside ``optimizer.step()`` and their HDF5 recorder is on, so recording
and the flush every 64 records are included).

Variants (:mod:`gradlens.bench.variants`, one line each in ``VARIANTS``): ``bare``; ``gradstats``
(``GradStats()`` every step); ``gradstats+exp`` (``GradStats(exponents=True)``: the exponent histograms);
``gradstats+hist40`` (``GradStats(bins=40)``); ``activations`` (``ActivationStats(every=10)``) and
``gradstats+activations`` (both probes), timed in rounds of their own with ``bare`` whose blocks are whole
periods of 10 steps (one firing per block, so the ratio is the probe's cost averaged over its schedule: the
hooks' cost at the nine skipped steps and the measuring step); peers when installed, else a ``skipped: <why>`` line:
``lightning`` (``lightning.pytorch.utilities.grad_norm`` at every optimizer step, L2 norms only),
``tensorboard`` (``SummaryWriter.add_histogram`` of every gradient) and ``wandb``
(``wandb.watch(log="gradients", log_freq=1)``, offline, files in a temporary folder, plus the ``run.log`` of the
loss a user makes to commit each step). wandb hands its records to a background process, whose work could land
in the other variants' timings, so it alternates with ``bare`` in rounds of its own; so does TensorBoard (tens of
times a thin step), with a third as many rounds as the variants that have targets.

Cases (:mod:`gradlens.bench.cases`, ``--cases``): ``thin`` (thin MLP 784-50×30-10, batch 128, model
``thin_mlp_plain_30``), ``resnet20`` (ResNet-20 v1, 32×32, batch 128, ``resnet_v1_20``), ``mlp79m``
(784-512×300-10 ReLU MLP, 79 M parameters, batch 128; plain SGD without momentum so that the copies fit in
memory). Each runs at every thread count of ``--threads`` (default 1 and 2). The load average (1, 5, 15 min) is
printed at the start and end of every case: above 2.5 the machine was busy and the ratios are noisy.

Memory (``mlp79m`` only, :mod:`gradlens.bench.memory`): peak resident set of a fresh subprocess per variant
(bare, a session without probes, GradStats, GradStats with 40 bins) that builds the 79 M model and takes 4 steps.
The target is on what GradStats adds: the recorded run with GradStats minus the same recorded run without it must
stay within 2 % of the gradients' bytes.
"""

from gradlens.bench.cli import main

__all__ = ["main"]
