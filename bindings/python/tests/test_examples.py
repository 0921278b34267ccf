"""The examples in examples/python run (so they cannot rot) and do what they say."""

from __future__ import annotations

import subprocess
import sys
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
