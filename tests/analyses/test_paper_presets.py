"""Every paper preset against its document's setup, item by item, each check quoting the document.

Documents: ``../shared/seeds/00N_*.txt``; catalogue: ``../shared/FIGURES.md``. Document 001 (the skip-connection
explainer) states no training setup, so ``skip_gradflow``/``skip_landscape`` have nothing to check here; document
003 states only data, widths and depths (no epochs, batch size or seeds). A setting a document does not state
(e.g. the momentum of document 004) is not checked.
"""

from __future__ import annotations

import math

import pytest

from analyses.runner import plan, preset


def runs(analysis: str, **match: object) -> list[dict]:
    """The paper-scale parameters of ``analysis``'s runs matching ``match``."""
    return [s.params for s in plan(analysis, "paper") if all(s.params.get(k) == v for k, v in match.items())]


def values(analysis: str, key: str, **match: object) -> set:
    """The distinct values of ``key`` (a list or tuple as the text of a list: ``"[120, 160]"``)."""
    return {repr(list(p[key])) if isinstance(p[key], list | tuple) else p[key] for p in runs(analysis, **match)}


# --- document 004 (Yu & Tomasi), simplified nets: Tables 1, 3, 4, 5, Figures 2, 3, 7, 9 -------------------------

def test_004_simplified_training():
    # "Our experiments are conducted on CIFAR-10 data set that contains 50k training samples" (SM A)
    assert values("simplified_training", "dataset") == {"cifar10"}
    assert values("simplified_training", "n_train") == {None}
    # "we trained simplified PlnNets and ResNets ... of depths 20, 32, and 44"
    assert values("simplified_training", "depth") == {20, 32, 44}
    # "Table 1 shows training loss L and test error E after 200 epochs of training"
    assert values("simplified_training", "epochs") == {200}
    # "The initial learning rate was 10^-3 for the depth-44 plain network, and 10^-2 for the other 5 networks"
    assert values("simplified_training", "lr", kind="plain", depth=44) == {1e-3}
    assert values("simplified_training", "lr", kind="residual") == {1e-2}
    assert values("simplified_training", "lr", kind="plain", depth=20) == {1e-2}
    # Table 5: "The initial learning rate was 5 × 10^-3 for depth-44 network with T', and 10^-2 for the other 5"
    assert values("simplified_training", "lr", kind="dominant", depth=44) == {5e-3}
    assert values("simplified_training", "lr", kind="dominant", depth=32) == {1e-2}
    # "The learning rate was divided by 10 after epochs 120 and 160 for all networks"
    assert values("simplified_training", "milestones") == {"[120, 160]"}
    # "The parameter λ of weight decay is 10^-4"
    assert values("simplified_training", "weight_decay") == {1e-4}
    # Figure 10: "collected for 4 epochs (1564 iterations)": 391 steps an epoch = ⌈50 000 / 128⌉
    assert values("simplified_training", "batch_size") == {128} and math.ceil(50000 / 128) * 4 == 1564
    # Figure 9: "The results are based on training 10 randomly initialized networks ... for each network type"
    for kind in ("plain", "residual", "dominant"):
        for depth in (20, 32, 44):
            assert len(runs("simplified_training", kind=kind, depth=depth)) == 10
    assert len(plan("simplified_training", "paper")) == 90


