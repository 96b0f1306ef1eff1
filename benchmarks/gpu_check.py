"""The device check of issue 24.3 (run it through ``benchmarks/gpu_check.sh``): values, overheads, figure time.

Sections (``--sections``, default all, in this order):

``values``
    GradStats on the device equals float64 CPU brute force: statistics to 1e-6 (the signed mean within
    1e-6 · mean |g|), linear-bin and exponent counts exactly — for hand-made gradients (powers of two at the bucket
    edges, subnormals, ±0, NaN, ±Inf; float32, float64, bfloat16, float16), for random ones, and end to end
    through a recorded session. The science probes (LayerCushion, InterlayerCushion with ``method="exact"``,
    DominantFlow, FinalGradHist, UpdateRatio) recorded on float64 models (``resnet_v1_8``, ``thin_mlp_resnet_5``)
    trained on the device equal the same runs on the CPU (rtol 1e-6; integer quantities exactly).
``overhead``
    Per-step time of GradStats at every step (with and without exponent histograms) and of Lightning's
    ``grad_norm`` against the bare step, interleaved rounds, the device synchronised around every timed block:
    ResNet-20 (batch 128), the 79 M MLP (batch 128) and a GPT-2-small-shaped transformer (12 layers, d 768,
    vocabulary 50 257, batch 8 × 512 tokens) under bf16 autocast. Goals printed beside each number: GradStats
    <= 1.02×, and below Lightning's.
``probes``
    The science probes every 64 steps on ResNet-20 (``benchmarks/bench_probes.py`` on the device).
``figure``
    Wall time of ``gradlens figures --scale quick --only yt-tab1 --device DEVICE`` and of the same on the CPU,
    each in a fresh output folder, within what is left of ``--budget`` seconds; "skipped: --device not supported
    by this tree" when ``gradlens figures`` has no ``--device`` option.

``--device cpu --tiny`` is the dry run CI makes: tiny models, a few steps, the same code paths (the fused CPU kernel
is switched off with ``GRADLENS_KERNEL=0``, so GradStats takes the torch route a GPU takes), and the figure
section runs the figure at smoke scale on the CPU only. Exit status 1 when a value check fails or the figure command
fails (timing goals are printed, never fatal: they depend on the machine).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL = 1.02  # GradStats' ratio to the bare step on the device (issue 24.3)


BINS = (-0.4, 0.4, 8)  # the linear bins checked: 8 of width 0.1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and few steps: a dry run of every path")
    parser.add_argument("--sections", default="values,overhead,probes,figure", help="comma list of sections")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per overhead case (default 20; tiny 1)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers of the figure runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; returns 1 when a value check failed."""
    args = _parse(argv)
    if args.device == "cpu":
        os.environ["GRADLENS_KERNEL"] = "0"  # the torch route, as on a GPU (set before gradlens is imported)
    import torch

    started = time.perf_counter()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; nothing to check")
        return 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gradlens device check on {args.device} ({name}); torch {torch.__version__}; "
          f"{'tiny dry run' if args.tiny else 'full sizes'}; sections {', '.join(sections)}", flush=True)
    failures: list[str] = []
    runs = {
        "values": lambda: failures.extend(check_values(device, args.tiny)),
        "overhead": lambda: overhead(device, args.tiny, args.rounds or (1 if args.tiny else 20)),
        "probes": lambda: probes(args),
        "figure": lambda: failures.extend(figure(args, args.budget - (time.perf_counter() - started))),
    }
    unknown = [section for section in sections if section not in runs]
    if unknown:
        print(f"unknown sections {unknown}; choose from {list(runs)}")
        return 2
    for section in sections:
        wall, cpu = time.perf_counter(), time.process_time()
        runs[section]()
        print(f"  ({section}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; "
          + ("every value check passed" if not failures else "FAILED checks:\n  " + "\n  ".join(failures)))
    return 1 if failures else 0


def probes(args: argparse.Namespace) -> None:
    """The science probes every 64 steps on ResNet-20 (tiny: every 4 steps on a thin MLP, one block)."""
    sys.path.insert(0, HERE)
    import bench_probes

    print("\n== science probes every 64 steps, ResNet-20 ==", flush=True)
    if args.tiny:
        bench_probes.measure(blocks=1, batch=8, probe_batch=2, device=args.device, model="thin_mlp_resnet_5", every=4)
    else:
        bench_probes.measure(blocks=6, device=args.device)


