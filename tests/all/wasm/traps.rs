//! A trap ends one instance, not the runtime: the caller gets a typed error naming the agent and
//! the trap, the instance is discarded, the next message re-creates it from its last saved state,
//! and other agents keep working throughout.

use serde::{Deserialize, Serialize};
use warren_runtime::{AgentId, Error};

use super::{guests, runtime_with};
use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[derive(Debug, Serialize, Deserialize)]
struct Inc {
    by: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Count {
    value: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Panic {
    message: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct Abort {}
#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    i: i64,
}

fn faulty_manifest() -> (&'static str, &'static str) {
    ("faulty", guests::FAULTY)
}

#[tokio::test]
async fn a_panic_is_a_typed_trap_and_the_instance_restarts_from_its_saved_state() {
    let rt = runtime_with(&[faulty_manifest(), ("echo", guests::ECHO)]).await;
    rt.start().unwrap();
    let f = id("faulty/1");
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 5 }, &f))
            .await
            .unwrap()
            .value,
        5
    );
    let saved = within(rt.agent_save_state(&f)).await.unwrap();
    assert_eq!(saved.to_value()["value"], 5);
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 1 }, &f))
            .await
            .unwrap()
            .value,
        6
    );

    let e = within(rt.send::<()>(
        Panic {
            message: "boom".into(),
        },
        &f,
    ))
    .await
    .unwrap_err();
    match &e {
        Error::Trapped { agent, trap } => {
            assert_eq!(agent, &f);
            assert!(
                trap.contains("boom"),
                "the guest's panic message is in the report: {trap}"
            );
        }
        other => panic!("expected Trapped, got {other}"),
    }
    // Other agents are unaffected, before and after.
    assert_eq!(
        within(rt.send::<Pong>(Ping { i: 3 }, &id("echo/k")))
            .await
            .unwrap()
            .i,
        3
    );
    // A fresh instance, restored from the last saved state (5), not the lost live state (6).
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 1 }, &f))
            .await
            .unwrap()
            .value,
        6
    );
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 1 }, &f))
            .await
            .unwrap()
            .value,
        7
    );
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn an_abort_without_saved_state_restarts_fresh_and_other_keys_keep_theirs() {
    let rt = runtime_with(&[faulty_manifest()]).await;
    rt.start().unwrap();
    within(rt.send::<Count>(Inc { by: 10 }, &id("faulty/a")))
        .await
        .unwrap();
    within(rt.send::<Count>(Inc { by: 20 }, &id("faulty/b")))
        .await
        .unwrap();
    let e = within(rt.send::<()>(Abort {}, &id("faulty/a")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Trapped { ref trap, .. } if trap.contains("unreachable")),
        "{e}"
    );
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 1 }, &id("faulty/a")))
            .await
            .unwrap()
            .value,
        1
    );
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 1 }, &id("faulty/b")))
            .await
            .unwrap()
            .value,
        21
    );
}

#[tokio::test]
async fn a_trap_during_a_publish_is_reported_and_does_not_stop_the_others() {
    let rt = warren_runtime::AgentRuntime::builder()
        .ignore_unhandled_exceptions(false)
        .build();
    for (name, c) in [faulty_manifest(), ("echo", guests::ECHO)] {
        let p = super::load(name, c).await.unwrap();
        super::host().register(&rt, &p).await.unwrap();
    }
    for t in ["faulty", "echo"] {
        let t = warren_runtime::AgentType::new(t).unwrap();
        rt.add_subscription(warren_runtime::Subscription::type_subscription("boom", t))
            .await
            .unwrap();
    }
    rt.start().unwrap();
    let e = warren_runtime::Message::new(Panic {
        message: "in an event".into(),
    });
    rt.publish_message(e, "boom/s".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let e = within(rt.stop_when_idle()).await.unwrap_err();
    assert!(
        matches!(e, Error::Trapped { ref agent, ref trap } if agent.to_string() == "faulty/s" && trap.contains("in an event")),
        "{e}"
    );
    // The echo subscriber got the message, and both agents serve the next one.
    rt.start().unwrap();
    assert_eq!(
        within(rt.send::<Pong>(Ping { i: 1 }, &id("echo/s")))
            .await
            .unwrap()
            .i,
        1
    );
    assert_eq!(
        within(rt.send::<Count>(Inc { by: 2 }, &id("faulty/s")))
            .await
            .unwrap()
            .value,
        2
    );
    within(rt.stop_when_idle()).await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Peek {
    address: u32,
}

#[tokio::test]
async fn a_read_past_the_end_of_memory_traps_with_guard_regions_and_with_explicit_checks() {
    use warren_runtime::{HostConfig, MemoryChecks, WasmHost};
    let cache = std::path::Path::new(guests::ROOT)
        .join("target")
        .join("test-compile-cache");
    // A small pool fits the process's guard-region budget: no bounds checks in compiled code.
    let guarded = WasmHost::with_config(HostConfig {
        max_instances: 16,
        cache_dir: Some(cache.clone()),
        ..HostConfig::default()
    })
    .unwrap();
    assert!(guarded.uses_guard_regions());
    let explicit = WasmHost::with_config(HostConfig {
        memory_checks: MemoryChecks::Explicit,
        max_instances: 16,
        cache_dir: Some(cache.clone()),
        ..HostConfig::default()
    })
    .unwrap();
    assert!(!explicit.uses_guard_regions());
    // A pool too large for 4 GiB per memory gets explicit checks without being asked.
    let large = WasmHost::with_config(HostConfig {
        max_instances: 20_000,
        max_memory: 16 << 20,
        cache_dir: None,
        ..HostConfig::default()
    })
    .unwrap();
    assert!(large.is_pooling() && !large.uses_guard_regions());
    for host in [guarded, explicit] {
        let rt = warren_runtime::AgentRuntime::new();
        let p = super::load_on(&host, "faulty", guests::FAULTY)
            .await
            .unwrap();
        host.register(&rt, &p).await.unwrap();
        rt.start().unwrap();
        let f = id("faulty/peek");
        within(rt.send::<Count>(Inc { by: 5 }, &f)).await.unwrap();
        // Inside the memory (the guest's own stack): read.
        within(rt.send::<Count>(Peek { address: 1024 }, &f))
            .await
            .unwrap();
        // Just past the memory's end, and at the top of the 32-bit address space: trapped.
        for address in [17 << 20, u32::MAX - 8] {
            let e = within(rt.send::<Count>(Peek { address }, &f))
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::Trapped { ref trap, .. } if trap.contains("out of bounds")),
                "guard regions {}: {e}",
                host.uses_guard_regions()
            );
        }
        // The agent is served again, by a fresh instance.
        assert_eq!(
            within(rt.send::<Count>(Inc { by: 1 }, &f))
                .await
                .unwrap()
                .value,
            1
        );
    }
}
