"""``gradlens watch RUN.h5 --port N`` in a real headless Chromium: the served page shows the run's curves (the
values the page holds equal the file's), takes a new flush of a training subprocess without a reload, leads
with the verdict; the server exits 0 on SIGINT and frees its port; a busy or invalid port is a one-line error."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gradlens
from gradlens.cli import main

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")

TRAINER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from torch import nn
    import gradlens
    from gradlens.probes import GradStats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))

    def wait_for(name):  # the test says when to go on (at most 120 s)
        deadline = time.monotonic() + 120
        while not os.path.exists(name) and time.monotonic() < deadline:
            time.sleep(0.05)

    with gradlens.attach(model, optimizer, sys.argv[1], probes=[GradStats(name="g")], flush_every=1) as session:
        for step in range(10):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            session.log(loss=loss.item())
            if step == 4:
                wait_for(sys.argv[2])
        wait_for(sys.argv[3])
    """
)

# The server as started from a terminal: Ctrl-C raises KeyboardInterrupt. (A background job of a non-interactive
# shell, such as a CI script's `... &`, starts with SIGINT ignored, and a child keeps what it inherits.)
SERVE = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from gradlens.cli import main; sys.exit(main(sys.argv[1:]))")


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1300,900")
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def _until(condition, what: str, timeout: float = 90.0):
    """Poll ``condition`` until it returns something true (a "does not hang" bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _records(path) -> int:
    try:
        return gradlens.load(path).n_records("g")
    except (FileNotFoundError, ValueError, OSError, KeyError):
        return 0


def _check_page_equals_file(driver, path, last: int) -> None:
    run = gradlens.load(path)
    page = driver.execute_script(
        "const G = window.gradlens;"
        "return {loss: G.scalars.loss, layers: G.layers, total: G.globalNorm, since: G.since}"
    )
    steps, loss = run.scalar("loss")
    assert page["since"] == last and page["loss"]["first"] == steps.tolist() == list(range(last + 1))
    np.testing.assert_allclose(page["loss"]["mean"], loss, rtol=1e-15)
    recorded, norms, _, labels = run.array("g", "norm")
    assert page["layers"]["names"] == labels["layer"] and page["layers"]["first"] == recorded.tolist()
    np.testing.assert_allclose(np.array(page["layers"]["mean"]), norms.astype(np.float64), rtol=1e-15)
    np.testing.assert_allclose(page["total"]["mean"], np.sqrt((norms.astype(np.float64) ** 2).sum(1)), rtol=1e-12)


def test_served_page_follows_a_training_subprocess_in_chromium(tmp_path):
    driver = _browser()
    path, go, end = tmp_path / "live.h5", tmp_path / "go", tmp_path / "end"
    (tmp_path / "train.py").write_text(TRAINER)
    trainer = subprocess.Popen([sys.executable, str(tmp_path / "train.py"), str(path), str(go), str(end)])
    server = None
    try:
        _until(lambda: _records(path) == 5, "the trainer's first five steps")
        server = subprocess.Popen([sys.executable, "-c", SERVE, "watch", str(path), "--port", "0", "--every", "0.3"],
                                  stdout=subprocess.PIPE, text=True)
        first = server.stdout.readline()
        assert first.startswith(f"watching {path} at http://127.0.0.1:"), first
        url = first.split(" at ")[1].split()[0]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        driver.get(url)
        _until(lambda: driver.execute_script("return window.gradlens.doctor !== null && window.gradlens.since === 4"),
               "the page's first points and the doctor's verdict")
        _check_page_equals_file(driver, path, 4)
        verdict = driver.find_element("id", "verdict").text
        assert verdict.startswith("At step 4, run still being written, last flush "), verdict
        doctor = driver.execute_script("return window.gradlens.doctor")
        assert doctor["step"] == 4 and doctor["verdict"]["text"] in verdict
        assert driver.find_element("id", "verdict").get_attribute("class") == doctor["verdict"]["level"] == "running"

        driver.execute_script("window.notReloaded = true")
        go.touch()  # five more steps, one flush each
        _until(lambda: driver.execute_script("return window.gradlens.since") == 9, "the new flush on the page")
        assert driver.execute_script("return window.notReloaded") is True
        _check_page_equals_file(driver, path, 9)
        end.touch()
        assert trainer.wait(timeout=90) == 0
        _until(lambda: "run finished" in driver.find_element("id", "verdict").text, "the finished run on the page")

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
        assert "stopped (interrupted); the port is free" in server.stdout.read()
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):  # nobody listens there any more
            probe.connect(("127.0.0.1", port))
        with socket.socket() as again:  # and a server can take it again (SO_REUSEADDR, as http.server's servers)
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            again.listen()
    finally:
        driver.quit()
        go.touch()
        end.touch()
        for process in (trainer, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            if process is not None and process.stdout is not None:
                process.stdout.close()


def test_busy_or_invalid_port_is_a_one_line_error(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["watch", str(tmp_path / "run.h5"), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"gradlens: error: cannot serve on 127.0.0.1:{port}: ") and error.count("\n") == 1
    assert "--port 0 for a free one" in error
    assert main(["watch", str(tmp_path / "run.h5"), "--port", "70000"]) == 2
    assert "watch --port must be an integer from 0 to 65535 (0: any free port), got 70000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["watch", str(tmp_path / "run.h5"), "--port", "eighty"])
    assert stop.value.code == 2 and "invalid int value: 'eighty'" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "run.h5"), "--host", "0.0.0.0"]) == 2
    assert "watch --host 0.0.0.0 needs --port N" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run.h5")
