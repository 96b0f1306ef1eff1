"""Long runs (issue 23): record 150 tiny parameters with GradStats at every step for 10^3 .. 10^5 steps, then
measure what reading them costs, side by side with TensorBoard's own writer and reader on the same values.

The run: ``TinyParameters``, 150 parameter tensors of 16 entries trained by SGD on a noisy regression whose
loss weights fall over 3 decades across the parameters (gradient scales differ by decades, as across the
layers of a deep net; each step draws a new noisy input, so the statistics fluctuate as minibatch SGD's do).
The model costs little, so recording dominates the step. ``--hist`` adds the 10^4-step run with
``GradStats(bins=40)``. Files are cached in ``--cache`` (default ``runs/long_runs``, git-ignored) with the
recording's cost beside them (``.json``): measuring again does not record again.

Every measurement runs in its own subprocess (cold Python, imports included) and reports that child's CPU
seconds (user + sys, from ``os.wait4``), wall seconds and peak resident set size (``ru_maxrss``):

- ``load + frame``: ``gradlens.load(path).frame("grad_stats")`` (every record as a tidy frame);
- ``info``, ``report``, ``doctor``, ``compare`` (the run and a hard link of it), ``export --csv``,
  ``--parquet``, ``--tensorboard``: the CLI commands as they are on this tree;
- ``render``: the report's HTML drawn by headless Chromium (``--screenshot``, 1400 × 3000), wall seconds, when
  ``chromium`` is installed; printed under the tables with the HTML's size;
- ``one parameter``: ``gradlens.load(path).array("grad_stats", q, layers=[the middle parameter])`` for every
  statistic q: its full history, CPU seconds measured inside the child after a first one-record read of another
  parameter (which pays the imports; the child's total, imports included, is in the wall table);
- ``export --tensorboard`` speed: the scalars of the run written as event files, CPU seconds inside the child
  (reading the run included), printed as scalars per second under the tables;
- TensorBoard: ``torch.utils.tensorboard.SummaryWriter.add_scalar`` per value for the five statistics of every
  parameter (how a user logs them without gradlens), then TensorBoard's ``EventAccumulator`` reading them back;
  above ``--tb-steps`` steps (default 1000) the first ``--tb-steps`` steps are written and read and the time and
  size are scaled by steps / tb-steps (marked ``≈``).

Run: ``python benchmarks/long_runs.py [--steps 1000 10000 100000] [--hist] [--cache DIR] [--only info report]``.
It prints the tables in Markdown with the machine's load (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARAMS = 150
SIZE = 16
ROOT = Path(__file__).resolve().parents[1]

RECORD = r"""
import json, sys, time
import torch
from torch import nn
import gradlens
from gradlens.probes import GradStats

path, steps, params, size, bins = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


class TinyParameters(nn.Module):
    # loss = mean_i s_i (p_i * x_i - t_i)^2 with s_i = 10^(-3 i / n): gradients 3 decades apart across parameters
    def __init__(self):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(0.1 * torch.randn(size)) for _ in range(params)])
        self.register_buffer("scales", (10.0 ** (-3.0 * torch.arange(params) / params))[:, None])
        self.register_buffer("targets", torch.randn(params, size))

    def forward(self, x):
        return (self.scales * (torch.stack(list(self.weights)) * x - self.targets) ** 2).mean()


torch.manual_seed(0)
model = TinyParameters()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
probe = GradStats(bins=int(bins)) if bins != "none" else GradStats()
start, cpu = time.perf_counter(), time.process_time()
with gradlens.attach(model, optimizer, path, probes=[probe], overwrite=True) as session:
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(1.0 + 0.3 * torch.randn(params, size))
        loss.backward()
        optimizer.step()
        session.log(loss=loss.item())
print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}))
"""

TENSORBOARD = r"""
import pathlib, sys, time
import gradlens
from torch.utils.tensorboard import SummaryWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

path, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
run = gradlens.load(path)
data = {q: run.array("grad_stats", q, stop=steps) for q in ("mean", "mean_abs", "norm", "max_abs", "nonfinite")}
start = time.process_time()
writer = SummaryWriter(out)
for quantity, (recorded, values, _, labels) in data.items():
    for j, layer in enumerate(labels["layer"]):
        for step, value in zip(recorded.tolist(), values[:, j].tolist()):
            writer.add_scalar(f"grad_stats/{quantity}/{layer}", value, step)
