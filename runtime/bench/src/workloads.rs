//! The six workloads, exactly as `WORKLOADS.md` times and verifies them.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, ensure};
use serde_json::{Value, json};
use warren_runtime::{AgentId, AgentRuntime, SavedState, TopicId};

use crate::agents::*;

fn proc_status_kib(field: &str) -> u64 {
    proc_kib("/proc/self/status", field)
}

/// The KiB figure of the line starting with `field` in a `/proc` file.
fn proc_kib(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The environment variable naming a directory where instantiate_many copies
/// `/proc/self/smaps` before and after its timed region (`smaps-before`, `smaps-after`), to see
/// which mappings the new agents grew.
pub const SMAPS_DIR: &str = "WARREN_BENCH_SMAPS";

fn dump_smaps(when: &str) {
    if let Some(dir) = std::env::var_os(SMAPS_DIR) {
        let to = std::path::Path::new(&dir).join(format!("smaps-{when}"));
        if let Err(e) = std::fs::copy("/proc/self/smaps", &to) {
            eprintln!("cannot write {}: {e}", to.display());
        }
    }
}

fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Proportional set size (KiB): like RSS, but a page shared by k mappings counts 1/k. Wasm
/// instances map their component's read-only data image from one shared file, which RSS counts
/// once per instance.
fn pss_kib() -> u64 {
    proc_kib("/proc/self/smaps_rollup", "Pss:")
}

/// Process CPU time (user + system, all threads), in seconds.
#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    let mut ts = libc_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we pass, which points to a live,
    // properly aligned local of the layout the C ABI expects on Linux (two longs).
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;

#[allow(unsafe_code)]
unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
}

struct Timer {
    wall: Instant,
    cpu: f64,
}

/// The environment variable naming a `perf record --control` fifo (see [`perf_control`]).
pub const PERF_CTL: &str = "WARREN_BENCH_PERF_CTL";

/// Set (to anything) to compile guests with explicit bounds checks whatever the pool size
/// (`MemoryChecks::Explicit`): valgrind cannot reserve 4 GiB of address space per instance for
/// more than about 30 instances, so `instructions.py` sets it for its 100-agent workloads.
pub const EXPLICIT_CHECKS: &str = "WARREN_BENCH_EXPLICIT_CHECKS";

/// Tells `perf record --control fifo:PATH -D -1` to sample only inside timed regions, when
/// `WARREN_BENCH_PERF_CTL` names that fifo (setup and teardown then stay out of the profile).
fn perf_control(command: &str) {
    if let Some(path) = std::env::var_os(PERF_CTL) {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = writeln!(f, "{command}");
        }
    }
}

impl Timer {
    fn start() -> Self {
        perf_control("enable");
        Self {
            cpu: cpu_seconds(),
            wall: Instant::now(),
        }
    }
    fn stop(self) -> (f64, f64) {
        let r = (self.wall.elapsed().as_secs_f64(), cpu_seconds() - self.cpu);
        perf_control("disable");
        r
    }
}

struct Record {
    workload: &'static str,
    n: u64,
    seconds: f64,
    units: f64,
    cpu: f64,
    extra: Value,
}

fn record(r: Record, variant: &Variant, threads: usize) -> Value {
    let mut rec = json!({
        "workload": r.workload,
        "n": r.n,
        "seconds": r.seconds,
        "per_sec": r.units / r.seconds,
        "rss_mb": rss_kib() as f64 / 1024.0,
        "rss_peak_mb": proc_status_kib("VmHWM:") as f64 / 1024.0,
        "cpu_seconds": r.cpu,
        "per_cpu_sec": if r.cpu > 0.0 { r.units / r.cpu } else { 0.0 },
        "impl": format!("{}-{}thread", variant.label(), threads),
        "threads": threads,
        "codec": variant.codec(),
        "allocator": variant.allocator(),
        "memory_checks": variant.memory_checks(),
        "agents_per_instance": variant.agents_per_instance(),
        "global_allocator": format!(
            "mimalloc (purge delay {} ms, transparent huge pages {})",
            warren_runtime::allocator::purge_delay_ms(),
            if warren_runtime::allocator::huge_pages_disabled() { "off" } else { "allowed" }
        ),
        "mailbox": "one message at a time per agent (FIFO)",
    });
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg")
        && let Some(v) = l
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    {
        rec["loadavg_1m"] = v.into();
    }
    if let (Some(o), Value::Object(e)) = (rec.as_object_mut(), r.extra) {
        o.extend(e);
    }
    rec
}

fn id(t: &str, k: impl ToString) -> AgentId {
    AgentId::new(t, k.to_string()).expect("valid id")
}

