#!/usr/bin/env python3
"""Warren against AutoGen, side by side, in one session.

Sets up AutoGen's Python runtime from PyPI (autogen-core==0.7.5) in a venv under target/, builds
warren-bench and the guest components, then runs the six workloads of WORKLOADS.md interleaved:
for each repetition, for each workload, AutoGen, Warren with native agents and Warren with wasm
agents (and, where agents share instances, wasm with an instance per agent), each in a fresh
process (they take turns going first). Prints a table of ratios (median over repetitions) per workload,
by wall clock and per CPU-second.

    python3 runtime/bench/compare.py                 # full sizes, 3 repetitions
    python3 runtime/bench/compare.py --quick --reps 1
    python3 runtime/bench/compare.py --report target/compare.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGET = ROOT / "target"
VENV = TARGET / "autogen-venv"
AUTOGEN = HERE / "autogen_bench.py"
WORKLOADS = ["rpc_roundtrip", "rpc_concurrent", "publish_fanout", "instantiate_many", "rpc_chain", "state_roundtrip"]
FULL = {"rpc_roundtrip": 20000, "rpc_concurrent": 20000, "publish_fanout": 2000,
        "instantiate_many": 20000, "rpc_chain": 2000, "state_roundtrip": 20000}
# Workloads whose agents share instances by their plugins' manifests (echo, counter:
# agents_per_instance = 256); they are also run with an instance per agent ("wasm-1").
SHARED = {"rpc_concurrent", "instantiate_many", "state_roundtrip"}
TARGETS = {"rpc_roundtrip": 100, "rpc_concurrent": 100, "publish_fanout": 50,
           "rpc_chain": 100, "instantiate_many": 20, "state_roundtrip": 10}


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def setup() -> tuple[Path, Path, Path]:
    py = VENV / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "-q", "autogen-core==0.7.5"])
    cargo = os.environ.get("CARGO", "cargo")
    run([cargo, "build", "-q", "--release", "-p", "warren-bench"], cwd=ROOT)
    guests = TARGET / "guests"
    if shutil.which("rustup"):
        # rust-toolchain.toml names the target, but rustup adds it only when it installs the
        # toolchain (see `add_wasm_target` in runtime/cli/src/build.rs).
        run(["rustup", "target", "add", "wasm32-wasip2"], cwd=ROOT)
    run([cargo, "build", "-q", "--target", "wasm32-wasip2", "--profile", "guest",
         "-p", "warren-plugin-echo", "-p", "warren-plugin-counter", "-p", "warren-plugin-relay",
         "--target-dir", str(guests)], cwd=ROOT)
    return py, TARGET / "release" / "warren-bench", guests / "wasm32-wasip2" / "guest"


def ensure_map_count(full: bool) -> None:
    """Tens of thousands of live wasm instances need more memory mappings than Linux's default
    65,530 (the pooling allocator uses several per instance, for guard pages and memory images)."""
    path = Path("/proc/sys/vm/max_map_count")
    try:
        current = int(path.read_text())
    except (OSError, ValueError):
        return
    if not full or current >= 262144:
        return
    if os.geteuid() == 0:
        path.write_text("1048576\n")
        print(f"# raised vm.max_map_count from {current} to 1048576 for 20,000+ live wasm agents", file=sys.stderr)
    else:
        raise SystemExit(
            f"vm.max_map_count is {current}: full-size instantiate_many and state_roundtrip keep 20,000-40,000 "
            "wasm instances live and need more mappings; run `sudo sysctl -w vm.max_map_count=1048576` "
            "(or use --quick)"
        )


def child(cmd) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workload", action="append", choices=WORKLOADS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", help="also write the table as markdown to this file")
    args = ap.parse_args()

    py, bench, components = setup()
    ensure_map_count(not args.quick)
    selected = args.workload or WORKLOADS
    results: dict[tuple[str, str], list[dict]] = {}
    started = time.time()
    for rep in range(args.reps):
        for w in selected:
            n = FULL[w] // 10 if args.quick else FULL[w]
            runs = {
                "autogen": [str(py), str(AUTOGEN), "--child", "--workload", w, "--n", str(n)],
                "native": [str(bench), "--child", "--workload", w, "--variant", "native", "--n", str(n),
                           "--threads", str(args.threads), "--components", str(components)],
                "wasm": [str(bench), "--child", "--workload", w, "--variant", "wasm", "--n", str(n),
                         "--threads", str(args.threads), "--components", str(components)],
            }
            if w in SHARED:
                runs["wasm-1"] = runs["wasm"] + ["--agents-per-instance", "1"]
            # The three take turns going first: a process that starts right after one that freed a
            # lot of memory can run several times slower on a VM (see PERFORMANCE.md, "Noise").
            order = list(runs.items())
            order = order[rep % len(order):] + order[:rep % len(order)]
            for impl, cmd in order:
                rec = child(cmd)
                rec["rep"] = rep
                print(json.dumps(rec), flush=True)
                results.setdefault((w, impl), []).append(rec)
                print(f"  rep {rep} {w:<17} {impl:<8} {rec['per_sec']:>14,.0f}/s", file=sys.stderr, flush=True)

    def med(w, impl, key):
        vals = [r.get(key) for r in results[(w, impl)] if r.get(key)]
        return statistics.median(vals) if vals else float("nan")

    def isolated(w, a):
        # The ratio with an instance per agent, where the workload was run that way.
        return f"{med(w, 'wasm-1', 'per_sec') / a:,.1f}" if (w, "wasm-1") in results else "–"

    def best(w, impl):
        # The fastest repetition: on a shared machine the slow ones measure the neighbours.
        return max(r["per_sec"] for r in results[(w, impl)])

    lines = [
        f"Machine: {machine()}; {args.reps} repetitions (median), "
        f"{'quick (N/10)' if args.quick else 'full'} sizes, Warren on {args.threads} thread(s); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {time.time() - started:.0f} s.",
        "",
        "| workload | AutoGen /s | Warren native /s | native × | wasm /s | wasm × | target wasm × (native) "
        "| native × per CPU-s | wasm × per CPU-s | native × best/best | wasm × best/best "
        "| wasm, an instance per agent × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in selected:
        a, nat, wasm = med(w, "autogen", "per_sec"), med(w, "native", "per_sec"), med(w, "wasm", "per_sec")
        ac, nc, wc = (med(w, i, "per_cpu_sec") for i in ("autogen", "native", "wasm"))
        lines.append(
            f"| {w} | {a:,.0f} | {nat:,.0f} | {nat / a:,.1f} | {wasm:,.0f} | {wasm / a:,.1f} "
            f"| {TARGETS[w]} ({2 * TARGETS[w]}) | {nc / ac:,.1f} | {wc / ac:,.1f} "
            f"| {best(w, 'native') / best(w, 'autogen'):,.1f} | {best(w, 'wasm') / best(w, 'autogen'):,.1f} "
            f"| {isolated(w, a)} |"
        )
    lines.append("")
    lines.append(
        "wasm: the plugins' manifests as shipped (echo and counter: up to 256 agents share an instance); "
        "wasm, an instance per agent: the same with `--agents-per-instance 1` (workloads with more than "
        "one echo or counter agent)."
    )
    if "instantiate_many" in selected:
        kb = {i: med("instantiate_many", i, "rss_kb_per_agent") for i in ("autogen", "native", "wasm", "wasm-1")}
        lines.append("")
        pss = med("instantiate_many", "wasm-1", "pss_kb_per_agent")
        lines.append(
            f"RSS per live agent (instantiate_many): AutoGen {kb['autogen']:.2f} KiB, Warren native "
            f"{kb['native']:.2f} KiB, Warren wasm {kb['wasm']:.2f} KiB (shared instances), Warren wasm with "
            f"an instance per agent {kb['wasm-1']:.1f} KiB (PSS {pss:.1f} KiB: RSS counts the component's "
            f"shared read-only data image once per instance)."
        )
    table = "\n".join(lines)
    print(table, file=sys.stderr)
    if args.report:
        Path(args.report).write_text(table + "\n")


if __name__ == "__main__":
    main()