writer.close()
written = time.process_time() - start
start = time.process_time()
events = EventAccumulator(out, size_guidance={"scalars": 0})
events.Reload()
tags = events.Tags()["scalars"]
count = sum(len(events.Scalars(tag)) for tag in tags)
read = time.process_time() - start
size = sum(f.stat().st_size for f in pathlib.Path(out).rglob("*") if f.is_file())
print(f"{written} {read} {size} {count}")
"""


TB_RATE = r"""
import sys, time
import gradlens
from gradlens.export.events import EventFile
from gradlens.export.tensorboard import _scalars

events = EventFile(sys.argv[2])
start = time.process_time()
count = _scalars(gradlens.load(sys.argv[1]), events)
print(count, time.process_time() - start)
"""


def run_child(command: list[str], cwd: str | None = None) -> dict:
    """Run a command, wait for it with ``os.wait4``; its CPU seconds, wall seconds, peak RSS (MB) and output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=cwd, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "status": child.returncode,
            "out": out.read(),
            "err": err.read(),
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024,
        }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradlens.cli", *args]


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def make(cache: Path, steps: int, bins: int | None) -> Path:
    """The cached run file of ``steps`` steps (recorded now if absent) and its recording cost."""
    name = f"run-{steps}" + (f"-bins{bins}" if bins else "")
    path = cache / f"{name}.h5"
    info = cache / f"{name}.json"
    if not (path.exists() and info.exists()):
        print(f"recording {path} ({steps} steps x {PARAMS} parameters) ...", file=sys.stderr, flush=True)
        result = run_child(python(RECORD, str(path), str(steps), str(PARAMS), str(SIZE), str(bins or "none")))
        if result["status"] != 0:
            raise SystemExit(f"recording failed: {result['err'][-2000:]}")
        cost = json.loads(result["out"].strip().splitlines()[-1])
        info.write_text(json.dumps({**cost, "rss_mb": result["rss_mb"]}))
    return path


def measure(path: Path, steps: int, only: set[str] | None, tb_steps: int, work: Path) -> dict[str, dict]:
    """Every measurement of one file (or those in ``only``), each in a fresh child process."""
    middle = f"weights.{PARAMS // 2}"
    twin = work / f"{path.stem}-twin.h5"
    if not twin.exists():
        os.link(path, twin)
    commands = {
        "load_frame": python("import sys, gradlens; gradlens.load(sys.argv[1]).frame('grad_stats')", str(path)),
        "info": cli("info", str(path)),
        "report": cli("report", str(path), "--out", str(work / "report.html"), "--force"),
        "render": [  # the report just written, drawn by headless Chromium as a user's browser draws it (wall s)
            shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            f"--screenshot={work / 'report.png'}", "--window-size=1400,3000", (work / "report.html").as_uri(),
        ],
        "doctor": cli("doctor", str(path)),
        "compare": cli("compare", str(path), str(twin), "--out", str(work / "compare.html"), "--force"),
        "csv": cli("export", str(path), "--csv", str(work / "csv")),
        "parquet": cli("export", str(path), "--parquet", str(work / "parquet")),
        "tensorboard": cli("export", str(path), "--tensorboard", str(work / "tb")),
        "one_parameter": python(  # every statistic of one parameter over the whole run, timed inside the child
            # after one record of another parameter was read (the first read imports pandas and friends: 0.4 s)
            "import sys, time, gradlens; gradlens.load(sys.argv[1]).array('grad_stats', 'norm', stop=1, layers=[0]); "
            "start = time.process_time(); run = gradlens.load(sys.argv[1]); "
            "[run.array('grad_stats', q, layers=[sys.argv[2]]) for q, d in run.quantities('grad_stats').items() "
            "if d.axes[:1] == ('layer',)]; "
            "print(time.process_time() - start)",
            str(path),
            middle,
        ),
        "tb_own": python(TENSORBOARD, str(path), str(work / "tb_own"), str(min(steps, tb_steps))),
        "tb_rate": python(TB_RATE, str(path), str(work / "tb_rate")),
    }
    results = {}
    for name, command in commands.items():
        if only and name not in only:
            continue
        if name == "render" and not (shutil.which("chromium") and (work / "report.html").exists()):
            continue  # no browser here, or no report measured
        for folder in ("csv", "parquet", "tb", "tb_own"):
            shutil.rmtree(work / folder, ignore_errors=True)
        result = run_child(command, cwd=str(ROOT))
        if result["status"] not in ((0, 1) if name == "doctor" else (0,)):  # doctor exits 1 on a severe finding
            result["failed"] = result["err"].strip().splitlines()[-1:] or ["?"]
        results[name] = result
        if name == "report" and result["status"] == 0:
            result["html_mb"] = (work / "report.html").stat().st_size / 1e6
    return results


