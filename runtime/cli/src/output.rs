//! What the CLI prints: results on stdout (one line each, human or JSON), logs and diagnostics on
//! stderr through `tracing`. With `--json` every line on both streams is one JSON object.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;

static JSON: OnceLock<bool> = OnceLock::new();

fn json_mode() -> bool {
    *JSON.get().unwrap_or(&false)
}

/// Sets up logging: `-v`/`-q` move the level; plugin logs (tagged with their agent id) are at
/// `info`; `RUST_LOG` overrides everything.
pub fn init(json: bool, verbose: u8, quiet: u8) {
    let _ = JSON.set(json);
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,warren_runtime={level},warren_core={level},warren={level}"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.without_time().init();
    }
}

/// Prints one result line on stdout.
pub fn line(kind: &str, fields: Value, human: String) {
    let mut out = std::io::stdout().lock();
    if json_mode() {
        let mut obj = json!({ "kind": kind });
        if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let _ = writeln!(out, "{obj}");
    } else {
        let _ = writeln!(out, "{human}");
    }
}

/// Prints an error that ends the command (one line, naming what is at fault).
pub fn fatal(message: &str) {
    if json_mode() {
        eprintln!("{}", json!({ "kind": "error", "error": message }));
    } else {
        eprintln!("error: {message}");
    }
}

/// A payload body for display: as JSON if it is JSON or MessagePack (what wasm agents answer
/// in), otherwise its size.
pub fn body(p: &warren_runtime::Payload) -> Value {
    p.to_json()
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_else(|| json!(format!("<{} bytes of {}>", p.data.len(), p.content_type)))
}
