"""Every covered parameter's gradient address in one C++ call: the part of a GradStats firing that Python cannot
make cheap.

On a thin MLP (126 parameter tensors, 10 ms steps) a firing that reads ``p.grad`` in Python spends more on the
gradients' Python objects than the kernel spends reading them: ``p.grad`` wraps each new gradient in a Python
object (set_to_none makes new ones every step), and the plan's checks (type, device, dtype, size, layout)
read five attributes of each. Inside a real step that is about 240 µs of a 570 µs firing. The function below
does the same checks on the C++ tensors behind the parameters and writes the addresses into the plan's
buffer (about 5 µs in a hot loop, 45 µs inside a step):

    gradlens_grad_pointers(params, n, numels, dtypes, out) -> n when the gradient of every params[i] is a
    defined, strided, contiguous, plain (no Python subclass, no lazy negation) CPU tensor with numels[i] entries
    and dtype code dtypes[i] (``grad_kernel.DTYPES``), its address written to out[i], or, where dtypes[i] is -1,
    undefined (out[i] = 0); otherwise the first i that is not.

It is compiled against the installed torch (its headers, ``libtorch_python``, the same C++ ABI) with the
system C++ compiler (``$CXX``, else ``c++``/``g++``), which takes 15-30 s, so it is built once per machine in a
background thread and kept in ``$GRADLENS_CACHE`` (default ``~/.cache/gradlens``) under a name that hashes the
source, torch's version and location, Python's version and the compiler. One build at a time per library:
the process that starts it holds ``<library>.building`` (created exclusively, removed by the build script), and
every other process meanwhile keeps the Python route instead of starting a build of its own (a test suite
starts hundreds of processes; each build holds ~0.9 GB and, on a busy machine, minutes of CPU); a lock older
than ``BUILD_LOCK_SECONDS`` is a killed build's and is taken over. Until it is loaded, and wherever it
cannot be (no compiler or headers, a failed self-check, ``GRADLENS_KERNEL=0``), GradStats reads ``p.grad`` in
Python, with the same results.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

import torch

_SOURCE = r"""
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <cstdint>

extern "C" int64_t gradlens_grad_pointers(PyObject* params, int64_t n, const int64_t* numels,
                                          const int64_t* dtypes, int64_t* out) {
    if (!PyList_Check(params) || PyList_GET_SIZE(params) != n) return -1;
    for (int64_t i = 0; i < n; i++) {
        PyObject* item = PyList_GET_ITEM(params, i);
        if (!THPVariable_Check(item)) return i;
        const at::Tensor& g = THPVariable_Unpack(item).grad();
        if (dtypes[i] < 0) {  /* the plan holds no gradient here: there must still be none */
            if (g.defined()) return i;
            out[i] = 0;
            continue;
        }
        if (!g.defined() || g.layout() != at::kStrided || !g.device().is_cpu()) return i;
        if (g.key_set().has(c10::DispatchKey::Python) || !g.is_contiguous() || g.numel() != numels[i]) return i;
        if (g.is_neg() || g.is_conj()) return i;  /* a lazily negated view: its memory holds -g */
        at::ScalarType type = g.scalar_type();
        int64_t code = type == at::kFloat ? 0 : type == at::kDouble ? 1 : type == at::kBFloat16 ? 2 : -1;
        if (code != dtypes[i]) return i;
        out[i] = (int64_t)(intptr_t)g.const_data_ptr();
    }
    return n;
}
"""

BUILD_LOCK_SECONDS = 1800  # a build that holds its lock longer than this was killed (its script never ended)

_lock = threading.Lock()
_function = None  # the loaded gradlens_grad_pointers, once the background build has finished and checked it
_thread: threading.Thread | None = None


def _cache_folder() -> str:
    """``$GRADLENS_CACHE``, else ``~/.cache/gradlens``; a folder in the temporary directory where that cannot be
    made or written (a read-only home)."""
    folder = os.environ.get("GRADLENS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gradlens")
    try:
        os.makedirs(folder, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return os.path.join(tempfile.gettempdir(), f"gradlens-cache-{os.getuid()}")


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _target(compiler: str) -> str:
    """The cached library's path: one per source, torch build, Python and compiler."""
    key = "\0".join([_SOURCE, torch.__version__, os.path.dirname(torch.__file__), sys.version, compiler])
    return os.path.join(_cache_folder(), f"grad_reader-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so")


# Compile with the C++20 standard (torch's headers ask for it), else C++17; rename the result into the cache;
# remove the build folder and the build lock. One shell script, so that a process that exits before the build
# ends (a short run: the thread is a daemon) still leaves the finished library for the next process instead of a
# wasted build.
_BUILD_SCRIPT = (
    '{ "$@" -std=c++20 || "$@" -std=c++17; } && mv -f "$BUILT" "$TARGET"; status=$?; rm -rf "$FOLDER"; '
    'rm -f "$LOCK"; exit $status'
)


def _claim_build(target: str) -> bool:
    """True when this process may build ``target``: it created ``target.building`` (exclusively), or took over a
    lock older than :data:`BUILD_LOCK_SECONDS`; False while another process's build holds it."""
    lock = target + ".building"
    for _ in range(2):
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                if time.time() - os.path.getmtime(lock) < BUILD_LOCK_SECONDS:
                    return False
                os.remove(lock)  # a killed build's: take it over
            except OSError:
                return False
    return False


