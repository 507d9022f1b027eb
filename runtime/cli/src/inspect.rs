//! `warren inspect` and `warren validate`: load plugins the way `run` does, without running them.

use std::path::{Path, PathBuf};

use serde_json::json;
use warren_runtime::WasmHost;
use warren_runtime::discover::{MANIFEST, check_components, discover};

use crate::EXIT_SETUP;
use crate::output::{fatal, line};

/// `warren inspect PLUGIN`.
pub async fn inspect(plugin: &Path) -> u8 {
    let manifest = if plugin.is_dir() {
        plugin.join(MANIFEST)
    } else {
        plugin.to_owned()
    };
    let host = match WasmHost::new() {
        Ok(h) => h,
        Err(e) => {
            fatal(&e.to_string());
            return EXIT_SETUP;
        }
    };
    match host.load(&manifest).await {
        Ok(p) => {
            let m = &p.manifest.agent;
            let subs: Vec<String> = p
                .manifest
                .subscriptions()
                .iter()
                .map(|s| s.to_string())
                .collect();
            // How the host calls its instances (see `LoadedPlugin::is_synchronous`).
            let calls = if p.is_synchronous() {
                "synchronous (imports nothing that waits)"
            } else {
                "on a fiber (imports send, publish or files)"
            };
            line(
                "plugin",
                json!({
                    "manifest": p.manifest_path.display().to_string(),
                    "agent_type": m.agent_type,
                    "description": m.description,
                    "component": p.component_path.display().to_string(),
                    "component_description": p.component_description,
                    "subscriptions": subs,
                    "handles": p.handles,
                    "imports": p.imports,
                    "exports": p.exports,
                    "calls": calls,
                    "agents_per_instance": p.manifest.agents_per_instance(),
                }),
                format!(
                    "plugin      {}\nagent type  {}\ndescription {}\ncomponent   {}\nsubscribes  {}\nhandles     {}\ncalls       {}\ninstances   {}\nimports     {}\nexports     {}",
                    p.manifest_path.display(),
                    m.agent_type,
                    if m.description.is_empty() {
                        &p.component_description
                    } else {
                        &m.description
                    },
                    p.component_path.display(),
                    if subs.is_empty() {
                        "-".to_owned()
                    } else {
                        subs.join(", ")
                    },
                    p.handles.join(", "),
                    calls,
                    match p.manifest.agents_per_instance() {
                        1 => "one per agent".to_owned(),
                        n => format!("shared, up to {n} agents each"),
                    },
                    p.imports.join("\n            "),
                    p.exports.join("\n            "),
                ),
            );
            0
        }
        Err(e) => {
            fatal(&e.to_string());
            EXIT_SETUP
        }
    }
}

/// `warren validate DIR...`: every manifest, every component, every load-time check; all
/// problems reported, none run.
pub async fn validate(dirs: &[PathBuf]) -> u8 {
    let found = match discover(dirs) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                fatal(&e.to_string());
            }
            return EXIT_SETUP;
        }
    };
    let mut bad = 0;
    for e in check_components(&found) {
        fatal(&e.to_string());
        bad += 1;
    }
    let host = match WasmHost::new() {
        Ok(h) => h,
        Err(e) => {
            fatal(&e.to_string());
            return EXIT_SETUP;
        }
    };
    for p in found.iter().filter(|p| p.component_path.exists()) {
        match host
            .load_with_component(p.manifest.clone(), &p.manifest_path, &p.component_path)
            .await
        {
            Ok(loaded) => line(
                "valid",
                json!({ "plugin": loaded.manifest.agent.agent_type, "manifest": p.manifest_path.display().to_string() }),
                format!(
                    "ok   {} ({})",
                    loaded.manifest.agent.agent_type,
                    p.manifest_path.display()
                ),
            ),
            Err(e) => {
                fatal(&e.to_string());
                bad += 1;
            }
        }
    }
    if bad == 0 { 0 } else { EXIT_SETUP }
}
