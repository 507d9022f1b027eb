//! `warren new NAME`: scaffolds a plugin crate on the guest SDK that builds (`warren build NAME`)
//! and runs (`warren run NAME --send NAME/x Greet '{"name": "Ada"}' --until-idle`) first time.

use std::path::Path;

use serde_json::json;

use crate::EXIT_SETUP;
use crate::output::{fatal, line};

/// Where the guest SDK lives: the SDK is not on crates.io, so the scaffold depends on it by path.
fn sdk_path() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk");
    p.canonicalize().unwrap_or(p)
}

const LIB: &str = r#"//! The `{name}` agent. Edit the messages and handlers; `warren build .` compiles it.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, Context, Error, Handlers};

/// A request: who to greet.
#[derive(Debug, Serialize, Deserialize)]
pub struct Greet {
    pub name: String,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Greeting {
    pub text: String,
}

/// The agent; its fields are its state (saved and loaded with serde).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Plugin {
    greeted: u64,
}

impl Agent for Plugin {
    fn description() -> String {
        "{name}: greets whoever asks".into()
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(|me: &mut Plugin, m: Greet, ctx: &Context| {
            me.greeted += 1;
            Ok::<_, Error>(Greeting {
                text: format!("Hello, {}! ({} says so, greeting #{})", m.name, ctx.self_id(), me.greeted),
            })
        });
    }
}

warren_guest::export_agent!(Plugin);
"#;

/// `warren new`.
pub fn new(name: &str, parent: &Path) -> u8 {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !valid {
        fatal(&format!(
            "plugin name `{name}` is not usable: start with a letter and use only ASCII letters, digits, `-` and `_` (it becomes the crate name and the agent type)"
        ));
        return EXIT_SETUP;
    }
    let dir = parent.join(name);
    if dir.exists() {
        fatal(&format!(
            "{} already exists; choose another name or --dir",
            dir.display()
        ));
        return EXIT_SETUP;
    }
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
warren-guest = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

# A plugin is its own workspace, wherever it is created.
[workspace]
"#,
        sdk = sdk_path().display().to_string()
    );
    let manifest = format!(
        r#"[agent]
type = "{name}"
description = "{name}: greets whoever asks"
component = "{name}.wasm"
# subscriptions = [{{ topic_type = "news" }}]
# agents_per_instance = 256   # share instances (cheaper agents, less isolation; not if it sends)
"#
    );
    let files = [
        ("Cargo.toml", cargo),
        ("plugin.toml", manifest),
        ("src/lib.rs", LIB.replace("{name}", name)),
        (
            "rust-toolchain.toml",
            "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\nprofile = \"minimal\"\n".to_owned(),
        ),
        (".gitignore", "target/\n*.wasm\n".to_owned()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, text));
        if let Err(e) = written {
            fatal(&format!("writing {}: {e}", path.display()));
            return EXIT_SETUP;
        }
    }
    line(
        "created",
        json!({ "plugin": name, "dir": dir.display().to_string() }),
        format!(
            "created {}\nnext: warren build {0} && warren run {0} --send {name}/x Greet '{{\"name\": \"Ada\"}}' --until-idle",
            dir.display()
        ),
    );
    0
}