def _compile(compiler: str, target: str) -> bool:
    """Build ``_SOURCE`` into ``target`` (written in a build folder beside it, then renamed); True on success."""
    torch_dir = os.path.dirname(torch.__file__)
    cache = os.path.dirname(target)
    os.makedirs(cache, exist_ok=True)
    for name in os.listdir(cache):  # build folders left by a compiler that was killed
        path = os.path.join(cache, name)
        if name.startswith("gradlens-reader-") and time.time() - os.path.getmtime(path) > 3600:
            shutil.rmtree(path, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix="gradlens-reader-", dir=cache)
    source, built = os.path.join(folder, "grad_reader.cpp"), os.path.join(folder, "grad_reader.so")
    with open(source, "w") as handle:
        handle.write(_SOURCE)
    library_dir = os.path.join(torch_dir, "lib")
    compile_command = [
        *([shutil.which("nice"), "-n", "10"] if shutil.which("nice") else []),  # beside training, not before it
        compiler, "-O2", "-w", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        "-I", os.path.join(torch_dir, "include"), "-I", sysconfig.get_paths()["include"],
        source, "-o", built, "-L", library_dir, "-ltorch_python", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{library_dir}",
    ]
    environment = {**os.environ, "BUILT": built, "TARGET": target, "FOLDER": folder, "LOCK": target + ".building"}
    try:
        # no timeout: a build at nice 10 on a busy machine can take an hour, and killing the shell would leave the
        # compiler running without its rename; a hung build's lock goes stale (BUILD_LOCK_SECONDS)
        subprocess.run(["sh", "-c", _BUILD_SCRIPT, "sh", *compile_command], env=environment, capture_output=True,
                       check=True)
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(error, subprocess.TimeoutExpired):  # a compiler still running keeps its lock until stale
            with contextlib.suppress(OSError):
                os.remove(target + ".building")
        return False
    return os.path.exists(target)


def _load(target: str):
    function = ctypes.PyDLL(target).gradlens_grad_pointers  # PyDLL: called with the GIL held
    function.restype = ctypes.c_int64
    function.argtypes = [ctypes.py_object, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return function if _self_check(function) else None


def _self_check(function) -> bool:
    """The addresses of fitting gradients, and the index of the first gradient that does not fit."""
    fitting = [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)]
    for parameter in fitting:
        parameter.grad = torch.ones_like(parameter)
    numels, dtypes = array.array("q", [3, 4]), array.array("q", [0, 1])
    out = array.array("q", [0, 0])
    arguments = (numels.buffer_info()[0], dtypes.buffer_info()[0], out.buffer_info()[0])
    if function(fitting, 2, *arguments) != 2 or list(out) != [p.grad.data_ptr() for p in fitting]:
        return False
    transposed = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    transposed.grad = torch.ones(2, 2, dtype=torch.float64).t()
    missing = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    absent = array.array("q", [0, -1])  # a plan that holds no gradient for the second parameter
    absent_arguments = (numels.buffer_info()[0], absent.buffer_info()[0], out.buffer_info()[0])
    return (
        function([fitting[0], transposed], 2, *arguments) == 1
        and function([fitting[0], missing], 2, *arguments) == 1
        and function([fitting[1], fitting[0]], 2, *arguments) == 0
        and function((fitting[0], fitting[1]), 2, *arguments) == -1
        and function([fitting[0], missing], 2, *absent_arguments) == 2 and out[1] == 0
        and function([fitting[0], fitting[1]], 2, *absent_arguments) == 1
    )


def _build_and_load() -> None:
    global _function
    try:
        compiler = _compiler()
        if compiler is None:
            return
        target = _target(compiler)
        if not os.path.exists(target) and not (_claim_build(target) and _compile(compiler, target)):
            return
        _function = _load(target)
    except Exception:  # a reader that cannot be built or loaded leaves the Python route in place, silently
        _function = None


def start(wait: bool = False) -> None:
    """Build (or load the cached) reader in a background thread, started once per process; ``wait`` blocks
    until that thread is done."""
    global _thread
    with _lock:
        if _thread is None and os.environ.get("GRADLENS_KERNEL", "1") != "0":
            _thread = threading.Thread(target=_build_and_load, name="gradlens-grad-reader", daemon=True)
            _thread.start()
    if wait and _thread is not None:
        _thread.join()


def _building_elsewhere() -> bool:
    """Another process's build holds the lock of this process's library (and it is not stale)."""
    compiler = _compiler()
    if compiler is None:
        return False
    lock = _target(compiler) + ".building"
    try:
        return time.time() - os.path.getmtime(lock) < BUILD_LOCK_SECONDS
    except OSError:
        return False


def wait_until_built(timeout: float):
    """For callers that need the reader (its tests, benchmarks): build or load it, waiting up to ``timeout``
    seconds while another process's build holds the lock; the reader function, or None."""
    global _thread
    deadline = time.monotonic() + timeout
    start(wait=True)
    while _function is None and _building_elsewhere() and time.monotonic() < deadline:
        time.sleep(0.5)
    if _function is None:  # the other build ended (its library is in the cache now): load it
        with _lock:
            _thread = None
        start(wait=True)
    return _function


def loaded():
    """The reader function when it is ready, else None (never waits)."""
    return _function
