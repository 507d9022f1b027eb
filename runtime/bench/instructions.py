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
    python3 runtime/bench/instructions.py --workload rpc_chain --atomics # atomic operations
    python3 runtime/bench/instructions.py --workload rpc_chain --breakdown # by part of the path
    python3 runtime/bench/instructions.py --workload rpc_chain --cache     # L1 misses too

`--atomics` counts, instead of instructions, the host's atomic read-modify-write instructions per
operation (x86-64 `lock`-prefixed instructions and `xchg` with memory, found by disassembling the
bench binary with objdump): reference counts, locks, counters. Each costs about 20 cycles even
uncontended (9-10 ns on the 2-core VM), which an instruction count hides.

`--cache` runs callgrind's cache simulation with this machine's geometry as the kernel gives it
(L1i, L1d and L2 per core; where it does not, the Sapphire Rapids VM's: 32 KiB L1i, 48 KiB L1d,
2 MiB L2) and reports L1 instruction and data misses per operation: the
code and data a message touches that the core's first-level caches cannot keep.

`--breakdown` splits the instructions per operation by where they run: the core's queue and
dispatch, the async machinery, encoding on each side, the component call (wasmtime and its
trampolines), the wasm agent glue, the guest's own code, the allocator. Guest functions are named
through wasmtime's perf map (`/tmp/perf-<pid>.map`); build the guests with
`CARGO_PROFILE_GUEST_STRIP=false` so their encoding shows apart from the SDK's code.

Needs valgrind (Debian: `apt-get install valgrind`). Run it twice after rebuilding guests: the first
run after a change compiles the component under valgrind (the compile cache is then warm).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile
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


# The cache geometry `--cache` simulates: this machine's core as the kernel describes it
# (`/sys/devices/system/cpu/cpu0/cache`), the level 2 cache as the last level (valgrind's default
# would take the L3, but the L2 is what an L1 miss goes to). Where the kernel does not say, the
# Sapphire Rapids core of the VM this was first measured on (`lscpu`, and the L1 instruction
# cache Intel documents for it).
FALLBACK_CACHES = {"L1i": (32768, 8, 64), "L1d": (49152, 12, 64), "L2": (2097152, 16, 64)}


