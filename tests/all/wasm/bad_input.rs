//! Bad plugins and bad payloads get typed errors naming the plugin and the cause, at load time
//! where possible, and never take the runtime down.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warren_runtime::{AgentId, Error, Manifest, Message, Payload, PluginError, SendOptions};

use super::{guests, host, manifest_path, runtime_with};
use crate::common::*;

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(guests::ROOT).join("target").join("test-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Loads `component` with a manifest written for this test alone (tests run in parallel).
async fn load_as(
    manifest_text: &str,
    component: &Path,
) -> Result<warren_runtime::LoadedPlugin, PluginError> {
    let name = format!("{}.toml", component.file_name().unwrap().to_string_lossy());
    let mpath = scratch(&name, manifest_text.as_bytes());
    let m = Manifest::load(&mpath).map_err(PluginError::Manifest)?;
    host().load_with_component(m, &mpath, component).await
}

const MANIFEST: &str = "[agent]\ntype = \"bad\"\ncomponent = \"bad.wasm\"\n";

#[tokio::test]
async fn a_file_that_is_not_wasm() {
    let e = load_as(MANIFEST, &scratch("junk.wasm", b"#!/bin/sh\necho hi\n"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PluginError::NotAComponent { ref plugin, .. } if plugin == "bad"),
        "{e}"
    );
    assert!(e.to_string().contains("not a WebAssembly file"), "{e}");
}

#[tokio::test]
async fn a_core_module_instead_of_a_component() {
    // The smallest valid core module: magic and version 1.
    let e = load_as(MANIFEST, &scratch("module.wasm", b"\0asm\x01\0\0\0"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("core WebAssembly module, not a component"),
        "{e}"
    );
}

#[tokio::test]
async fn a_truncated_component_does_not_compile() {
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let e = load_as(
        MANIFEST,
        &scratch("truncated.wasm", &bytes[..bytes.len() / 2]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, PluginError::Compile { ref plugin, .. } if plugin == "bad"),
        "{e}"
    );
}

#[tokio::test]
async fn a_component_of_another_world() {
    let e = load_as(MANIFEST, Path::new(guests::COMMAND))
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::WrongWorld { .. }), "{e}");
    assert!(
        e.to_string().contains("warren:agent/agent"),
        "names the missing export: {e}"
    );
}

#[tokio::test]
async fn a_component_importing_the_filesystem_is_refused_at_load() {
    let e = load_as(MANIFEST, Path::new(guests::FS_READER))
        .await
        .unwrap_err();
    match &e {
        PluginError::ImportNotGranted { plugin, import, .. } => {
            assert_eq!(plugin, "bad");
            assert!(import.starts_with("wasi:filesystem/"), "{import}");
        }
        other => panic!("expected ImportNotGranted, got {other}"),
    }
}

#[tokio::test]
async fn a_manifest_naming_a_type_the_component_does_not_handle() {
    let text = "[agent]\ntype = \"echo2\"\ncomponent = \"echo.wasm\"\nhandles = [\"Ping\", \"Teleport\"]\n";
    let e = load_as(text, Path::new(guests::ECHO)).await.unwrap_err();
    match &e {
        PluginError::MissingHandler {
            message_type,
            handled,
            ..
        } => {
            assert_eq!(message_type, "Teleport");
            assert!(handled.contains(&"Ping".to_owned()));
        }
        other => panic!("expected MissingHandler, got {other}"),
    }
}

#[tokio::test]
async fn a_broken_manifest_names_file_and_key() {
    let e = host()
        .load(&scratch(
            "broken.toml",
            b"[agent]\ntype = \"x\"\ncomponent = \"x.wasm\"\ncolour = \"red\"\n",
        ))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("broken.toml") && text.contains("colour"),
        "{text}"
    );
    let e = host()
        .load(Path::new("/nonexistent/plugin.toml"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/plugin.toml"), "{e}");
    // The real manifests all parse.
    for name in ["echo", "counter", "worker", "monitor", "relay"] {
        Manifest::load(&manifest_path(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Inc {
    by: i64,
}

#[tokio::test]
async fn a_payload_the_guest_cannot_decode_is_a_typed_error_and_the_agent_lives_on() {
    let rt = runtime_with(&[("counter", guests::COUNTER)]).await;
    rt.start().unwrap();
    let bad = Payload::json("Inc", br#"{"by":"seven"}"#.to_vec());
    let e = within(rt.send_message(
        Message::from_payload(bad),
        "counter/k".parse().unwrap(),
        SendOptions::default(),
    ))
    .await
    .unwrap_err();
    match &e {
        Error::HandlerFailed {
            agent,
            message_type,
            source,
        } => {
            assert_eq!(
                (agent.to_string().as_str(), message_type.as_str()),
                ("counter/k", "Inc")
            );
            assert!(
                source.to_string().contains("cannot decode `Inc`"),
                "{source}"
            );
        }
        other => panic!("expected HandlerFailed, got {other}"),
    }
    let e = within(rt.send::<()>(
        MessageType::new("?"),
        &"counter/k".parse::<AgentId>().unwrap(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::CantHandle { ref message_type, .. } if message_type == "MessageType"),
        "{e}"
    );
    #[derive(Debug, Deserialize)]
    struct Pong {
        i: i64,
    }
    let p: Pong = within(rt.send(Inc { by: 3 }, &"counter/k".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(p.i, 3);
}
