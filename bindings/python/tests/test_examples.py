"""The examples in examples/python run (so they cannot rot) and do what they say."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import List

from conftest import REPO

EXAMPLES = REPO / "examples" / "python"


def run(script: str, *args: str, timeout: float = 120) -> List[str]:
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{script} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
    return out.stdout.splitlines()


def test_producer_then_consumer(dsn: str) -> None:
    produced = run("producer.py", dsn, "3")
    assert produced[:3] == [line for line in produced[:3] if line.startswith("sent #")]
    assert "sent 3 order.line events in one transaction" in produced
    assert produced[-1] == "rolled back a transaction: its event is never delivered"

    consumed = run("consumer.py", dsn, "0.2")
    assert consumed[-1] == "7 events in 1 batches"
    body = [line.split(" at ")[0] for line in consumed[:-1]]
    assert [b.split(" ", 1)[1] for b in body] == (
        [f'order.created {{"id": {i}}}' for i in range(3)]
        + [f'order.line {{"order": {i}, "sku": "sku-{i}"}}' for i in range(3)]
        + ["orders.stored 3"])
    assert not any("never.published" in line for line in consumed)

    # Run again: nothing new, and the consumer says so.
    assert run("consumer.py", dsn, "0.2") == ["0 events in 1 batches"]


def test_worker_example_stops_after_count(dsn: str) -> None:
    run("producer.py", dsn, "2")
    out = run("worker.py", dsn, "--count", "5")
    assert out[0] == "worker running (Ctrl-C stops it)"
    events = [line.split(": ", 1)[1] for line in out if line.startswith("batch ")]
    assert [e.split(" ", 1)[1] for e in events] == [
        'order.created {"id": 0}', 'order.created {"id": 1}',
        'order.line {"order": 0, "sku": "sku-0"}', 'order.line {"order": 1, "sku": "sku-1"}',
        "orders.stored 2"]
    assert out[-1] == "stopped cleanly after 5 events"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_worker_example_stops_cleanly_on_ctrl_c(dsn: str) -> None:
    # The script must see Ctrl-C even when this test runs as a background job (`cmd &` in a
    # non-interactive shell, nohup), which starts with SIGINT ignored: an ignored signal
    # stays ignored across exec, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "worker.py"), dsn],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    # The readline() calls below have no timeout of their own: a stuck script is killed,
    # which ends them (and fails the test).
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the worker runs (or the script dies)
        assert first.strip() == "worker running (Ctrl-C stops it)", proc.stderr.read() if \
            proc.stderr else ""
        # Produce while it runs; it prints the event when it has it.
        run("producer.py", dsn, "1")
        line = proc.stdout.readline()
        assert line.startswith("batch ") and 'order.created {"id": 0}' in line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[-1].startswith("stopped cleanly after ")