# ------------------------------------------------------------------------------------------------- values


def _gradients(device, tiny: bool) -> list:
    """Hand-made and random gradients on ``device`` (see the module docstring)."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(0)
    size = 5_000 if tiny else 3_000_000
    spread = torch.exp2(torch.randint(-80, 25, (size,), generator=generator).double())
    spread *= torch.randn(size, generator=generator, dtype=torch.float64)
    spread[::97] = 0.0
    edges = [2.0**-64, -(2.0**-64), float(np.nextafter(np.float32(2.0**-64), np.float32(0))), 2.0**-65, 1e-45,
             -1e-40, 2.0**15, 2.0**16, -3e38, 0.0, -0.0, math.nan, math.inf, -math.inf]
    cpu = [
        torch.tensor(edges, dtype=torch.float32),
        torch.tensor(edges, dtype=torch.float64),
        torch.tensor(edges, dtype=torch.bfloat16),
        torch.tensor([2.0**-24, 65504.0, -(2.0**-14), math.inf], dtype=torch.float16),
        spread.float(),
        spread,
        spread.bfloat16(),
        torch.randn(1025, generator=generator) * 1e-3,
        torch.randn(64, 3, 3, 3, generator=generator).transpose(0, 1),  # strided
        torch.zeros(0),
        torch.randn((), generator=generator),
    ]
    return [g.to(device) for g in cpu]


def _reference(g, edges) -> dict:
    """float64 brute force of one gradient on the CPU: the statistics, the exponent slots (from ``numpy.frexp`` of
    each value, |v| = f · 2^k with 0.5 <= f < 1, not from its bits), the linear bins (``numpy.histogram``)."""
    import numpy as np
    import torch

    from gradlens.probes import grad_exponents as ge

    d = g.detach().cpu().double().reshape(-1)
    values = d.numpy()
    floor_log2 = np.frexp(np.abs(values))[1] - 1
    slot = np.clip(floor_log2 + 65, 0, ge.MAGNITUDES - 1) + ge.MAGNITUDES * (values > 0)
    slot[values == 0] = ge.ZERO
    slot[~np.isfinite(values)] = ge.NONFINITE
    finite = values[np.isfinite(values)]
    n = d.numel()
    return {
        "mean": float(d.sum() / n) if n else math.nan,
        "mean_abs": float(d.abs().sum() / n) if n else math.nan,
        "norm": float(d.norm()),
        "max_abs": (math.nan if bool(torch.isnan(d).any()) else float(d.abs().max())) if n else 0.0,
        "nonfinite": float((~torch.isfinite(d)).sum()),
        "slots": np.bincount(slot, minlength=ge.SLOTS).tolist(),
        "bins": np.histogram(finite, bins=edges.numpy())[0].tolist(),
    }


def _close(got: float, want: float, scale: float) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want):
        return got == want
    return abs(got - want) <= 1e-6 * max(abs(want), scale) + 1e-300


def check_values(device, tiny: bool) -> list[str]:
    """GradStats and the science probes on ``device`` against the float64 CPU references; the failures."""
    import torch

    from gradlens.probes import grad_stats
    from gradlens.probes.grad_kernel import Histogram

    print("\n== values: GradStats on the device = float64 brute force on the CPU ==", flush=True)
    failures: list[str] = []
    grads = _gradients(device, tiny)
    edges = torch.linspace(BINS[0], BINS[1], BINS[2] + 1, dtype=torch.float64)
    histogram = Histogram(edges)
    start = time.perf_counter()
    sums, maxima, counts, slots = grad_stats.local_sums(grads, histogram, exponents=True, cache={})
    stats = {name: values.cpu() for name, values in grad_stats.finalize(sums, maxima).items()}
    counts, slots = counts.cpu(), slots.cpu()
    print(f"  {len(grads)} gradients, {sum(g.numel() for g in grads):,} entries, {time.perf_counter() - start:.2f} s "
          f"(first call: layout and kernels)")
    for row, g in enumerate(grads):
        want = _reference(g, edges)
        where = f"GradStats row {row} ({g.dtype}, {tuple(g.shape)})"
        for name in grad_stats.STATISTICS:
            scale = want["mean_abs"] if name == "mean" else 0.0
            if not _close(float(stats[name][row]), want[name], scale):
                failures.append(f"{where} {name}: {float(stats[name][row])!r} != {want[name]!r}")
        if slots[row].tolist() != want["slots"]:
            failures.append(f"{where} exponent slots differ")
        if counts[row, 1:9].tolist() != want["bins"]:
            failures.append(f"{where} linear bins {counts[row, 1:9].tolist()} != {want['bins']}")
    print(f"  statistics, exponent slots, linear bins: {'equal' if not failures else f'{len(failures)} differ'}")
    failures += _session_values(device, tiny)
    failures += _science_values(device, tiny)
    for line in failures[:20]:
        print(f"  FAILED {line}")
    return failures


def _session_values(device, tiny: bool) -> list[str]:
    """GradStats(exponents=True) recorded in a session on the device equals float64 norms taken in the loop."""
    import numpy as np
    import torch
    from torch import nn

    import gradlens
    from gradlens.models import create_model
    from gradlens.probes import GradStats

    torch.manual_seed(0)
    model = create_model("resnet_v1_8").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x = model.example_input(8 if tiny else 128, generator).to(device)
    y = torch.randint(0, 10, (x.shape[0],), generator=generator).to(device)
    norms, sizes = [], [p.numel() for p in model.parameters()]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.h5")
        with gradlens.attach(model, optimizer, path, probes=[GradStats(exponents=True)], every=1):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                norms.append([float(p.grad.detach().cpu().double().norm()) for p in model.parameters()])
                optimizer.step()
        run = gradlens.load(path)
        recorded = run.array("grad_stats", "norm")[1]
        hist = run.array("grad_stats", "exp_hist")[1].sum(axis=(2, 3))
        totals = hist + run.array("grad_stats", "exp_zero")[1] + run.array("grad_stats", "exp_nonfinite")[1]
    failures = []
    if not np.allclose(recorded, norms, rtol=1e-6, atol=0):
        failures.append(f"session norms differ by up to {np.max(np.abs(recorded / np.array(norms) - 1)):.2e}")
    if not (totals == sizes).all():
        failures.append("session exponent counts do not sum to the parameters' sizes")
    print(f"  a recorded session (resnet_v1_8, 3 steps): norms and counts {'equal' if not failures else 'DIFFER'}")
    return failures


def _science_values(device, tiny: bool) -> list[str]:
    """The science probes of float64 models trained 3 steps on ``device`` and on the CPU: equal (see the module
    docstring). ``resnet_v1_8`` (convolutions, batch norm; not in the tiny run) records all but InterlayerCushion,
    whose exact Jacobians of 16 × 32 × 32 inputs would take minutes; ``thin_mlp_resnet_5`` records all five."""
    import numpy as np
    import torch
    from torch import nn

    import gradlens
    from gradlens.models import create_model
    from gradlens.probes import DominantFlow, FinalGradHist, InterlayerCushion, LayerCushion, UpdateRatio

    configurations = {
        "resnet_v1_8": lambda: [LayerCushion(), DominantFlow(), FinalGradHist(bins=12), UpdateRatio()],
        "thin_mlp_resnet_5": lambda: [LayerCushion(), InterlayerCushion(method="exact"), DominantFlow(),
                                      FinalGradHist(bins=12), UpdateRatio()],
    }
    if tiny:
        configurations.pop("resnet_v1_8")
    failures = []
    for name, probes in configurations.items():
        torch.manual_seed(0)
        base = create_model(name).double()
        generator = torch.Generator().manual_seed(2)
        x = base.example_input(16, generator).double()
        y = torch.randint(0, 10, (16,), generator=generator)
        probe_batch = (base.example_input(4, generator).double(), torch.randint(0, 10, (4,), generator=generator))
        runs = {}
        with tempfile.TemporaryDirectory() as folder:
            for role, where in (("reference", torch.device("cpu")), ("device", device)):
                model = copy.deepcopy(base).to(where)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
                path = os.path.join(folder, f"{role}.h5")
                batch = tuple(t.to(where) for t in probe_batch)
                with gradlens.attach(model, optimizer, path, probes=probes(), probe_batch=batch, every=1):
                    for _ in range(3):
                        optimizer.zero_grad(set_to_none=True)
                        nn.functional.cross_entropy(model(x.to(where)), y.to(where)).backward()
                        optimizer.step()
                run = gradlens.load(path)
                runs[role] = {(probe, quantity): run.array(probe, quantity)[1] for probe in run.probes
                                    for quantity in run.quantities(probe)}
        reference, checked = runs["reference"], runs["device"]
        differ = []
        for key, want in reference.items():
            got = checked[key]
            if want.dtype.kind in "iu":
                equal = np.array_equal(got, want)
            else:
                equal = np.allclose(got, want, rtol=1e-6, atol=1e-12, equal_nan=True)
            if not equal:
                differ.append(f"science probe {name} {key[0]}.{key[1]} differs between {device} and cpu")
        print(f"  science probes (float64 {name}, 3 steps, {len(reference)} quantities): "
              f"{'equal' if not differ else f'{len(differ)} differ'}", flush=True)
        failures += differ
    return failures


# ----------------------------------------------------------------------------------------------- overhead


def _gpt2(tiny: bool):
    """A GPT-2-small-shaped causal language model (pre-LayerNorm blocks, fused q/k/v, GELU MLP, tied embeddings)
    returning logits ``[B·T, vocabulary]``; tiny: 2 layers of width 64 over 1 000 tokens."""
    import torch
    from torch import nn

    layers, width, heads, vocabulary, context = (2, 64, 4, 1000, 32) if tiny else (12, 768, 12, 50257, 1024)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(attended.transpose(1, 2).reshape(b, t, width))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocabulary, width), nn.Embedding(context, width)
            self.h = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(width)
            self.vocabulary = vocabulary

        def forward(self, tokens):
            x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
            for block in self.h:
                x = block(x)
            with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
                return nn.functional.linear(self.ln_f(x), self.wte.weight).reshape(-1, self.vocabulary)

    class Autocast(nn.Module):
        """The model's forward under bf16 autocast, as a user's training loop would run it."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens):
            with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
                return self.model(tokens).float()

    return Autocast(GPT()), vocabulary


