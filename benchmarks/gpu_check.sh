#!/bin/sh
# The device check of issue 24.3: GradStats and the science probes on the GPU equal float64 CPU values, GradStats'
# overhead per step (ResNet-20, the 79 M MLP, a GPT-2-small-shaped transformer under bf16 autocast) beside the bare
# step and Lightning's grad_norm, the science probes every 64 steps, and yt-tab1's figure time on the GPU vs the CPU.
# Made for one H100-class GPU: <= 8 minutes, no network (needs a CUDA build of torch with gradlens installed).
#
#   benchmarks/gpu_check.sh                      # everything on cuda
#   benchmarks/gpu_check.sh --device cuda:1      # another GPU
#   benchmarks/gpu_check.sh --device cpu --tiny  # the dry run CI makes (tiny sizes, same code paths, < 60 s)
#
# Options are those of benchmarks/gpu_check.py (--sections, --rounds, --budget, --jobs); $PYTHON picks the
# interpreter (default: the checkout's .venv/bin/python when there is one, else python3). Exit status 1 when a
# value check failed.
set -e
cd "$(dirname "$0")/.."
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