def cache_geometry(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict:
    """(size, ways, line) of each of L1i, L1d and L2: the kernel's figures where it has them."""
    names = {(1, "Instruction"): "L1i", (1, "Data"): "L1d", (2, "Unified"): "L2"}
    found = {}
    for index in sorted(sysfs.glob("index*")):
        try:
            level, kind, size, ways, line = ((index / f).read_text().strip() for f in (
                "level", "type", "size", "ways_of_associativity", "coherency_line_size"))
            name = names.get((int(level), kind))
            if name:
                unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
                found[name] = (int(size.rstrip("KM")) * unit, int(ways), int(line))
        except (OSError, ValueError):
            continue
    return {c: found.get(c, FALLBACK_CACHES[c]) for c in FALLBACK_CACHES}


CACHES = cache_geometry()
CACHE_FLAGS = {"L1i": "--I1", "L1d": "--D1", "L2": "--LL"}
EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"]


def collected(bench: Path, workload: str, variant: str, n: int, components: Path,
              dump: Path | None = None, perf_map: bool = False, cache: bool = False) -> list[int]:
    """The totals callgrind collected over a whole run: instructions only, or with `cache` every
    event of `EVENTS` (cache misses simulated on `CACHES`)."""
    out_file = str(dump) if dump else "/dev/null"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    if dump:
        cmd.append("--dump-instr=yes")
    if cache:
        cmd += ["--cache-sim=yes"] + [f"{CACHE_FLAGS[c]}={size},{ways},{line}"
                                      for c, (size, ways, line) in CACHES.items()]
    cmd += [str(bench), "--child", "--workload", workload, "--variant", variant, "--n", str(n),
            "--components", str(components)]
    env = dict(os.environ)
    if variant == "wasm":
        env["WARREN_BENCH_EXPLICIT_CHECKS"] = "1"
    if perf_map:
        # Any writable path turns on wasmtime's perf map; the bench's perf commands go nowhere.
        env["WARREN_BENCH_PERF_CTL"] = "/dev/null"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    m = re.search(r"Collected : ([\d ]+)", out.stderr)
    if not m:
        sys.exit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return [int(x) for x in m.group(1).split()]


def instructions(bench: Path, workload: str, variant: str, n: int, components: Path,
                 dump: Path | None = None, perf_map: bool = False) -> int:
    return collected(bench, workload, variant, n, components, dump, perf_map)[0]


def cache(args, small: int, large: int) -> None:
    a, b = (collected(args.bench, args.workload, args.variant, n, args.components, cache=True)
            for n in (small, large))
    if len(a) != len(EVENTS) or len(b) != len(EVENTS):
        sys.exit(f"callgrind collected {len(b)} events, expected {len(EVENTS)} ({' '.join(EVENTS)})")
    # Rounded, and `+ 0.0` turns a -0.0 (a count that did not grow) into 0.
    per = {e: round((y - x) / (large - small), 1) + 0.0 for e, x, y in zip(EVENTS, a, b)}
    geometry = ", ".join(f"{c} {size // 1024:,} KiB {ways}-way" for c, (size, ways, _) in CACHES.items())
    print(f"{args.workload} {args.variant}: per operation (callgrind's cache simulation: "
          f"{geometry}; n={small} and n={large})")
    print(f"  instructions {per['Ir']:>10,.0f}   L1i misses {per['I1mr']:>8,.0f} "
          f"(1 per {per['Ir'] / max(per['I1mr'], 1):,.0f} instructions)")
    print(f"  data reads   {per['Dr']:>10,.0f}   L1d read misses  {per['D1mr']:>8,.0f}")
    print(f"  data writes  {per['Dw']:>10,.0f}   L1d write misses {per['D1mw']:>8,.0f}")
    print(f"  L2 misses    {per['ILmr'] + per['DLmr'] + per['DLmw']:>10,.0f}")


def self_costs(dump: Path, binary: str) -> collections.Counter:
    """Instructions executed at each address of `binary`, from a callgrind dump made with
    `--dump-instr=yes` (self cost: the inclusive cost lines after `calls=` are skipped)."""
    cost: collections.Counter = collections.Counter()
    names: dict[str, str] = {}
    ob = None
    last = 0
    after_call = False

    def position(tok: str) -> int:
        if tok == "*":
            return last
        if tok[0] in "+-":
            step = int(tok[1:], 16) if tok[1:].startswith("0x") else int(tok[1:])
            return last + step if tok[0] == "+" else last - step
        return int(tok, 16) if tok.startswith("0x") else int(tok)

    for line in open(dump):
        m = re.match(r"(c?ob)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == "ob":
                ob = names.get(m.group(2))
            continue
        if line.startswith("calls="):
            after_call = True
            continue
        if not line or line[0] not in "+-*0123456789":
            continue
        parts = line.split()
        last = position(parts[0])
        if after_call:
            after_call = False
            continue
        if ob == binary and len(parts) >= 3:
            cost[last] += int(parts[-1])
    return cost


# Where an instruction runs, by the name of its function (first match wins). Guest code is named
# "GUEST <perf map name>"; wasmtime's trampolines and the component's shim module are JIT code too
# but belong to the component call.
CATEGORIES = [
    ("component call: wasmtime (enter, lift, lower, fibers, trampolines)",
     r"^GUEST (.*trampoline|wasm\[[1-9])|wasmtime|cranelift|add_to_linker"),
    ("guest: encoding (MessagePack or JSON, UTF-8 checks)", r"^GUEST .*(rmp|serde|msgpack|from_utf8|memcmp|itoa)"),
    ("guest: SDK dispatch, handler, generated bindings", r"^GUEST "),
    ("host: encoding (MessagePack, JSON)", r"rmp|serde|warren_typename|Message::(en|de)code|Inner::encode"),
    ("wasm agent and host bindings (warren-runtime)", r"warren_runtime"),
    ("the bench's caller and native agents", r"^\?*:?<?warren_bench"),
    ("queue, dispatch, context, wait-for graph (warren-core)", r"warren_core"),
    ("async machinery (boxed futures, tokio, catch_unwind)", r"future|tokio|FnOnce|catch_unwind"),
    ("allocator, memcpy", r"mi_|memcpy|memmove|memset|memcmp|malloc|free"),
]


def function_costs(dump: Path) -> collections.Counter:
    """Self instructions per function of a callgrind dump, JIT addresses named from the perf map
    of the process that made it."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", str(dump)],
                         capture_output=True, text=True, check=True).stdout
    pid = re.search(r"^pid:\s*(\d+)", open(dump).read(4096), re.M)
    jit = []
    if pid and Path(f"/tmp/perf-{pid.group(1)}.map").exists():
        for line in open(f"/tmp/perf-{pid.group(1)}.map"):
            start, size, name = line.rstrip("\n").split(" ", 2)
            jit.append((int(start, 16), int(size, 16), name))
        jit.sort()
    starts = [j[0] for j in jit]
    costs: collections.Counter = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[.*\]$", "", re.sub(r"'\d+", "", m.group(2)))
        a = re.match(r"\?\?\?:0x([0-9a-f]+)", name)
        if a:
            addr = int(a.group(1), 16)
            i = bisect.bisect_right(starts, addr) - 1
            name = f"GUEST {jit[i][2]}" if i >= 0 and addr < jit[i][0] + jit[i][1] else "JIT (unnamed)"
        costs[name] += int(m.group(1).replace(",", ""))
    return costs


def breakdown(args, small: int, large: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        costs = []
        for n in (small, large):
            dump = Path(tmp) / f"cg.{n}"
            instructions(args.bench, args.workload, args.variant, n, args.components, dump,
                         perf_map=True)
            costs.append(function_costs(dump))
    a, b = costs
    per_op = {k: (b[k] - a[k]) / (large - small) for k in a.keys() | b.keys()}
    total = sum(per_op.values())
    by_cat: collections.Counter = collections.Counter()
    top: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, n in per_op.items():
        cat = next((c for c, rx in CATEGORIES if re.search(rx, name)), "other (libc, kernel entry)")
        by_cat[cat] += n
        top[cat][name] += n
    checks = ", explicit bounds checks" if args.variant == "wasm" else ""
    print(f"{args.workload} {args.variant}: {total:,.0f} instructions per operation "
          f"(callgrind, n={small} and n={large}{checks})")
    for cat, n in by_cat.most_common():
        if abs(n) < 0.5:
            continue
        print(f"  {n:9,.0f}  {100 * n / total:5.1f}%  {cat}")
        if args.verbose:
            for name, m in top[cat].most_common(args.top):
                if m >= 1:
                    print(f"               {m:8,.0f}  {name[:110]}")


def atomic_sites(binary: Path) -> dict[int, str]:
    """Addresses of atomic read-modify-write instructions in `binary`, with their functions."""
    dis = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(binary)],
                         capture_output=True, text=True, check=True).stdout
    sites, func = {}, "?"
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            func = m.group(1)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)", line)
        # `xchg` with a memory operand (either side) is atomic without a prefix.
        if m and (m.group(2).startswith("lock ") or re.match(r"xchg\s+\S*\(", m.group(2))):
            sites[int(m.group(1), 16)] = func
    return sites


def atomics(args, small: int, large: int) -> None:
    sites = atomic_sites(args.bench)
    with tempfile.TemporaryDirectory() as tmp:
        dumps = [Path(tmp) / f"cg.{n}" for n in (small, large)]
        for n, dump in zip((small, large), dumps):
            instructions(args.bench, args.workload, args.variant, n, args.components, dump)
        a, b = (self_costs(d, str(args.bench.resolve())) for d in dumps)
    # A position-independent binary may be reported at a load offset: take the one that lands
    # on the most atomic sites.
    base = max((0, 0x108000, 0x400000), key=lambda off: sum(1 for addr in b if addr - off in sites))
    per_func: collections.Counter = collections.Counter()
    for addr, n in b.items():
        if addr - base in sites:
            per_func[sites[addr - base]] += (n - a.get(addr, 0)) / (large - small)
    total = sum(per_func.values())
    print(f"{args.workload} {args.variant}: {total:,.1f} atomic read-modify-write instructions per "
          f"operation in the host (callgrind, n={small} and n={large})")
    for func, n in per_func.most_common(12):
        if n >= 0.05:
            print(f"  {n:6.2f}  {func[:140]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="rpc_roundtrip", choices=sorted({**SIZES, **PER_AGENT}))
    ap.add_argument("--variant", default="wasm", choices=["wasm", "native"])
    ap.add_argument("--components", type=Path, default=ROOT / "target/guests/wasm32-wasip2/guest")
    ap.add_argument("--bench", type=Path, default=ROOT / "target/release/warren-bench")
    ap.add_argument("--atomics", action="store_true",
                    help="count atomic read-modify-write instructions per operation instead")
    ap.add_argument("--breakdown", action="store_true",
                    help="split the instructions per operation by part of the message path")
    ap.add_argument("--verbose", action="store_true", help="with --breakdown: the top functions")
    ap.add_argument("--top", type=int, default=6, help="with --verbose: how many functions per part")
    ap.add_argument("--cache", action="store_true",
                    help="simulated L1 and L2 cache misses per operation as well")
    args = ap.parse_args()
    small, large = {**SIZES, **PER_AGENT}[args.workload]
    if args.breakdown:
        breakdown(args, small, large)
        return
    if args.atomics:
        atomics(args, small, large)
        return
    if args.cache:
        cache(args, small, large)
        return
    a = instructions(args.bench, args.workload, args.variant, small, args.components)
    b = instructions(args.bench, args.workload, args.variant, large, args.components)
    checks = ", explicit bounds checks" if args.variant == "wasm" else ""
    print(f"{args.workload} {args.variant}: {(b - a) / (large - small):,.0f} instructions per operation "
          f"(callgrind, n={small} and n={large}{checks})")


if __name__ == "__main__":
    main()
