//! Builds the guest components the tests load: every example plugin in `plugins/` and every
//! fixture in `tests/fixtures/`, with a nested `cargo build --target wasm32-wasip2`, so that
//! `cargo test` from a fresh clone needs nothing else. The paths are written to
//! `$OUT_DIR/guests.rs` as constants.
//!
//! The guests get their own target directory (`target/guests`), so the nested cargo never waits
//! on the outer one's lock and incremental guest rebuilds stay fast.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant name) of every guest.
const GUESTS: &[(&str, &str)] = &[
    ("warren-plugin-echo", "ECHO"),
    ("warren-plugin-counter", "COUNTER"),
    ("warren-plugin-worker", "WORKER"),
    ("warren-plugin-monitor", "MONITOR"),
    ("warren-plugin-relay", "RELAY"),
    ("warren-fixture-faulty", "FAULTY"),
    ("warren-fixture-local", "LOCAL"),
    ("warren-fixture-fs-reader", "FS_READER"),
    ("warren-fixture-command", "COMMAND"),
    ("warren-fixture-net-client", "NET_CLIENT"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_owned();
    for dir in ["plugins", "guest-sdk", "wit", "tests/fixtures"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    // As `warren build` does (see `add_wasm_target` there): a toolchain installed without the
    // target gets it; quiet and quick when it has it.
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(&root)
        .output();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // Host-side settings of the outer build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the wasm guests");
    assert!(
        status.success(),
        "building the wasm guests failed: {status}"
    );

    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    let mut consts = String::new();
    for (package, name) in GUESTS {
        // Libraries are named with underscores, binaries keep their dashes.
        let lib = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
        let file = if lib.exists() {
            lib
        } else {
            out_dir.join(format!("{package}.wasm"))
        };
        assert!(file.exists(), "{} was not produced", file.display());
        consts.push_str(&format!(
            "/// The `{package}` component.\npub const {name}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    consts.push_str(&format!(
        "/// The repository root.\npub const ROOT: &str = {:?};\n",
        root.display().to_string()
    ));
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(dest, consts).unwrap();
}