def _cases(device, tiny: bool) -> dict:
    """label -> (model, x, y): the three models of the overhead section."""
    import torch

    from gradlens.bench.cases import mlp79m
    from gradlens.models import create_model

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    resnet = create_model("resnet_v1_8" if tiny else "resnet_v1_20")
    batch = 4 if tiny else 128
    cases = {f"{'ResNet-8' if tiny else 'ResNet-20'}, batch {batch}": (resnet, resnet.example_input(batch, generator),
                                      torch.randint(0, 10, (batch,), generator=generator))}
    if tiny:
        mlp = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    else:
        mlp = mlp79m()
    cases[f"MLP {'784-64-10' if tiny else '79 M'}, batch {batch}"] = (mlp, torch.randn(batch, 784, generator=generator),
                                    torch.randint(0, 10, (batch,), generator=generator))
    gpt, vocabulary = _gpt2(tiny)
    sequences, length = (2, 16) if tiny else (8, 512)
    tokens = torch.randint(0, vocabulary, (sequences, length + 1), generator=generator)
    shape = "GPT-2-tiny" if tiny else "GPT-2-small"
    label = f"{shape} shape, bf16 autocast, {sequences} x {length} tokens"
    cases[label] = (gpt, tokens[:, :-1], tokens[:, 1:].reshape(-1))
    return {label: (model.to(device), x.to(device), y.to(device)) for label, (model, x, y) in cases.items()}


