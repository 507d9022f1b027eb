//! Wasm agents (issue #3): plugins loaded as components, interchangeable with native agents.

mod bad_input;
mod conformance;
mod footprint;
mod interop;
mod local_messages;
mod shared;
mod sync_calls;
mod traps;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use warren_runtime::{AgentRuntime, HostConfig, LoadedPlugin, Manifest, PluginError, WasmHost};

/// The guest components built by `tests/build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// One host for the whole test binary, with a compile cache inside `target/`, so each component
/// is compiled once per machine rather than once per test.
pub fn host() -> WasmHost {
    static HOST: OnceLock<WasmHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let cache = Path::new(guests::ROOT)
            .join("target")
            .join("test-compile-cache");
        WasmHost::with_config(HostConfig {
            cache_dir: Some(cache),
            max_instances: 2000,
            ..HostConfig::default()
        })
        .expect("wasm host")
    })
    .clone()
}

/// The manifest of plugin `name`: an example plugin under `plugins/`, or a test fixture under
/// `tests/fixtures/`.
pub fn manifest_path(name: &str) -> PathBuf {
    let root = Path::new(guests::ROOT);
    let example = root.join("plugins").join(name).join("plugin.toml");
    if example.exists() {
        example
    } else {
        root.join("tests")
            .join("fixtures")
            .join(name)
            .join("plugin.toml")
    }
}

/// Loads `plugins/<name>` with the component the tests built.
pub async fn load(name: &str, component: &str) -> Result<LoadedPlugin, PluginError> {
    load_on(&host(), name, component).await
}

/// [`load`] on another host.
pub async fn load_on(
    host: &WasmHost,
    name: &str,
    component: &str,
) -> Result<LoadedPlugin, PluginError> {
    let path = manifest_path(name);
    let manifest = Manifest::load(&path).map_err(PluginError::Manifest)?;
    host.load_with_component(manifest, &path, Path::new(component))
        .await
}

/// Loads and registers plugins into a fresh runtime.
pub async fn runtime_with(plugins: &[(&str, &str)]) -> AgentRuntime {
    let rt = AgentRuntime::new();
    for (name, component) in plugins {
        let p = load(name, component)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        host().register(&rt, &p).await.unwrap();
    }
    rt
}

/// The host and the guest SDK name message types the same way (both re-export
/// `warren_typename::bare_type_name`; this guards against either growing its own again).
#[test]
fn host_and_guest_agree_on_type_names() {
    for full in [
        "WorkRequest",
        "my_plugin::msgs::WorkRequest",
        "alloc::vec::Vec<my::Item>",
        "core::option::Option<alloc::string::String>",
        "(a::B, c::D)",
        "&str",
        "[u8; 4]",
    ] {
        assert_eq!(
            warren_runtime::message::bare_type_name(full),
            warren_guest::bare_type_name(full),
            "{full}"
        );
    }
}