def cell(results: dict, name: str, field: str = "cpu") -> str:
    result = results.get(name)
    if result is None:
        return "—"
    if "failed" in result:
        return f"failed ({result['failed'][0][:40]})"
    if name == "one_parameter" and field == "cpu":  # the read itself, without the child's imports
        return f"{float(result['out'].split()[-1]):.3f}"
    return f"{result[field]:.2f}"


def table(rows: list[tuple[str, Path, dict, dict, int]], field: str, tb_steps: int) -> str:
    header = (
        "| steps × params | file MB (B/param/step) | record ms/step | load + frame s / peak RSS MB | `info` s | "
        "`report` s | `doctor` s | `compare` s | csv / parquet s | `export --tensorboard` s | one parameter s | "
        "TensorBoard's writer: MB / write s / read s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for label, path, cost, results, steps in rows:
        size = path.stat().st_size
        per = size / steps / PARAMS
        record = cost[f"{field}_s"] / steps * 1e3
        load = results.get("load_frame")
        load_cell = "—" if load is None else f"{cell(results, 'load_frame', field)} / {load['rss_mb']:.0f}"
        tb = results.get("tb_own")
        if tb is None or "failed" in tb:
            tb_cell = cell(results, "tb_own")
        else:
            written_steps = min(steps, tb_steps)
            scale = steps / written_steps
            write_s, read_s, tb_bytes, _ = (float(v) for v in tb["out"].split())
            mark = "≈" if scale > 1 else ""
            tb_cell = f"{mark}{tb_bytes * scale / 1e6:.1f} / {mark}{write_s * scale:.1f} / {mark}{read_s * scale:.1f}"
        cells = [cell(results, name, field) for name in ("info", "report", "doctor", "compare")]
        exports = f"{cell(results, 'csv', field)} / {cell(results, 'parquet', field)}"
        lines.append(
            f"| {label} | {size / 1e6:.1f} ({per:.1f}) | {record:.2f} | {load_cell} | {' | '.join(cells)} | "
            f"{exports} | {cell(results, 'tensorboard', field)} | {cell(results, 'one_parameter', field)} | {tb_cell} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000], help="run lengths (default 1000 10000)")
    parser.add_argument("--hist", action="store_true", help="also the 10^4-step run with GradStats(bins=40)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "long_runs", help="folder of the run files")
    parser.add_argument("--only", nargs="+", help="measure only these (load_frame info report doctor ...)")
    parser.add_argument("--tb-steps", type=int, default=1000, help="steps TensorBoard's own writer writes (scaled)")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    before = os.getloadavg()
    rows = []
    plan = [(steps, None) for steps in args.steps] + ([(10000, 40)] if args.hist else [])
    for steps, bins in plan:
        path = make(args.cache, steps, bins)
        cost = json.loads(path.with_suffix(".json").read_text())
        with tempfile.TemporaryDirectory(dir=args.cache) as work:
            results = measure(path, steps, set(args.only) if args.only else None, args.tb_steps, Path(work))
        power = len(str(steps)) - 1
        length = f"10^{power}" if steps == 10**power else str(steps)
        label = f"{length} × {PARAMS}" + (f", `bins={bins}`" if bins else "")
        rows.append((label, path, cost, results, steps))
        print(f"measured {path.name}:\n{table(rows[-1:], 'cpu', args.tb_steps)}", file=sys.stderr, flush=True)
    after = os.getloadavg()
    print(
        f"CPU seconds (user + sys of each child process); load average {before[0]:.1f} before, "
        f"{after[0]:.1f} after, on {os.cpu_count()} cores\n"
    )
    print(table(rows, "cpu", args.tb_steps))
    print("\nWall seconds (same runs)\n")
    print(table(rows, "wall", args.tb_steps))
    for label, _, _, results, _ in rows:
        report, render = results.get("report", {}), results.get("render")
        if "html_mb" in report:
            drawn = "" if render is None else f", drawn by headless Chromium (1400 × 3000) in {render['wall']:.2f} s"
            print(f"\n{label}: the report's HTML is {report['html_mb']:.2f} MB{drawn}")
        rate = results.get("tb_rate")
        if rate is not None and "failed" not in rate:
            count, seconds = (float(v) for v in rate["out"].split()[-2:])
            print(f"\n{label}: gradlens export --tensorboard writes {count / seconds / 1e6:.2f} M scalars per CPU "
                  f"second ({count:.0f} scalars, reading the run included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
