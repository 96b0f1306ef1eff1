"""Every figure and table of the five source documents, by ID, in the order of ``shared/FIGURES.md``.

``gradlens figures --list`` prints exactly these IDs. Each implemented item is a module
``figures/<id with - as _>.py``; ``tests/figures/test_catalogue.py`` checks this list against FIGURES.md.

``EXTRA_ITEMS`` are figures the documents do not have (e.g. gradient flow of the compared architectures):
drawn, selectable with ``--only`` and shown in their document's section of the gallery marked as extra,
but never printed by ``--list``.
"""

from __future__ import annotations

from typing import NamedTuple


class Item(NamedTuple):
    """One catalogue entry."""

    id: str
    document: str
    title: str


DOCUMENTS = {
    "000": "000 SCNet (short circuits)",
    "001": "001 skip-connection explainer",
    "002": "002 VAN (phasing out skips)",
    "003": "003 concatenative skips",
    "004": "004 noise stability (Yu & Tomasi)",
}

ITEMS: tuple[Item, ...] = (
    Item(
        "sc-fig1",
        "000",
        "schematic: 3-layer net, forward (blue), backprop (orange), short circuit (green) from layer 3 back to layer 1",
    ),
    Item("sc-fig2", "000", "schematic: ResNet vs SCResNet (SC edges across residual blocks/stages)"),
    Item("sc-fig3", "000", "schematic: BERT vs SCBERT (SC across encoder blocks)"),
    Item("sc-tab2", "000", "test accuracy, ResNet vs SCResNet, depths 20/32/44/56/110/1202"),
    Item("sc-tab3", "000", "DREAM / SemEval-2018 accuracy, BERT/RoBERTa vs SC versions"),
    Item("sc-fig4", "000", "training loss vs epoch, ResNet vs SCResNet, depth 20 and depth 56 (two panels)"),
    Item("sc-fig5", "000", "mean gradient per layer, 5-layer sigmoid FCN vs SCFCN (SC from layer 4 to layer 2)"),
    Item(
        "sc-fig6",
        "000",
        "mean (signed) gradient vs layer index, ResNet20 vs SCResNet20 (a–c) and ResNet56 vs SCResNet56 (d–f), at epoch 1, mid-training, and averaged over all epochs; three stages shaded",
    ),
    Item("sc-fig7", "000", "accuracy for single vs multiple SC connections, several backbone depths"),
    Item("sc-fig8", "000", "accuracy vs SC weight 0.1 / 0.2 / 0.5, several backbone depths"),
    Item("sc-fig9", "000", "accuracy vs batch size, several backbone depths"),
    Item(
        "sk-fig1",
        "001",
        "vanishing gradient through depth: gradient magnitude per layer for a deep plain net vs the same net with additive skips vs concatenative (dense) skips",
    ),
    Item(
        "sk-fig2",
        "001",
        "schematic: residual block (addition), dense block (concatenation), U-Net long skips",
    ),
    Item(
        "sk-fig3",
        "001",
        "loss landscape with and without skip connections (Li et al. 2018 style: 2-D filter-normalised random directions around the trained weights; contour and/or surface)",
    ),
    Item(
        "van-fig1",
        "002",
        "test accuracy vs depth (1..30 hidden layers), MNIST (left) and Fashion-MNIST (right); Plain, ResNet, Highway, DiracNet, VAN, VAN(λ=0)",
    ),
    Item(
        "van-fig2",
        "002",
        "left: CIFAR-10 test accuracy vs depth 8n+2 (n = 1..10) for ResNet, VAN, VAN(λ=0), plain; right: train/test error vs epoch for 26-layer VAN and plain, with mean α residual (1/L)Σ(1−α)² on a right axis",
    ),
    Item("van-fig3", "002", "as van-fig2 for CIFAR-100 (depth 10..34; curves at 18 layers)"),
    Item("van-tab1", "002", "test error table (best and mean ± sd over runs)"),
    Item(
        "yw-fig1",
        "003",
        "schematic: MLP (128-256-[256]-26) with dense skips between every non-adjacent pair (red)",
    ),
    Item("yw-fig2", "003", "schematic: CNN with max-pool+concat skips 1→4, 2→5, 4→7, 5→8"),
    Item("yw-tab1", "003", "train/val accuracy, skip vs vanilla MLP, 3- and 4-layer"),
    Item("yw-tab2", "003", "skip* (train vanilla to convergence, then enable skips and continue)"),
    Item("yw-tab3", "003", "skip / vanilla / skip* MLP (512-256-[256]-10)"),
    Item("yw-tab4", "003", "CNN skip vs vanilla"),
    Item(
        "yw-tab5",
        "003",
        '"reinforced" vanilla CNN (layers 4,5 widened to 96; 7,8 to 224) and its training-time ratio to the skip CNN',
    ),
    Item(
        "yt-fig1",
        "004",
        "schematic: simplified plain block and residual block (also the document's Figure 5)",
    ),
    Item("yt-fig4", "004", "schematic: whole simplified plain and residual architectures"),
    Item(
        "yt-tab1",
        "004",
        "training loss L, cost C (loss + weight decay), test error E for PlnNet/ResNet depth 20/32/44",
    ),
    Item("yt-tab2", "004", "same for equivalently initialised nets (p0 = T(r0), decay ‖T⁻¹(p)‖²), float64, CPU"),
    Item(
        "yt-tab3",
        "004",
        "weight statistics of p0, p_end, t0, t_end at depth 32: mean, sd, L1 mass of all weights, of |w| ≥ 0.25, of ID entries",
    ),
    Item(
        "yt-tab4",
        "004",
        "training loss and weight-regularisation term before/after training, depths 20/32/44",
    ),
    Item(
        "yt-tab5",
        "004",
        "ResNet vs net with only dominant paths (T': diagonal kernels I + R) loss/error, depths 20/32/44",
    ),
    Item(
        "yt-fig2",
        "004",
        "risk and error vs epoch, plain vs residual depth 20, mean ± sd over seeds (the document's Figure 8 repeats it)",
    ),
    Item(
        "yt-fig3",
        "004",
        "histogram of per-sample layer cushion at the 10th layer, 20- and 32-layer plain vs residual (residual Frobenius norm measured after removing 1 from ID entries)",
    ),
    Item(
        "yt-fig6",
        "004",
        "semilog training loss of equivalently initialised plain and residual nets (depth 20), and their absolute difference",
    ),
    Item(
        "yt-fig7",
        "004",
        "weight histograms, all weights (y clipped) and ID entries only, depth 32, before and after training",
    ),
    Item(
        "yt-fig9",
        "004",
        "left: training risk of plain vs residual-equivalent plain, depths 32 and 44, mean ± sd, final values annotated; right: risk difference plain − residual vs epoch, depths 20/32/44",
    ),
    Item(
        "yt-fig10",
        "004",
        "histogram of ∂L/∂a(L) (gradients of the final activation) of residual nets over the first epochs, with mean and sd",
    ),
    Item(
        "yt-fig11",
        "004",
        "E[σ] in the trivial case vs (a) n, (b) l, (c) σ_A, (d) σ_V, (e) p, (f) ε; simulated plain and residual (100K draws) and the analytical approximation for residual; defaults n=20, ε=0.1, L=10, l=5, p=0.9, σ_A=0.01, σ_V=0.1",
    ),
    Item(
        "yt-fig12",
        "004",
        "σ per layer, (a) simplified and (b) fully-fledged depth-20 plain vs residual, after the first and the last iteration",
    ),
    Item(
        "yt-fig13",
        "004",
        "φ(r) = P[|X| > |Y|] on a log r axis with φ(1) = 1/2 marked and the approximation 1/(1 + r^−1.2)",
    ),
    Item(
        "yt-tab-icushion",
        "004",
        "interlayer cushion μ(i,j) of the 5th of 9 blocks of a fully-fledged depth-20 ResNet vs the corresponding plain block (document: 0.20 ± 0.0024 vs 2.7e−7 ± 2.4e−8)",
    ),
)

EXTRA_ITEMS: tuple[Item, ...] = (
    Item(
        "van-extra-gradflow",
        "002",
        "per-layer gradient flow (weight-gradient norm and σ) of plain vs VAN vs ResNet thin MLPs at depth 30 "
        "over training",
    ),
    Item(
        "yw-extra-gradflow",
        "003",
        "per-layer gradient flow (weight-gradient norm and σ) of the skip vs vanilla MLP and of the skip vs "
        "vanilla vs reinforced CNN",
    ),
)