def overhead(device, tiny: bool, rounds: int) -> None:
    """Interleaved per-step times of bare, GradStats (with and without exponents) and Lightning's grad_norm."""
    import statistics

    import torch

    from gradlens.bench.timing import interleave
    from gradlens.bench.variants import VARIANTS, Runner, Skipped

    print(f"\n== overhead per step on {device}: median over {rounds} rounds of variant / bare ==", flush=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    steps = 1 if tiny else 10
    for label, (model, x, y) in _cases(device, tiny).items():
        tensors = sum(1 for p in model.parameters())
        print(f"{label}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters in {tensors} tensors",
              flush=True)
        runners = []
        with tempfile.TemporaryDirectory() as folder:
            for name in ("bare", "gradstats", "gradstats+exp", "lightning"):
                copy_ = copy.deepcopy(model)
                runner = Runner(name, copy_, torch.optim.SGD(copy_.parameters(), lr=1e-3, momentum=0.9), x, y)
                try:
                    VARIANTS[name].setup(runner, folder)
                except Skipped as reason:
                    print(f"  {name:<14} skipped: {reason}")
                    continue
                runners.append(runner)
            try:
                times = interleave(runners, rounds, steps, sync)
            finally:
                for runner in runners:
                    runner.close()
        bare = [t for t, _ in times["bare"]]
        ratios = {name: statistics.median(t / b for (t, _), b in zip(runs, bare, strict=True))
                  for name, runs in times.items()}
        for name, ratio in ratios.items():
            goal = ""
            if name == "gradstats":
                ahead = "lightning" not in ratios or ratio <= ratios["lightning"]
                goal = (f"goal <= {GOAL:.2f}: {'ok' if ratio <= GOAL else 'MISSED'}; "
                        f"ahead of lightning: {'yes' if ahead else 'NO'}")
            print(f"  {name:<14} {1e3 * statistics.median(t for t, _ in times[name]):9.2f} ms/step "
                  f"{ratio:7.3f}x  {goal}", flush=True)
        runners.clear()  # every copy of the model goes before the next case (the loop names held the last one)
        runner = copy_ = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------- figure


def figure(args: argparse.Namespace, budget: float) -> list[str]:
    """Wall time of yt-tab1 at quick on the device and on the CPU (see the module docstring); the tiny dry run makes
    the same command at smoke scale on the CPU once, for real, so its options and imports are checked. Returns the
    commands that failed (one not finished within the budget has not failed)."""
    scale = "smoke" if args.tiny else "quick"
    against = "the CPU only (dry run)" if args.tiny else f"{args.device} vs cpu"
    print(f"\n== figure: gradlens figures --scale {scale} --only yt-tab1, {against} ==", flush=True)
    gradlens = [sys.executable, "-m", "gradlens.cli"]
    helped = subprocess.run([*gradlens, "figures", "--help"], capture_output=True, text=True, timeout=120)
    if "--device" not in helped.stdout:
        print("  skipped: --device not supported by this tree")
        return []
    failed = []
    places = ["cpu"] if args.tiny else [args.device, "cpu"]
    for where in places:
        folder = tempfile.mkdtemp(prefix=f"gpu-check-figure-{where.replace(':', '')}-")
        command = [*gradlens, "figures", "--scale", scale, "--only", "yt-tab1", "--device", where, "--out",
                   folder, "--quiet", "--jobs", str(1 if args.tiny else args.jobs)]
        left = budget - 5
        if left < 10 and not args.tiny:
            print(f"  {where}: not run, the check's time budget is spent")
            continue
        seconds, status = _timed(command, max(left, 300.0) if args.tiny else left)
        print(f"  {where}: {seconds:.0f} s wall ({status})", flush=True)
        if status.startswith("exit status"):
            failed.append(f"gradlens figures on {where}: {status}")
        budget -= seconds
        shutil.rmtree(folder, ignore_errors=True)
    return failed


def _timed(command: list[str], timeout: float) -> tuple[float, str]:
    """Wall seconds of ``command`` and how it ended. It runs in a session of its own, so at the timeout its worker
    processes (``--jobs``) are ended with it, not left holding the GPU."""
    import signal

    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, error = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return time.perf_counter() - start, "not finished: the check's time budget"
    seconds = time.perf_counter() - start
    return seconds, "ok" if process.returncode == 0 else f"exit status {process.returncode}: {error.strip()[-300:]}"


if __name__ == "__main__":
    sys.exit(main())
