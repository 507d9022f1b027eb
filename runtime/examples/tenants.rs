//! Two tenants on one host, one of them hostile: `cargo run -p warren-runtime --example tenants`.
//!
//! The `good` tenant runs the `counter` plugin; the `hostile` tenant runs a plugin that loops
//! forever, bombs its memory and tries to reach the other tenant. Each attack ends in a typed
//! error for the attacker while the good tenant's counter counts every message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_runtime::{AgentId, Ceilings, Manifest, Tenant, TenantConfig, WasmHost};

#[derive(Debug, Serialize, Deserialize)]
struct Inc {
    by: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Count {
    value: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Spin {}
#[derive(Debug, Serialize, Deserialize)]
struct Hog {
    megabytes: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Reach {
    to: String,
}

/// Builds the two guests this example needs (the tests build them the same way).
fn build_guests(root: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let target = root.join("target").join("guests");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--target", "wasm32-wasip2", "--profile", "guest"])
            .args([
                "-p",
                "warren-plugin-counter",
                "-p",
                "warren-fixture-faulty",
                "--target-dir",
            ])
            .arg(&target)
            .status()?;
    if !status.success() {
        return Err("building the guests failed".into());
    }
    Ok(target.join("wasm32-wasip2").join("guest"))
}

async fn install(
    t: &Tenant,
    manifest: &Path,
    component: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let m = Manifest::load(manifest).map_err(|e| format!("{e:?}"))?;
    let p = t.load_with_component(m, manifest, component).await?;
    t.register(&p).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = build_guests(&root)?;
    let host = WasmHost::new()?;

    let good = host.tenant(TenantConfig::new("good"));
    install(
        &good,
        &root.join("plugins/counter/plugin.toml"),
        &built.join("warren_plugin_counter.wasm"),
    )
    .await?;
    let mut hostile_config = TenantConfig::new("hostile");
    hostile_config.ceilings = Ceilings {
        memory: 16 << 20,
        time: Duration::from_millis(200),
        ..hostile_config.ceilings
    };
    let hostile = host.tenant(hostile_config);
    install(
        &hostile,
        &root.join("tests/fixtures/faulty/plugin.toml"),
        &built.join("warren_fixture_faulty.wasm"),
    )
    .await?;
    good.runtime().start()?;
    hostile.runtime().start()?;

    let good_rt = good.runtime().clone();
    let steady = tokio::spawn(async move {
        let counter = AgentId::new("counter", "steady").expect("valid id");
        let mut last = 0;
        for _ in 0..1000 {
            last = good_rt
                .send::<Pong>(Inc { by: 1 }, &counter)
                .await
                .expect("good tenant")
                .i;
        }
        last
    });

    let attacker = AgentId::new("faulty", "mallory")?;
    let r = hostile.runtime();
    println!(
        "[hostile] infinite loop   -> {}",
        r.send::<()>(Spin {}, &attacker).await.unwrap_err()
    );
    println!(
        "[hostile] memory bomb     -> {}",
        r.send::<()>(Hog { megabytes: 1024 }, &attacker)
            .await
            .unwrap_err()
    );
    println!(
        "[hostile] reach the other -> {}",
        r.send::<Pong>(
            Reach {
                to: "counter/steady".into()
            },
            &attacker
        )
        .await
        .unwrap_err()
    );
    println!(
        "[hostile] still serving   -> Inc answered {}",
        r.send::<Count>(Inc { by: 1 }, &attacker)
            .await
            .map(|c| c.value)
            .unwrap_or(-1)
    );
    println!("[good]    1000 increments -> counter = {}", steady.await?);
    Ok(())
}
