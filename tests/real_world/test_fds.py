"""gradlens never closes a file descriptor it does not own.

``copy.deepcopy(model)`` while a session is attached (an EMA model, a "best so far" snapshot) copies the
session through the bound-method hooks on the model, and with it the run's lock. The copy of the lock used to
keep the lock's descriptor number and close it when the garbage collector freed the copy, at any later moment:
the original's lock then (its flock dropped while it still wrote) or, once the original had closed it, whatever
the process had opened under that number since (a user's file, a directory that ``os.scandir`` was reading).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import gradlens
from gradlens.lock import RunLock, lock_path, writer

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")


def descriptor_on(file: Path) -> int:
    """The one descriptor of this process open on ``file``."""
    found = [int(fd) for fd in os.listdir("/proc/self/fd") if _target(int(fd)) == str(file)]
    assert len(found) == 1, found
    return found[0]


def _target(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def user_file_at(fd: int, tmp_path: Path) -> os.stat_result:
    """Open a file of the "user" under descriptor number ``fd`` (as the next ``open`` may well get it)."""
    user = os.open(tmp_path / "user.txt", os.O_RDWR | os.O_CREAT, 0o644)
    if user != fd:
        os.dup2(user, fd)
        os.close(user)
    return os.fstat(fd)


def assert_user_file_open(fd: int, seen: os.stat_result) -> None:
    now = os.fstat(fd)  # EBADF here: gradlens closed the user's descriptor
    assert (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino)


def attached(path: Path) -> tuple[nn.Module, torch.optim.Optimizer, gradlens.Session]:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, gradlens.attach(model, optimizer, path)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(5, 3)).pow(2).sum().backward()
    optimizer.step()


def test_a_model_copied_while_attached_never_closes_the_users_descriptor(tmp_path):
    """The copy is freed after the session closed its lock and the user reopened the freed number."""
    model, optimizer, session = attached(tmp_path / "run.h5")
    number = descriptor_on(lock_path(tmp_path / "run.h5"))
    snapshot = copy.deepcopy(model)  # before the first step, as a user keeps the initial weights
    train_step(model, optimizer)
    session.close()
    seen = user_file_at(number, tmp_path)
    try:
        del snapshot
        gc.collect()  # the copied session sits in a reference cycle: only the collector frees it
        assert_user_file_open(number, seen)
    finally:
        os.close(number)


def test_a_model_copy_freed_while_the_run_is_written_leaves_the_writers_lock_held(tmp_path):
    path = tmp_path / "run.h5"
    model, optimizer, session = attached(path)
    number = descriptor_on(lock_path(path))
    snapshot = copy.deepcopy(model)
    del snapshot
    gc.collect()
    assert descriptor_on(lock_path(path)) == number  # still open on the lock file
    assert writer(path) is not None  # and still locked: a second writer is refused
    train_step(model, optimizer)
    session.close()
    assert not lock_path(path).exists()
    assert gradlens.load(path).status == "finished"


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda lock: pickle.loads(pickle.dumps(lock))])
def test_a_copy_of_a_lock_holds_nothing(tmp_path, duplicate):
    lock = RunLock(tmp_path / "run.h5")
    number = descriptor_on(lock.file)
    twin = duplicate(lock)
    assert lock.held and not twin.held
    twin.release()
    del twin
    gc.collect()
    assert descriptor_on(lock.file) == number and lock.file.exists()
    lock.release()
    assert not lock.held and not lock.file.exists() and _target(number) is None


def test_release_leaves_a_reused_descriptor_number_alone(tmp_path):
    """Something else closed the lock's descriptor and the user got its number: release must not close it."""
    lock = RunLock(tmp_path / "run.h5")
    number = descriptor_on(lock.file)
    os.close(number)
    seen = user_file_at(number, tmp_path)
    try:
        lock.release()
        assert_user_file_open(number, seen)
        assert not lock.held
    finally:
        os.close(number)
