"""`smartbin bench --pick BUNDLE`: what `model.variant: auto` measures on this device, as a table, and its choice;
``--row FILE`` adds this board's row (device, CPU, runtimes, model, each trial) to a JSON-lines file that users
can contribute, and ``--boards ROWS`` writes docs/boards.md from such a file."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edge.formats.bundle import Bundle
from edge.models.pick import Pick, machine_key, pick
from edge.system.cpu import INT8_DOT_FLAGS, cpu_flags

NOT_YET = ("Raspberry Pi 5 (4 x Cortex-A76)", "Jetson Orin Nano (TensorRT)")  # boards nobody has measured yet


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="smartbin bench --pick", description=__doc__.split("\n\n")[0])
    p.add_argument("--pick", required=True, metavar="BUNDLE", help="the bundle to pick a variant of")
    p.add_argument("--backend", default="auto", help="only this backend's variants (as model.backend)")
    p.add_argument("--runs", type=int, default=100, help="timed invokes per variant and thread count")
    p.add_argument("--e2e", action="store_true", help="then time the chosen one end to end (smartbin bench's e2e)")
    p.add_argument("--row", metavar="FILE", help="add this board's row to a JSON-lines file")
    p.add_argument("--boards", metavar="ROWS", help="then write a boards page from the rows in this file")
    p.add_argument("--out", default="docs/boards.md", help="the boards page to write (docs/boards.md)")
    return p.parse_args(argv)


def table(result: Pick) -> Table:
    out = Table(title="model.variant auto: invoke time on this device")
    for name in ("variant", "backend", "threads", "p50 ms", "p95 ms", ""):
        out.add_column(name)
    chosen = result.chosen
    for t in sorted(result.trials, key=lambda t: (t.p50_ms is None, t.p50_ms or 0)):
        picked = t.choice == chosen
        verdict = "[bold green]chosen" if picked else ("passes" if t.passed else f"[red]ruled out: {t.reason}")
        p50, p95 = (f"{v:.3f}" if v is not None else "—" for v in (t.p50_ms, t.p95_ms))
        out.add_row(t.variant, t.backend, str(t.threads), p50, p95, verdict)
    return out


def end_to_end(bundle: Bundle, result: Pick, runs: int, bench_main: Callable[[list[str]], int]) -> dict[str, dict]:
    """The chosen variant through the daemon's whole path (capture to a subscriber), on demand and at 30 fps:
    mode -> {p50, p90} in ms, from `smartbin bench` (``bench_main``: edge/bench.py's, a room above this one)."""
    import tempfile

    chosen = result.chosen
    with tempfile.TemporaryDirectory(prefix="smartbin-pick-e2e-") as tmp:
        report = Path(tmp) / "e2e.json"
        argv = ["--bundle", str(bundle.path), "--variants", chosen.variant, "--backends", chosen.backend]
        argv += ["--threads", str(chosen.threads), "--modes", "e2e", "--runs", str(runs), "--json", str(report)]
        if bench_main(argv) != 0 or not report.exists():
            return {}
        rows = json.loads(report.read_text())["results"]
    return {r["mode"]: {k: round(r["latency_ms"][k], 2) for k in ("p50", "p90")} for r in rows if r["status"] == "ok"}


def row(bundle: Bundle, result: Pick, e2e: dict[str, dict]) -> dict:
    """One board's figures, for docs/boards.md."""
    spec = bundle.manifest.input
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"{platform.machine()} {result.key['cpu']}",
        "int8_dot_product": sorted(INT8_DOT_FLAGS & cpu_flags()),
        "runtimes": result.key["runtimes"],
        "model": bundle.manifest.name,
        "size": f"{spec.height}x{spec.width}",
        "chosen": vars(result.chosen) if result.chosen else None,
        "trials": result.payload()["trials"],
        "e2e_ms": e2e,  # the chosen one, capture to subscriber: {"e2e": {p50, p90}, "e2e@30fps": {...}}
    }


def boards_markdown(rows: list[dict]) -> str:
    lines = [
        "# Boards",
        "",
        "[← README](../README.md)",
        "",
        "What `model.variant: auto` measured on each board (`smartbin bench --pick BUNDLE --row ROWS`, then",
        "`--boards ROWS` writes this page): invoke time of one image, median, per variant, backend and threads;",
        "the chosen one in bold. Add your board's row to `docs/boards/rows.jsonl` and send it.",
        "",
        "| date | device | int8 dot product | model | size | chosen | e2e p50 ms (at 30 fps) | trials (p50 ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = r["chosen"] or {}
        name = f"**{chosen.get('variant')} {chosen.get('backend')} {chosen.get('threads')}t**" if chosen else "none"
        trials = ", ".join(
            f"{t['variant']}/{t['threads']}t {t['p50_ms']:.2f}" if t["passed"] else f"{t['variant']}/{t['threads']}t ✗"
            for t in r["trials"]
        )
        dot = ", ".join(r["int8_dot_product"]) or "none"
        e2e = r.get("e2e_ms") or {}
        ends = f"{e2e['e2e']['p50']} ({e2e['e2e@30fps']['p50']})" if {"e2e", "e2e@30fps"} <= set(e2e) else "—"
        cells = (r["date"], r["device"], dot, r["model"], r["size"], name, ends, trials)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"| — | {board} | — | — | — | not yet measured | — | — |" for board in NOT_YET]
    return "\n".join(lines) + "\n"


def main(argv: list[str], bench_main: Callable[[list[str]], int]) -> int:
    args = parse_args(argv)
    console = Console()
    bundle = Bundle.open(args.pick)
    bundle.verify()
    result = pick(bundle, args.backend, args.runs)
    console.print(table(result))
    console.print(f"chosen: {vars(result.chosen) if result.chosen else 'none passed'} (key {machine_key(bundle)})")
    e2e = end_to_end(bundle, result, args.runs, bench_main) if args.e2e and result.chosen else {}
    if e2e:
        console.print(f"the chosen one end to end, p50 ms: {e2e}")
    if args.row:
        with Path(args.row).open("a", encoding="utf-8") as rows:
            rows.write(json.dumps(row(bundle, result, e2e), ensure_ascii=False) + "\n")
    if args.boards:
        rows = [json.loads(line) for line in Path(args.boards).read_text(encoding="utf-8").splitlines() if line.strip()]
        out = Path(args.out)
        out.write_text(boards_markdown(rows), encoding="utf-8")
        console.print(f"wrote {out} from {len(rows)} row(s)")
    return 0 if result.chosen else 1
