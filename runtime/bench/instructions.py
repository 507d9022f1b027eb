#!/usr/bin/env python3
"""Instructions per operation of a Warren workload, counted by valgrind's callgrind.

Wall-clock figures on a shared VM swing 2-3x between runs; instruction counts do not. This runs a
workload twice under `valgrind --tool=callgrind` with two sizes and divides the difference of the
totals by the difference of the sizes, so setup (engine, pool, compile cache) cancels out and what
is left is the cost of one operation (one round trip, one publish to 100 subscribers, one 10-hop
chain request). Use it to A/B a change: same command before and after.

    python3 runtime/bench/instructions.py                          # rpc_roundtrip, wasm
    python3 runtime/bench/instructions.py --workload publish_fanout --variant native
    python3 runtime/bench/instructions.py --workload state_roundtrip    # per agent, setup included
    python3 runtime/bench/instructions.py --components /tmp/old-guests   # other guest builds

Needs valgrind (Debian: `apt-get install valgrind`). Run it twice after rebuilding guests: the first
run after a change compiles the component under valgrind (the compile cache is then warm).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SIZES = {"rpc_roundtrip": (10000, 30000), "rpc_concurrent": (10000, 30000),
         "publish_fanout": (500, 1500), "rpc_chain": (1000, 3000)}
# Per agent: the whole workload, setup included, since every phase grows with the agent count.
# Wasm agents run as the plugins' manifests say (echo and counter: 256 agents per instance, so
# 15,000 agents are 59 instances). With an instance per agent (the bench's
# --agents-per-instance 1) valgrind cannot reserve a pool for thousands of instances.
PER_AGENT = {"instantiate_many": (5000, 15000), "state_roundtrip": (5000, 15000)}
# Valgrind cannot reserve a pool with 4 GiB of address space per memory (guard regions), so
# wasm guests are counted compiled with explicit bounds checks (the bench's
# WARREN_BENCH_EXPLICIT_CHECKS, which the host would fall back to anyway); outside valgrind the
# bench's small pools get guard regions, about 1,200 instructions fewer per wasm call.


def instructions(bench: Path, workload: str, variant: str, n: int, components: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(bench), "--child",
           "--workload", workload, "--variant", variant, "--n", str(n), "--components", str(components)]
    env = dict(os.environ)
    if variant == "wasm":
        env["WARREN_BENCH_EXPLICIT_CHECKS"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    m = re.search(r"Collected : (\d+)", out.stderr)
    if not m:
        sys.exit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="rpc_roundtrip", choices=sorted({**SIZES, **PER_AGENT}))
    ap.add_argument("--variant", default="wasm", choices=["wasm", "native"])
    ap.add_argument("--components", type=Path, default=ROOT / "target/guests/wasm32-wasip2/guest")
    ap.add_argument("--bench", type=Path, default=ROOT / "target/release/warren-bench")
    args = ap.parse_args()
    small, large = {**SIZES, **PER_AGENT}[args.workload]
    a = instructions(args.bench, args.workload, args.variant, small, args.components)
    b = instructions(args.bench, args.workload, args.variant, large, args.components)
    checks = ", explicit bounds checks" if args.variant == "wasm" else ""
    print(f"{args.workload} {args.variant}: {(b - a) / (large - small):,.0f} instructions per operation "
          f"(callgrind, n={small} and n={large}{checks})")


if __name__ == "__main__":
    main()
