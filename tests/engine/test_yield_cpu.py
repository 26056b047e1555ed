"""yield_cpu lowers the CPU priority of every thread of the calling process, those already running too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")

SCRIPT = textwrap.dedent(
    """
    import json, os, threading
    from engine.runtime import yield_cpu

    def nice_of_threads():
        values = []
        for tid in sorted(os.listdir("/proc/self/task")):
            with open(f"/proc/self/task/{tid}/stat") as f:
                values.append(int(f.read().rsplit(")", 1)[1].split()[16]))  # field 19: nice
        return values

    go = threading.Event()
    started = threading.Thread(target=go.wait)
    started.start()
    before = nice_of_threads()
    changed = yield_cpu(int(os.environ["NICE"]))
    later = threading.Thread(target=go.wait)
    later.start()
    after = nice_of_threads()
    go.set()
    print(json.dumps({"before": before, "after": after, "changed": changed}))
    """
)


def run(niceness: int) -> dict[str, list[int] | int]:
    env = {"NICE": str(niceness), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_thread_running_or_started_later_is_lowered() -> None:
    r = run(7)
    assert r["changed"] == len(r["before"]) == 2
    base = r["before"][0]
    assert r["before"] == [base, base]
    assert r["after"] == [min(19, base + 7)] * 3  # main, the thread that ran before, the one started after


def test_zero_leaves_the_process_alone() -> None:
    r = run(0)
    assert r["changed"] == 0
    assert r["after"] == r["before"] + [r["before"][0]]