def test_004_figure_2_is_the_documents_13_nets_at_1200_epochs():
    # Figure 2 (and Figure 8, which repeats it): "plain (blue) and residual (red) networks of depth 20 after
    # training for 1200 epochs on the CIFAR-10 dataset. The results are based on training 13 plain networks and 13
    # residual networks initialized at random"
    from figures import yt_fig2

    assert yt_fig2.ANALYSES == ("simplified_curves",)
    assert values("simplified_curves", "dataset") == {"cifar10"} and values("simplified_curves", "n_train") == {None}
    assert values("simplified_curves", "depth") == {20}
    assert values("simplified_curves", "epochs") == {1200}
    for kind in ("plain", "residual"):
        assert values("simplified_curves", "seed", kind=kind) == set(range(13))
    assert values("simplified_curves", "kind") == {"plain", "residual"}
    assert len(plan("simplified_curves", "paper")) == 13 + 13
    # Table 1's setup ("10^-2", "λ of weight decay is 10^-4", batch 128); the schedule is stated only for 200
    # epochs ("divided by 10 after epochs 120 and 160"): the same fractions of 1200 epochs
    assert values("simplified_curves", "lr") == {1e-2} and values("simplified_curves", "weight_decay") == {1e-4}
    assert values("simplified_curves", "batch_size") == {128}
    assert values("simplified_curves", "milestones") == {"[720, 960]"}
    # they are simplified_training runs (trained by its code, stored in its folder), but not in its plan: the
    # Table-1 items (yt-tab1, yt-tab3/4/5, yt-fig7, yt-fig9) still see only their 90 runs of 200 epochs
    assert {s.analysis for s in plan("simplified_curves", "paper")} == {"simplified_training"}
    table_1 = {s.key for s in plan("simplified_training", "paper")}
    assert not table_1 & {s.key for s in plan("simplified_curves", "paper")}


@pytest.mark.parametrize(("scale", "depth"), [("smoke", 5), ("quick", 20)])
def test_004_figure_2_reuses_the_table_1_runs_below_paper_scale(scale, depth):
    """At smoke and quick scale yt-fig2's runs are simplified_training's own plain/residual runs at the depth it
    draws: same parameters, same keys, same files, trained once."""
    curves = plan("simplified_curves", scale)
    training = [s for s in plan("simplified_training", scale)
                if s.params["depth"] == depth and s.params["kind"] in ("plain", "residual")]
    assert curves == training and [s.key for s in curves] == [s.key for s in training]
    assert [s.path("root") for s in curves] == [s.path("root") for s in training]


def test_004_equivalence():
    # Table 2: "equivalently initialized ResNets and PlnNets of depth 20, 32, and 44 after training for 200
    # epochs on the CIFAR-10 dataset. The initial learning rate was 10^-2, and the rate was divided by 10 after
    # epoch 120 and 160. The parameter λ of weight decay is 10^-4." / "We used double precision"
    assert values("equivalence", "dataset") == {"cifar10"} and values("equivalence", "n_train") == {None}
    assert values("equivalence", "depth") == {20, 32, 44}
    assert values("equivalence", "epochs") == {200}
    assert values("equivalence", "lr") == {1e-2}
    assert values("equivalence", "milestones") == {"[120, 160]"}
    assert values("equivalence", "weight_decay") == {1e-4}
    assert values("equivalence", "dtype") == {"float64"}
    assert values("equivalence", "batch_size") == {128}  # as Table 1 (391 iterations an epoch, Figure 10)
    # Figure 6: "plain (blue) and residual (red) networks of depths 20, initialized with equivalent parameter values"
    assert values("equivalence", "depth", figure=True) == {20}
    assert len(plan("equivalence", "paper")) == 6  # one pair per depth


def test_004_noise_stability_simplified_nets_are_the_table_1_runs():
    # Figure 3: "20-layer (left) and 32-layer (right) PlnNets and ResNets. All the four networks are trained for
    # 200 epochs on CIFAR-10"; "in the 10th layer"
    params = runs("simplified_noise")
    assert len(params) == 4 and values("simplified_noise", "depth") == {20, 32}
    assert values("simplified_noise", "kind") == {"plain", "residual"}
    assert values("simplified_noise", "dataset") == {"cifar10"} and values("simplified_noise", "epochs") == {200}
    assert {p["noise"]["cushion_layer"] for p in params} == {10}
    # Figure 12: "Simplified ... networks are trained for 200 ... epochs with initial learning rate 0.01"
    assert values("simplified_noise", "lr") == {0.01}
    # Figure 10: "The gradients are collected for 4 epochs (1564 iterations) of training"
    assert {(p["noise"]["hist_epochs"], p["noise"]["hist_every"]) for p in params} == {(4, 1)}
    # they are Table 1's nets ("divided by 10 after epochs 120 and 160", "weight decay is 10^-4"): the same runs
    assert {s.key for s in plan("simplified_noise", "paper")} < {s.key for s in plan("simplified_training", "paper")}


