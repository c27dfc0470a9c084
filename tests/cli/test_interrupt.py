"""`rmt-scale train`'s Ctrl-C relay (`rmt_scale.cli.train.interrupt`) reaches every process of the
launch, also when one of them exits between being listed and being signalled."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil

from rmt_scale.cli.train import interrupt


def test_a_child_that_already_exited_does_not_stop_the_relay(monkeypatch):
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    helper = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = psutil.Process(helper.pid)
    helper.wait()  # listed, then gone: signalling it raises NoSuchProcess
    # The exited helper is listed first, as a short-lived child of a rank can be.
    monkeypatch.setattr(psutil.Process, "children", lambda self, recursive=False: [gone, psutil.Process(launcher.pid)])
    relay = threading.Thread(target=interrupt, args=(launcher, True), daemon=True)
    try:
        relay.start()
        relay.join(timeout=20)
        assert not relay.is_alive(), "the launcher never got the SIGINT: interrupt() is still waiting for it"
        assert launcher.returncode not in (None, 0)  # ended by the SIGINT (KeyboardInterrupt)
    finally:
        launcher.kill()
        launcher.wait()
