"""`make soak` (not part of CI): run the daemon for a while and report RSS, open files and outbox size.

    python tests/scenarios/soak.py --bundle BUNDLE [--minutes 10] [--every 10]

Prints a sample every 10 s and, at the end, the growth from the first to the last third. Exits 1
(with the daemon's log) when the daemon dies or gives no sample.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.tools.localbroker import LocalBroker  # noqa: E402
from tests.scenarios.fuzz import tail  # noqa: E402
from tests.support import ROOT, write_config  # noqa: E402


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
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="smartbin-soak-") as tmp,
        LocalBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        work = Path(tmp)
        bundle = Path(args.bundle).resolve()  # as typed, from where it was typed (the config lives elsewhere)
        config = write_config(work / "soak.yaml", bundle, "synthetic://?items=0&fps=15", broker.port)
        log = work / "daemon.log"
        with log.open("w") as err:
            process = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config)], cwd=ROOT, stderr=err)
        samples = []
        end = time.monotonic() + args.minutes * 60
        try:
            while time.monotonic() < end and process.poll() is None:
                time.sleep(args.every)
                if process.poll() is not None:
                    break
                samples.append(sample(process.pid, work / "outbox.sqlite"))
                rss, fds, depth = samples[-1]
                print(
                    f"{len(samples) * args.every:6.0f} s  RSS {rss:7.1f} MB  open files {fds:4d}  outbox {depth}",
                    flush=True,
                )
        finally:
            died = process.poll()
            process.send_signal(signal.SIGTERM)
            process.wait(15)
        if died is not None or not samples:
            print(f"soak: the daemon {'exited with code ' + str(died) if died is not None else 'gave no sample'}")
            print(f"its log:\n{tail(log)}")
            return 1
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