def test_004_noise_stability_fledged():
    config = preset("noise_stability", "paper")
    assert config.dataset == "cifar10" and config.n_train is None
    # Figure 12: "Simplified and fully-fledged networks are trained for 200 and 180 epochs with initial learning
    # rate 0.01 and 0.1 respectively"; "depths-20"
    assert (config.epochs, config.lr, config.depth) == (180, 0.1, 20)
    assert config.milestones == (90, 135) and config.weight_decay == 1e-4 and config.batch_size == 128
    # "the interlayer cushion of the 5th out of 9 residual block of a fully-fledged residual network of depth 20"
    assert config.block_index == 5
    assert len(plan("noise_stability", "paper")) == 2  # the fully-fledged plain and residual net


def test_004_trivial_case():
    # Figure 11: "The expectation of simulated σ is estimated by 100K experiments ... n = 20"
    config = preset("trivial_case", "paper")
    assert config.draws == 100_000
    defaults = runs("trivial_case")[0]["defaults"]
    # FIGURES.md yt-fig11: "defaults n=20, ε=0.1, L=10, l=5, p=0.9, σ_A=0.01, σ_V=0.1"
    assert {k: defaults[k] for k in ("n", "eps", "L", "l", "p", "sigma_a", "sigma_v")} == {
        "n": 20, "eps": 0.1, "L": 10, "l": 5, "p": 0.9, "sigma_a": 0.01, "sigma_v": 0.1}
    assert len(plan("trivial_case", "paper")) == 6  # panels (a)-(f)


# --- document 002 (VAN) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("analysis", "dataset"), [("van_thin", "mnist"), ("van_thin_fashion", "fashion_mnist")])
def test_002_thin_nets(analysis, dataset):
    # 4.1: "trained on both MNIST and Fashion-MNIST"; "The depth of the network varied from l = 1 to l = 30 hidden
    # layers"; "The learning rate is fixed at η = 0.001 and the momentum parameter at 0.9. Training consisted of
    # 50 epochs with a batch-size of 128"; "η', was set to be one half of the SGD step-size"; "λ_l, are
    # initialized to -1"; Figure 1: "Mean average test accuracy over 10 independent training sessions"
    assert values(analysis, "dataset") == {dataset} and values(analysis, "n_train") == {None}
    assert values(analysis, "depth") == set(range(1, 31))
    assert values(analysis, "lr") == {0.001} and values(analysis, "momentum") == {0.9}
    assert values(analysis, "epochs") == {50} and values(analysis, "batch_size") == {128}
    assert values(analysis, "lambda_lr_ratio") == {0.5} and values(analysis, "lambda_init") == {-1.0}
    assert values(analysis, "seed") == set(range(10))
    # "Plain, ResNet, Highway, DiracNet, VAN, VAN(λ=0)" (Figure 1 / FIGURES.md van-fig1)
    assert values(analysis, "variant") == {"plain", "resnet", "highway", "dirac", "van", "van0"}
    assert len(plan(analysis, "paper")) == 6 * 30 * 10  # the "10 runs × 6 architectures × 30 depths"


def test_002_preactivation_nets():
    # 4.2: "On CIFAR-10 we ran experiments with n ∈ {1, 2, 3, 4, 5, 6, 8, 10}" (depth 8n + 2); "For CIFAR-100
    # experiments were run with n ∈ {1, 2, 3, 4}"
    assert values("van_preact", "depth", dataset="cifar10") == {8 * n + 2 for n in (1, 2, 3, 4, 5, 6, 8, 10)}
    assert values("van_preact", "depth", dataset="cifar100") == {8 * n + 2 for n in (1, 2, 3, 4)}
    # "trained using SGD with momentum over 165 epochs. The learning rate was set to η = 0.1 and divided by 10 at
    # the 82nd and 125th epoch. The momentum parameter was set to 0.9. ... mini-batches of size 128"
    assert values("van_preact", "epochs") == {165} and values("van_preact", "lr") == {0.1}
    assert values("van_preact", "milestones") == {"[82, 125]"} and values("van_preact", "momentum") == {0.9}
    assert values("van_preact", "batch_size") == {128} and values("van_preact", "n_train") == {None}
    # "we set the step-size parameter for the Lagrange multipliers, η', to be one tenth of η and all Lagrange
    # multipliers, λ_l, are initialized to -1"
    assert values("van_preact", "lambda_lr_ratio") == {0.1} and values("van_preact", "lambda_init") == {-1.0}
    # "the mean test accuracy over five independent training sessions for ResNets, VAN, VAN (λ = 0) and plain"
    assert values("van_preact", "seed") == set(range(5))
    assert values("van_preact", "variant") == {"resnet", "van", "van0", "plain"}
    assert len(plan("van_preact", "paper")) == (8 + 4) * 4 * 5


