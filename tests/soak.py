"""`make soak` (not part of CI): run the daemon for a while and report RSS, open files and outbox size.

    python tests/soak.py --bundle BUNDLE [--minutes 10]

Prints a sample every 10 s and, at the end, the growth from the first to the last third.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.tools.localbroker import LocalBroker  # noqa: E402
from tests.conftest import ROOT, write_config  # noqa: E402


def sample(pid: int, outbox: Path) -> tuple[float, int, int]:
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    import sqlite3

    depth = sqlite3.connect(outbox).execute("SELECT COUNT(*) FROM outbox").fetchone()[0] if outbox.exists() else 0
    return rss, fds, depth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="smartbin-soak-") as tmp,
        LocalBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        work = Path(tmp)
        config = write_config(work / "soak.yaml", Path(args.bundle), "synthetic://?items=0&fps=15", broker.port)
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=subprocess.DEVNULL
        )
        samples = []
        end = time.monotonic() + args.minutes * 60
        try:
            while time.monotonic() < end and process.poll() is None:
                time.sleep(10)
                samples.append(sample(process.pid, work / "outbox.sqlite"))
                rss, fds, depth = samples[-1]
                print(f"{len(samples) * 10:6d} s  RSS {rss:7.1f} MB  open files {fds:4d}  outbox {depth}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    growth = [sum(s[i] for s in last) / len(last) - sum(s[i] for s in first) / len(first) for i in range(3)]
    print(
        f"growth first third -> last third: RSS {growth[0]:+.1f} MB, open files {growth[1]:+.1f}, "
        f"outbox {growth[2]:+.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
