#!/bin/sh
# The device check of issue 24.3: GradStats and the science probes on the GPU equal float64 CPU values, GradStats'
# overhead per step (ResNet-20, the 79 M MLP, a GPT-2-small-shaped transformer under bf16 autocast) beside the bare
# step and Lightning's grad_norm, the science probes every 64 steps, and yt-tab1's figure time on the GPU vs the CPU.
# Made for one H100-class GPU: <= 8 minutes, no network (needs a CUDA build of torch, h5py and numpy; gradlens,
# analyses and figures are imported from this checkout, installed or not).
#
#   benchmarks/gpu_check.sh                      # everything on cuda
#   benchmarks/gpu_check.sh --device cuda:1      # another GPU
#   benchmarks/gpu_check.sh --device cpu --tiny  # the dry run CI makes (tiny sizes, same code paths, < 60 s)
#
# Options are those of benchmarks/gpu_check.py (--sections, --rounds, --budget, --jobs). The interpreter: $PYTHON
# when set; else the first of the checkout's .venv/bin/python and python3 whose torch can use the device asked
# for (a CPU-only .venv is passed over for --device cuda). Exit status 1 when a value check failed or no
# interpreter can use the device, 2 for an unknown section.
set -e
cd "$(dirname "$0")/.."
device=cuda
previous=
for argument in "$@"; do
    case "$previous" in --device) device=$argument ;; esac
    case "$argument" in --device=*) device=${argument#--device=} ;; esac
    previous=$argument
done
usable() {  # $1 can import torch and reach $device
    "$1" -c "import sys, torch; sys.exit(0 if '$device'.split(':')[0] == 'cpu' or torch.cuda.is_available() else 1)" \
        >/dev/null 2>&1
}
if [ -z "$PYTHON" ]; then
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then PYTHON=$candidate; break; fi
    done
    if [ -z "$PYTHON" ]; then
        echo "gpu_check.sh: neither .venv/bin/python nor python3 has a torch that can use --device $device" >&2
        exit 1
    fi
fi
PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
echo "gpu_check.sh: $PYTHON ($(command -v "$PYTHON")), checkout $(pwd)"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
