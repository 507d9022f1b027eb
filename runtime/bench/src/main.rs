//! `warren-bench`: the six workloads of `WORKLOADS.md` (AutoGen's runtime benchmark) on Warren, with
//! native Rust agents and with wasm agents built from `plugins/`. Same N, same timed regions, same
//! JSON line per (workload, repetition), each in a fresh process, workloads interleaved rep-major.
//!
//! ```sh
//! cargo run --release -p warren-bench -- --reps 3                 # everything, both variants
//! cargo run --release -p warren-bench -- --quick --reps 1         # the CI smoke test
//! cargo run --release -p warren-bench -- --workload rpc_chain --variant wasm
//! ```

/// The global allocator and its settings, as in the `warren` binary (`warren_runtime::allocator`):
/// glibc's malloc spent up to a third of some workloads consolidating free lists
/// (`malloc_consolidate`) and faulting in its arenas.
#[global_allocator]
static GLOBAL: warren_runtime::allocator::MiMalloc = warren_runtime::allocator::MiMalloc;

mod agents;
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::Value;

/// The workloads, in the order the driver interleaves them.
pub const WORKLOADS: [&str; 6] = [
    "rpc_roundtrip",
    "rpc_concurrent",
    "publish_fanout",
    "instantiate_many",
    "rpc_chain",
    "state_roundtrip",
];

fn full_n(w: &str) -> u64 {
    match w {
        "publish_fanout" | "rpc_chain" => 2000,
        _ => 20_000,
    }
}

/// Run AutoGen's six runtime workloads on Warren.
#[derive(Debug, Parser, Clone)]
#[command(name = "warren-bench")]
pub struct Args {
    /// N/10 for every workload (smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Run only these workloads (repeatable).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    pub workload: Vec<String>,
    /// Repetitions per workload, each in a fresh process.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Override N for the selected workloads.
    #[arg(long)]
    pub n: Option<u64>,
    /// Agent variants to run (repeatable): `native`, `wasm`.
    #[arg(long, value_parser = ["native", "wasm"])]
    pub variant: Vec<String>,
    /// Tokio worker threads (1 = a current-thread runtime, like AutoGen's single event loop).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where the guest components are (built with `cargo build --profile guest` if omitted).
    #[arg(long)]
    pub components: Option<PathBuf>,
    /// Agents per instance of the echo and counter plugins (default: their manifests'
    /// `agents_per_instance`); 1 gives every wasm agent an instance of its own.
    #[arg(long)]
    pub agents_per_instance: Option<u32>,
    #[arg(long, hide = true)]
    pub child: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.child {
        // The allocator settings of the `warren` command (and Warren's advice to embedders).
        warren_runtime::allocator::tune();
        return child(&args);
    }
    let components = match &args.components {
        Some(c) => c.clone(),
        None => build_components()?,
    };
    let workloads: Vec<String> = if args.workload.is_empty() {
        WORKLOADS.iter().map(|s| s.to_string()).collect()
    } else {
        args.workload.clone()
    };
    let variants: Vec<String> = if args.variant.is_empty() {
        vec!["native".into(), "wasm".into()]
    } else {
        args.variant.clone()
    };
    let exe = std::env::current_exe()?;
    let mut results: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for rep in 0..args.reps {
        for w in &workloads {
            for v in &variants {
                let n = args.n.unwrap_or_else(|| {
                    if args.quick {
                        full_n(w) / 10
                    } else {
                        full_n(w)
                    }
                });
                let out = Command::new(&exe)
                    .args(["--child", "--workload", w, "--variant", v])
                    .args([
                        "--n",
                        &n.to_string(),
                        "--threads",
                        &args.threads.to_string(),
                    ])
                    .arg("--components")
                    .arg(&components)
                    .args(
                        args.agents_per_instance
                            .iter()
                            .flat_map(|n| ["--agents-per-instance".to_owned(), n.to_string()]),
                    )
                    .output()?;
                if !out.status.success() {
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                    bail!("{w} ({v}) failed verification or crashed: {}", out.status);
                }
                let line = String::from_utf8_lossy(&out.stdout);
                let mut rec: Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
                    .with_context(|| format!("{w} ({v}) printed no JSON line"))?;
                rec["rep"] = rep.into();
                println!("{rec}");
                eprintln!(
                    "  rep {rep} {w:<17} {v:<6} {:>10.3}s {:>14.0}/s",
                    rec["seconds"].as_f64().unwrap_or(0.0),
                    rec["per_sec"].as_f64().unwrap_or(0.0)
                );
                results.entry((w.clone(), v.clone())).or_default().push(rec);
            }
        }
    }
    eprintln!("\n# median per_sec [min .. max] over {} reps", args.reps);
    for ((w, v), recs) in &results {
        let mut xs: Vec<f64> = recs.iter().filter_map(|r| r["per_sec"].as_f64()).collect();
        xs.sort_by(f64::total_cmp);
        eprintln!(
            "{w:<17} {v:<6} {:>14.0} [{:.0} .. {:.0}]",
            xs[xs.len() / 2],
            xs[0],
            xs[xs.len() - 1]
        );
    }
    Ok(())
}

/// Builds the guest components the wasm variant uses and returns their directory.
fn build_components() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target").join("guests");
    // As `warren build` does (see `add_wasm_target` there): a toolchain installed without the
    // target gets it; quiet and quick when it has it.
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(&root)
        .output();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
        ])
        .args([
            "-p",
            "warren-plugin-echo",
            "-p",
            "warren-plugin-counter",
            "-p",
            "warren-plugin-relay",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .context("running cargo to build the guest components")?;
    if !status.success() {
        bail!("building the guest components failed");
    }
    Ok(target.join("wasm32-wasip2").join("guest"))
}

fn child(args: &Args) -> anyhow::Result<()> {
    let workload = args
        .workload
        .first()
        .context("--child needs --workload")?
        .clone();
    let variant = args
        .variant
        .first()
        .cloned()
        .unwrap_or_else(|| "native".into());
    let n = args.n.unwrap_or_else(|| full_n(&workload));
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let components = args
        .components
        .clone()
        .context("--child needs --components")?;
    let rec = rt.block_on(workloads::run(
        &workload,
        &variant,
        n,
        args.threads,
        &components,
        args.agents_per_instance,
    ))?;
    println!("{rec}");
    Ok(())
}