# --- document 000 (short circuits) ----------------------------------------------------------------------------

def test_000_sc_resnet():
    # 4.1: "we mainly evaluate our SCResNet on the CIFAR10"; Table 2: "Layer-20 ... Layer-1202"
    assert values("sc_resnet", "dataset") == {"cifar10"} and values("sc_resnet", "n_train") == {None}
    assert values("sc_resnet", "depth") == {20, 32, 44, 56, 110, 1202}
    # 5.4: "the weight of short circuit connection default set to 0.2"; "the batch size sets 32 in our SCResNet
    # experiments"
    main = runs("sc_resnet", sc=True, sc_rears="stage_end", batch_size=32)
    assert {p["sc_weight"] for p in main} >= {0.2}
    assert values("sc_resnet", "batch_size", sc=False) == {32}
    # Figure 6: "'Epoch 1-100' denotes the mean value of gradient in different layers from epoch 1 to epoch 200"
    assert values("sc_resnet", "epochs") == {200}
    # Figure 8: "SC weight 0.2. If the weight increase to 0.5, ... more than the weight of 0.1"
    assert values("sc_resnet", "sc_weight", sc=True) == {0.1, 0.2, 0.5}
    # 4.2: "we first applied the short circuit to the backbone of ResNet-V1"
    assert all(p["model"].endswith(f"resnet_v1_{p['depth']}") for p in runs("sc_resnet"))


def test_000_sc_fcn():
    # 4.1 "We also introduced the MNIST dataset"; 5.2.1: "five layers fully connected neural network (FCN) ... the
    # activation function is set to Sigmoid ... the short circuit is added from the fourth layer to the second"
    assert values("sc_fcn", "dataset") == {"mnist"} and values("sc_fcn", "n_train") == {None}
    assert values("sc_fcn", "model") == {"sigmoid_fcn_5", "scfcn_5"}
    assert values("sc_fcn", "sc_weight") == {0.2}  # "default set to 0.2"


# --- document 003 (concatenative skips) -----------------------------------------------------------------------

def test_003_mlps():
    # abstract: "We evaluate the performance on EMNIST hand-written letters dataset [1] and CIFAR-10"
    assert values("concat_mlp", "dataset") == {"emnist_letters"} and values("concat_mlp", "n_train") == {None}
    assert values("concat_mlp_cifar", "dataset") == {"cifar10"}
    # Figure 1 / Table 1: "128-256-[256]-26", 3- and 4-layer; 2.2: "n_l1 = 512, n_l2 = 256, n_l3 = 256, n_out = 10"
    assert values("concat_mlp", "arch") == {"emnist"} and values("concat_mlp_cifar", "arch") == {"cifar"}
    assert values("concat_mlp", "layers") == {3, 4}
    # 2.1: "tune the regularizer to get a highest accuracy on validation set"; "mini-batch stochastic gradient
    # descent"; skip* (Table 2): "train vanilla to convergence, then enable skips and continue"
    assert len(values("concat_mlp", "weight_decay")) >= 2 and values("concat_mlp", "eval_split") == {"validation"}
    assert values("concat_mlp", "variant") == {"skip", "vanilla", "skipstar"}


def test_003_cnns():
    # 2.3: "Convolutional Neural Network on CIFAR-10"; Table 5: the "reinforced" vanilla CNN
    assert values("concat_cnn", "dataset") == {"cifar10"} and values("concat_cnn", "n_train") == {None}
    assert values("concat_cnn", "variant") == {"skip", "vanilla", "reinforced"}
    assert preset("concat_cnn_timing", "paper").dataset == "cifar10"
