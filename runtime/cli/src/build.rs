//! `warren build`: compiles plugin crates to wasm32-wasip2 components with a nested
//! `cargo build`, and copies each component next to its manifest under the name the manifest
//! gives.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;
use warren_runtime::Manifest;
use warren_runtime::discover::MANIFEST;

use crate::EXIT_SETUP;
use crate::output::{fatal, line};

/// Arguments of `warren build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Plugin crate directories (each with a Cargo.toml and a plugin.toml).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Cargo target directory (default: each crate's own).
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

/// `warren build`.
pub fn build(args: &BuildArgs) -> u8 {
    match build_dirs(&args.dirs, args.target_dir.as_deref()) {
        Ok(()) => 0,
        Err(e) => {
            fatal(&format!("{e:#}"));
            EXIT_SETUP
        }
    }
}

/// Builds each plugin crate and places its component next to its manifest.
pub fn build_dirs(dirs: &[PathBuf], target_dir: Option<&Path>) -> anyhow::Result<()> {
    for dir in dirs {
        let manifest_path = dir.join(MANIFEST);
        let manifest = Manifest::load(&manifest_path).map_err(|errors| {
            anyhow::anyhow!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        let cargo_toml = dir.join("Cargo.toml");
        if !cargo_toml.is_file() {
            bail!(
                "{}: no Cargo.toml; `warren build` builds plugin crates (create one with `warren new NAME`)",
                dir.display()
            );
        }
        let wasm = cargo_build(&cargo_toml, target_dir)?;
        let dest = manifest.component_path(&manifest_path);
        // Copy then rename, so a host loading the plugin meanwhile never sees half a component.
        let tmp = dest.with_extension(format!("wasm.tmp{}", std::process::id()));
        std::fs::copy(&wasm, &tmp)
            .with_context(|| format!("copying {} to {}", wasm.display(), tmp.display()))?;
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("moving {} to {}", tmp.display(), dest.display()))?;
        line(
            "built",
            serde_json::json!({ "plugin": manifest.agent.agent_type, "component": dest.display().to_string() }),
            format!("built {} -> {}", manifest.agent.agent_type, dest.display()),
        );
    }
    Ok(())
}

/// Adds the wasm32-wasip2 target with rustup for the toolchain that builds in `dir`. The
/// `rust-toolchain.toml` names it, but rustup adds a file's targets only when it installs the
/// toolchain: a machine that had the toolchain already, or sets `RUSTUP_AUTO_INSTALL=0`, lacks
/// it. Quick and offline when the target is there; without rustup, or offline, the build that
/// follows reports what is missing.
fn add_wasm_target(dir: &Path) {
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs cargo for one crate and returns the component it produced. Guests are built small
/// (`opt-level = "s"`, LTO) and with `panic = "abort"`, so a guest panic is a trap.
fn cargo_build(cargo_toml: &Path, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    add_wasm_target(
        cargo_toml
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(cargo_toml)
        .args([
            "--target",
            "wasm32-wasip2",
            "--release",
            "--message-format",
            "json-render-diagnostics",
        ])
        .args(["--config", "profile.release.opt-level=\"s\""])
        .args(["--config", "profile.release.lto=true"])
        .args(["--config", "profile.release.codegen-units=1"])
        .args(["--config", "profile.release.strip=true"])
        .args(["--config", "profile.release.panic=\"abort\""])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = target_dir {
        cmd.arg("--target-dir").arg(t);
    }
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running cargo for {}", cargo_toml.display()))?;
    if !out.status.success() {
        bail!(
            "cargo could not build {} (see its messages above; if it cannot find `core` for wasm32-wasip2, run `rustup target add wasm32-wasip2`)",
            cargo_toml.display()
        );
    }
    let mut wasm = None;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let is_cdylib = v["target"]["crate_types"]
            .as_array()
            .is_some_and(|k| k.iter().any(|t| t == "cdylib"));
        if v["reason"] == "compiler-artifact" && is_cdylib {
            for f in v["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    wasm.with_context(|| {
        format!(
            "cargo built {} but produced no .wasm component: the crate needs `crate-type = [\"cdylib\"]` in [lib]",
            cargo_toml.display()
        )
    })
}