/// Runs one workload and returns its JSON record, or fails verification.
pub async fn run(
    workload: &str,
    variant_name: &str,
    n: u64,
    threads: usize,
    components: &Path,
    agents_per_instance: Option<u32>,
) -> anyhow::Result<Value> {
    // Pool slots for the agents a workload keeps live: state_roundtrip keeps two runtimes of n
    // agents each, instantiate_many n + 1; the others a few hundred at most.
    let live = match workload {
        "state_roundtrip" => 2 * n,
        "instantiate_many" => n,
        _ => 200,
    };
    let variant = Variant::new(variant_name, components, live, agents_per_instance).await?;
    let rt = AgentRuntime::new();
    let r = match workload {
        "rpc_roundtrip" => rpc_roundtrip(&rt, &variant, n).await?,
        "rpc_concurrent" => rpc_concurrent(&rt, &variant, n).await?,
        "publish_fanout" => publish_fanout(&rt, &variant, n).await?,
        "instantiate_many" => instantiate_many(&rt, &variant, n).await?,
        "rpc_chain" => rpc_chain(&rt, &variant, n).await?,
        "state_roundtrip" => state_roundtrip(&rt, &variant, n).await?,
        other => bail!("unknown workload {other}"),
    };
    Ok(record(r, &variant, threads))
}

async fn rpc_roundtrip(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    v.echo(rt, "echo").await?;
    rt.start()?;
    let target = id("echo", "k");
    for i in 0..100 {
        rt.send::<Pong>(Ping { i }, &target).await?;
    }
    let t = Timer::start();
    for i in 0..n as i64 {
        let r: Pong = rt.send(Ping { i }, &target).await?;
        ensure!(r.i == i, "bad pong");
    }
    let (seconds, cpu) = t.stop();
    rt.stop_when_idle().await?;
    Ok(Record {
        workload: "rpc_roundtrip",
        n,
        seconds,
        units: n as f64,
        cpu,
        extra: json!({}),
    })
}

async fn rpc_concurrent(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    const KEYS: i64 = 100;
    v.echo(rt, "echo").await?;
    rt.start()?;
    let targets: Vec<AgentId> = (0..KEYS).map(|k| id("echo", k)).collect();
    let warm = (0..KEYS).map(|k| rt.send::<Pong>(Ping { i: k }, &targets[k as usize]));
    futures_util::future::try_join_all(warm).await?;
    let t = Timer::start();
    let all = (0..n as i64).map(|i| rt.send::<Pong>(Ping { i }, &targets[(i % KEYS) as usize]));
    let res = futures_util::future::try_join_all(all).await?;
    let (seconds, cpu) = t.stop();
    ensure!(res.len() as u64 == n, "missing responses");
    ensure!(
        res.iter().enumerate().all(|(i, r)| r.i == i as i64),
        "bad concurrent results"
    );
    rt.stop_when_idle().await?;
    Ok(Record {
        workload: "rpc_concurrent",
        n,
        seconds,
        units: n as f64,
        cpu,
        extra: json!({ "keys": KEYS }),
    })
}

async fn fanout_deliveries(rt: &AgentRuntime, v: &Variant) -> anyhow::Result<Vec<u64>> {
    match v {
        Variant::Native => Ok(vec![DELIVERIES.load(Ordering::Relaxed)]),
        Variant::Wasm(_) => {
            let mut counts = Vec::new();
            for j in 0..100 {
                let s = rt.agent_save_state(&id(&format!("sub{j}"), "s")).await?;
                counts.push(s.to_value()["counter"].as_u64().unwrap_or(0));
            }
            Ok(counts)
        }
    }
}

async fn publish_fanout(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    const SUBS: u64 = 100;
    for j in 0..SUBS {
        v.subscriber(rt, &format!("sub{j}")).await?;
    }
    let topic = TopicId::new("news", "s")?;
    rt.start()?;
    rt.publish(News { i: -1 }, &topic).await?;
    rt.stop_when_idle().await?;
    let warm = fanout_deliveries(rt, v).await?;
    ensure!(
        warm.iter().sum::<u64>() == SUBS,
        "warm-up deliveries {warm:?}"
    );
    DELIVERIES.store(0, Ordering::Relaxed);
    rt.start()?;
    let t = Timer::start();
    for i in 0..n as i64 {
        rt.publish(News { i }, &topic).await?;
    }
    rt.stop_when_idle().await?;
    let (seconds, cpu) = t.stop();
    let d = n * SUBS;
    match v {
        Variant::Native => ensure!(DELIVERIES.load(Ordering::Relaxed) == d, "deliveries"),
        Variant::Wasm(_) => {
            let counts = fanout_deliveries(rt, v).await?;
            ensure!(
                counts.iter().all(|c| *c == n + 1),
                "every agent's counter == N + 1: {counts:?}"
            );
        }
    }
    Ok(Record {
        workload: "publish_fanout",
        n,
        seconds,
        units: d as f64,
        cpu,
        extra: json!({ "deliveries": d, "subscribers": SUBS, "publishes_per_sec": n as f64 / seconds }),
    })
}

async fn instantiate_many(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    v.echo(rt, "lazy").await?;
    rt.start()?;
    rt.send::<Touched>(Touch { i: -1 }, &id("lazy", "warmup"))
        .await?;
    let before = rss_kib();
    let pss_before = pss_kib();
    dump_smaps("before");
    let t = Timer::start();
    for i in 0..n as i64 {
        let r: Touched = rt.send(Touch { i }, &id("lazy", i)).await?;
        ensure!(r.i == i, "bad touch");
    }
    let (seconds, cpu) = t.stop();
    let after = rss_kib();
    let pss_after = pss_kib();
    dump_smaps("after");
    let live = rt.live_agents() as u64;
    ensure!(live == n + 1, "agents_live {live} != {}", n + 1);
    Ok(Record {
        workload: "instantiate_many",
        n,
        seconds,
        units: n as f64,
        cpu,
        extra: json!({
            "rss_before_mb": before as f64 / 1024.0,
            "rss_after_mb": after as f64 / 1024.0,
            "rss_kb_per_agent": (after as f64 - before as f64) / n as f64,
            "pss_kb_per_agent": (pss_after as f64 - pss_before as f64) / n as f64,
            "agents_live": live,
        }),
    })
}

async fn rpc_chain(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    v.hop(rt).await?;
    rt.start()?;
    let head = id("hop", 0);
    for i in 0..10 {
        rt.send::<HopResp>(HopReq { i, hops: 0 }, &head).await?;
    }
    let t = Timer::start();
    for i in 0..n as i64 {
        let r: HopResp = rt.send(HopReq { i, hops: 0 }, &head).await?;
        ensure!(r.i == i && r.hops == CHAIN_HOPS, "bad chain response");
    }
    let (seconds, cpu) = t.stop();
    rt.stop_when_idle().await?;
    Ok(Record {
        workload: "rpc_chain",
        n,
        seconds,
        units: n as f64,
        cpu,
        extra: json!({ "hops": CHAIN_HOPS, "hop_msgs_per_sec": (n as f64) * CHAIN_HOPS as f64 / seconds }),
    })
}

async fn state_roundtrip(rt: &AgentRuntime, v: &Variant, n: u64) -> anyhow::Result<Record> {
    v.stateful(rt).await?;
    rt.start()?;
    for i in 0..n as i64 {
        rt.send::<Pong>(Inc { by: i }, &id("stateful", i)).await?;
    }
    rt.stop_when_idle().await?;

    let t0 = Timer::start();
    let t = Instant::now();
    let state = rt.save_state().await?;
    let save_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let blob = state.to_json();
    let dumps_s = t.elapsed().as_secs_f64();
    let (_, cpu_a) = t0.stop();
    drop(state);

    let b = AgentRuntime::new();
    v.stateful(&b).await?;
    let t0 = Timer::start();
    let t = Instant::now();
    let loaded: SavedState = serde_json::from_str(&blob)?;
    let loads_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // By value: each agent gets its state moved out of the parsed document.
    b.load_state(loaded).await?;
    let load_s = t.elapsed().as_secs_f64();
    let (_, cpu_b) = t0.stop();

    b.start()?;
    let mut samples = vec![0, 1, n / 2, n - 1];
    samples.dedup();
    for i in samples {
        let s: StateView = b.send(GetState {}, &id("stateful", i)).await?;
        ensure!(
            s.counter == i as i64 && s.note == note(&i.to_string()),
            "state mismatch for {i}: {s:?}"
        );
    }
    b.stop_when_idle().await?;
    let seconds = save_s + dumps_s + loads_s + load_s;
    Ok(Record {
        workload: "state_roundtrip",
        n,
        seconds,
        units: n as f64,
        cpu: cpu_a + cpu_b,
        extra: json!({
            "save_s": save_s, "dumps_s": dumps_s, "loads_s": loads_s, "load_s": load_s,
            "state_bytes": blob.len(),
            "state_encoding": "each agent's own JSON text (compact separators), embedded as-is and read back as text",
        }),
    })
}
