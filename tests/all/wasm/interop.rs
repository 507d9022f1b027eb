//! Wasm and native agents are interchangeable: they register through the same runtime, exchange
//! messages both ways, appear in `save_state`, and get the same typed errors.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use warren_runtime::{
    AgentId, AgentRuntime, AgentType, BoxError, Error, MessageContext, RoutedAgent, Routes,
    SavedState, Subscription,
};

use super::{guests, host, load, runtime_with};
use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Ping {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Pong {
    i: i64,
}

#[tokio::test]
async fn declared_message_types_cross_by_index_and_others_by_name() {
    // echo declares what its typed handlers take and answer with; `handle` passes those types
    // as indices into this table, anything else (the fallback's) by name.
    let echo = load("echo", guests::ECHO).await.unwrap();
    assert_eq!(
        echo.declared_types()
            .iter()
            .map(|t| &**t)
            .collect::<Vec<_>>(),
        [
            "Ping",
            "Pong",
            "Touch",
            "Touched",
            "ContextProbe",
            "ContextView"
        ]
    );
    let rt = AgentRuntime::new();
    host().register(&rt, &echo).await.unwrap();
    rt.start().unwrap();
    // Declared both ways (Ping in, Pong out); undeclared both ways (the fallback's echo).
    let pong: Pong = within(rt.send(Ping { i: 7 }, &id("echo/k"))).await.unwrap();
    assert_eq!(pong, Pong { i: 7 });
    let back: Pong = within(rt.send(Pong { i: 8 }, &id("echo/k"))).await.unwrap();
    assert_eq!(
        back,
        Pong { i: 8 },
        "a declared type the agent only answers with"
    );
    let text: String = within(rt.send("text".to_owned(), &id("echo/k")))
        .await
        .unwrap();
    assert_eq!(text, "text");
    // Data inline (at most 32 bytes of JSON: 30 characters and quotes) and as a list, both ways.
    for n in [30, 31, 5000] {
        let s = "x".repeat(n);
        let back: String = within(rt.send(s.clone(), &id("echo/k"))).await.unwrap();
        assert_eq!(back, s);
    }
}

#[tokio::test]
async fn native_caller_gets_typed_answers_from_a_wasm_agent() {
    let rt = runtime_with(&[("echo", guests::ECHO)]).await;
    rt.start().unwrap();
    let pong: Pong = within(rt.send(Ping { i: 41 }, &id("echo/k")))
        .await
        .unwrap();
    assert_eq!(pong, Pong { i: 41 });
    // The fallback handler echoes any other type unchanged.
    let back: MessageType = within(rt.send(MessageType::new("hi"), &id("echo/k")))
        .await
        .unwrap();
    assert_eq!(back.text, "hi");
    let md = within(rt.agent_metadata(&id("echo/k"))).await.unwrap();
    assert_eq!(md.description, "Echoes every message back to its sender");
    within(rt.stop_when_idle()).await.unwrap();
}

/// The native twin of the `relay` plugin's `Forward` handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forward {
    path: Vec<String>,
}

struct NativeRelay;
impl RoutedAgent for NativeRelay {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|_: &mut NativeRelay, m: &Forward, ctx: &MessageContext| {
            Box::pin(async move {
                let Some((next, rest)) = m.path.split_first() else {
                    return Ok::<_, BoxError>(format!("answered by {}", ctx.agent_id()));
                };
                Ok(ctx
                    .send::<String>(
                        Forward {
                            path: rest.to_vec(),
                        },
                        &next.parse()?,
                    )
                    .await?)
            })
        });
    }
}

async fn mixed() -> AgentRuntime {
    let rt = runtime_with(&[("relay", guests::RELAY)]).await;
    rt.register_routed("native", |_| NativeRelay).await.unwrap();
    rt.start().unwrap();
    rt
}

fn path(p: &[&str]) -> Forward {
    Forward {
        path: p.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn messages_flow_both_ways_between_wasm_and_native() {
    let rt = mixed().await;
    // native -> wasm -> native -> wasm -> wasm, answered at the end.
    let r: String = within(rt.send(
        path(&["hop/a", "native/b", "hop/c", "hop/d"]),
        &id("native/start"),
    ))
    .await
    .unwrap();
    assert_eq!(r, "answered by hop/d");
    let r: String = within(rt.send(path(&["native/x"]), &id("hop/y")))
        .await
        .unwrap();
    assert_eq!(r, "answered by native/x");
    within(rt.stop_when_idle()).await.unwrap();
}

fn chain_in(e: &Error) -> Vec<String> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(Error::CallCycle { chain }) = cur.downcast_ref::<Error>() {
            return chain.iter().map(|a| a.to_string()).collect();
        }
        match std::error::Error::source(cur) {
            Some(s) => cur = s,
            None => panic!("no call cycle in: {e}"),
        }
    }
}

/// Relays pass their next hop's answer on as it came (`send_raw`: the host holds it, the relay
/// answers with it): a long answer from a native agent arrives intact through two of them.
#[tokio::test]
async fn relays_pass_long_native_answers_on_intact() {
    struct Long;
    impl RoutedAgent for Long {
        fn routes(r: &mut Routes<Self>) {
            r.rpc(|_: &mut Long, _: &Forward, ctx: &MessageContext| {
                let text = format!("{} {}", ctx.agent_id(), "é-\"".repeat(5000));
                Box::pin(async move { Ok::<_, BoxError>(text) })
            });
        }
    }
    let rt = mixed().await;
    rt.register_routed("long", |_| Long).await.unwrap();
    let r: String = within(rt.send(path(&["hop/b", "long/x"]), &id("hop/a")))
        .await
        .unwrap();
    assert_eq!(r, format!("long/x {}", "é-\"".repeat(5000)));
    // Short answers, from wasm and native agents, as before.
    let r: String = within(rt.send(path(&["hop/b", "native/c"]), &id("hop/a")))
        .await
        .unwrap();
    assert_eq!(r, "answered by native/c");
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn call_cycles_through_wasm_agents_are_typed_errors() {
    let rt = mixed().await;
    // wasm -> wasm (self)
    let e = within(rt.send::<String>(path(&["hop/a"]), &id("hop/a")))
        .await
        .unwrap_err();
    assert_eq!(chain_in(&e), ["hop/a", "hop/a"], "{e}");
    // wasm -> native -> wasm
    let e = within(rt.send::<String>(path(&["native/n", "hop/a"]), &id("hop/a")))
        .await
        .unwrap_err();
    assert_eq!(chain_in(&e), ["hop/a", "native/n", "hop/a"], "{e}");
    // The instances are healthy afterwards: no trap, no stuck mailbox.
    let r: String = within(rt.send(path(&["native/n", "hop/b"]), &id("hop/a")))
        .await
        .unwrap();
    assert_eq!(r, "answered by hop/b");
    within(rt.stop_when_idle()).await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct HopReq {
    i: i64,
    hops: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct HopResp {
    i: i64,
    hops: i64,
}

#[tokio::test]
async fn ten_hop_chain_of_wasm_agents() {
    let rt = runtime_with(&[("relay", guests::RELAY)]).await;
    rt.start().unwrap();
    for i in 0..20 {
        let r: HopResp = within(rt.send(HopReq { i, hops: 0 }, &id("hop/0")))
            .await
            .unwrap();
        assert_eq!((r.i, r.hops), (i, 10));
    }
    assert_eq!(rt.live_agents(), 10);
    within(rt.stop_when_idle()).await.unwrap();
}

/// Agents that send to each other keep each other's handles (`resolve`); dropping their runtime
/// still frees both (a handle does not keep its agent alive).
#[tokio::test]
async fn agents_that_resolved_each_other_are_freed_with_their_runtime() {
    let relay = load("relay", guests::RELAY).await.unwrap();
    let rt = AgentRuntime::new();
    host().register(&rt, &relay).await.unwrap();
    rt.start().unwrap();
    // hop/a sends to hop/b, which sends back to hop/a: a call cycle, refused once each of the
    // two has resolved the other.
    let e = within(rt.send::<String>(path(&["hop/b", "hop/a"]), &id("hop/a")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("call cycle"), "{e}");
    assert_eq!(relay.live_agents(), 2);
    within(rt.stop_when_idle()).await.unwrap();
    drop(rt);
    assert_eq!(
        relay.live_agents(),
        0,
        "both were dropped with their runtime"
    );
}

/// A relay derives whom it forwards to from its id (`init`, into a field that is not state): a
/// relay restored from saved state must forward as before, not answer as the chain's end.
#[tokio::test]
async fn a_restored_wasm_agent_is_initialised_for_its_id() {
    let a = runtime_with(&[("relay", guests::RELAY)]).await;
    a.start().unwrap();
    let r: HopResp = within(a.send(HopReq { i: 1, hops: 0 }, &id("hop/7")))
        .await
        .unwrap();
    assert_eq!(r.hops, 3, "hop/7 -> hop/8 -> hop/9");
    let text = serde_json::to_string(&within(a.save_state()).await.unwrap()).unwrap();
    let b = runtime_with(&[("relay", guests::RELAY)]).await;
    within(b.load_state(serde_json::from_str::<SavedState>(&text).unwrap()))
        .await
        .unwrap();
    b.start().unwrap();
    let r: HopResp = within(b.send(HopReq { i: 2, hops: 0 }, &id("hop/7")))
        .await
        .unwrap();
    assert_eq!((r.i, r.hops), (2, 3), "the restored hop/7 still forwards");
    within(b.stop_when_idle()).await.unwrap();

    // And initialising a restored agent keeps its state: the counter sets its note in `init`
    // only while it is unset.
    let c = runtime_with(&[("counter", guests::COUNTER)]).await;
    let doc = json!({ "counter/y": { "counter": 3, "note": "kept" } });
    within(c.load_state(serde_json::from_value::<SavedState>(doc).unwrap()))
        .await
        .unwrap();
    c.start().unwrap();
    let v: StateView = within(c.send(GetState {}, &id("counter/y"))).await.unwrap();
    assert_eq!(
        v,
        StateView {
            counter: 3,
            note: "kept".into()
        }
    );
    within(c.stop_when_idle()).await.unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Inc {
    by: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct GetState {}
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct StateView {
    counter: i64,
    note: String,
}

#[tokio::test]
async fn wasm_state_survives_save_and_load_across_runtimes() {
    let a = runtime_with(&[("counter", guests::COUNTER)]).await;
    a.register_routed("native", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    a.start().unwrap();
    within(a.send::<Pong>(Inc { by: 5 }, &id("counter/x")))
        .await
        .unwrap();
    within(a.send::<Pong>(Inc { by: 2 }, &id("counter/x")))
        .await
        .unwrap();
    within(a.send::<MessageType>(MessageType::new("n"), &id("native/k")))
        .await
        .unwrap();
    let doc = within(a.save_state()).await.unwrap();
    let note = format!("note-x{}", ".".repeat(58));
    // Wasm and native agents side by side, in AutoGen's document shape.
    assert_eq!(
        doc.to_value(),
        json!({ "counter/x": { "counter": 7, "note": note }, "native/k": {} })
    );
    let text = serde_json::to_string(&doc).unwrap();
    let b = runtime_with(&[("counter", guests::COUNTER)]).await;
    b.register_routed("native", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    within(b.load_state(serde_json::from_str::<SavedState>(&text).unwrap()))
        .await
        .unwrap();
    b.start().unwrap();
    let v: StateView = within(b.send(GetState {}, &id("counter/x"))).await.unwrap();
    assert_eq!(v, StateView { counter: 7, note });
    within(b.stop_when_idle()).await.unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkRequest {
    work_id: String,
    data: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkResponse {
    work_id: String,
    result: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProgressEvent {
    work_id: String,
    progress: f64,
}

/// A native monitor, to watch the wasm worker's events next to the wasm monitor.
struct NativeMonitor(Arc<Mutex<Vec<f64>>>);
impl RoutedAgent for NativeMonitor {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|a: &mut NativeMonitor, m: &ProgressEvent, _| {
            a.0.lock().push(m.progress);
            Ok::<_, BoxError>(())
        });
    }
}

#[tokio::test]
async fn complete_example_with_wasm_worker_and_monitor() {
    let cap = Capture::default();
    let _g = cap.install();
    let rt = runtime_with(&[("worker", guests::WORKER), ("monitor", guests::MONITOR)]).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    rt.register_routed("native-monitor", move |_| NativeMonitor(s.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription(
        "progress",
        AgentType::new("native-monitor").unwrap(),
    ))
    .await
    .unwrap();
    rt.start().unwrap();
    let request = WorkRequest {
        work_id: "task-1".into(),
        data: "sample data".into(),
    };
    let r: WorkResponse = within(rt.send(request, &id("worker/default")))
        .await
        .unwrap();
    assert_eq!(r.result, "Processed: sample data");
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(*seen.lock(), [0.25, 0.5, 0.75, 1.0]);
    for pct in ["25.0", "50.0", "75.0", "100.0"] {
        let line = format!("Progress: task-1 - {pct}%");
        assert!(
            cap.has_event(tracing::Level::INFO, &line),
            "monitor did not log {line}"
        );
    }
    // The wasm monitor kept the events in its state.
    let state = within(rt.agent_save_state(&id("monitor/task-1")))
        .await
        .unwrap();
    assert_eq!(
        state.to_value()["progress_log"].as_array().map(|a| a.len()),
        Some(4)
    );
}

#[tokio::test]
async fn plugin_logs_are_tagged_with_the_agent_id() {
    let cap = Capture::default();
    let _g = cap.install();
    let rt = runtime_with(&[("worker", guests::WORKER)]).await;
    rt.start().unwrap();
    let request = WorkRequest {
        work_id: "w9".into(),
        data: "d".into(),
    };
    within(rt.send::<WorkResponse>(request, &id("worker/default")))
        .await
        .unwrap();
    assert!(cap.has_event(tracing::Level::INFO, "agent=worker/default"));
    assert!(cap.has_event(tracing::Level::INFO, "processed w9"));
}

#[derive(Debug, Serialize, Deserialize)]
struct Reach {
    to: String,
}

/// A send outside the plugin's capabilities is refused and logged once: the guest SDK first
/// tries to resolve the recipient, and that refusal is not logged (nothing was sent).
#[tokio::test]
async fn a_refused_send_is_logged_once() {
    let cap = Capture::default();
    let _g = cap.install();
    let rt = runtime_with(&[("faulty", guests::FAULTY)]).await;
    rt.start().unwrap();
    let e = within(rt.send::<String>(Reach { to: "hop/1".into() }, &id("faulty/c")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("capabilities.send"), "{e}");
    assert_eq!(
        cap.count(tracing::Level::WARN, "capability check refused a call"),
        1
    );
}

#[tokio::test]
async fn compiled_components_are_cached() {
    let first = load("echo", guests::ECHO).await.unwrap();
    let second = load("echo", guests::ECHO).await.unwrap();
    // The first load in this test binary may or may not have compiled; the second never does.
    let _ = first.from_cache;
    assert!(second.from_cache, "second load compiled again");
    assert!(
        second.handles.contains(&"Ping".to_owned()),
        "{:?}",
        second.handles
    );
    assert!(
        second
            .imports
            .iter()
            .any(|i| i.starts_with("warren:agent/host")),
        "{:?}",
        second.imports
    );
    assert!(
        second
            .exports
            .iter()
            .any(|e| e.starts_with("warren:agent/agent")),
        "{:?}",
        second.exports
    );
}

#[tokio::test]
async fn registration_errors_are_typed() {
    let rt = runtime_with(&[("echo", guests::ECHO)]).await;
    let again = load("echo", guests::ECHO).await.unwrap();
    let e = host().register(&rt, &again).await.unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    // A native type cannot take a plugin's name either.
    let e = rt.register_routed("echo", |_| Noop).await.unwrap_err();
    assert!(matches!(e, Error::AgentTypeExists { .. }), "{e}");
}

#[tokio::test]
async fn the_host_falls_back_to_on_demand_allocation_when_the_pool_cannot_be_reserved() {
    use warren_runtime::{Allocation, HostConfig, WasmHost};
    // A pool of a billion 1 TiB memories cannot be reserved on any machine.
    let impossible = HostConfig {
        max_instances: 1_000_000_000,
        max_memory: 1 << 40,
        cache_dir: None,
        ..HostConfig::default()
    };
    let e = WasmHost::with_config(HostConfig {
        allocation: Allocation::Pooling,
        ..impossible.clone()
    })
    .unwrap_err();
    assert!(e.to_string().starts_with("wasm host:"), "{e}");
    let host = WasmHost::with_config(HostConfig {
        allocation: Allocation::Auto,
        ..impossible
    })
    .unwrap();
    assert!(
        !host.is_pooling(),
        "Auto falls back to on-demand allocation"
    );
    // And the fallback host runs agents.
    let p = super::load_on(&host, "echo", guests::ECHO).await.unwrap();
    let rt = AgentRuntime::new();
    host.register(&rt, &p).await.unwrap();
    rt.start().unwrap();
    let pong: Pong = within(rt.send(Ping { i: 9 }, &id("echo/fallback")))
        .await
        .unwrap();
    assert_eq!(pong.i, 9);
    assert!(
        super::host().is_pooling(),
        "the shared test host uses the pool"
    );
}

/// A `News` (the counter plugin's message) that counts how often it is encoded.
mod counted {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::ser::{Serialize, SerializeStruct, Serializer};

    pub struct News {
        pub i: i64,
        pub encoded: &'static AtomicUsize,
    }

    impl Serialize for News {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.encoded.fetch_add(1, Ordering::SeqCst);
            let mut st = s.serialize_struct("News", 1)?;
            st.serialize_field("i", &self.i)?;
            st.end()
        }
    }
}

#[tokio::test]
async fn a_native_message_published_to_several_wasm_agents_is_encoded_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static ENCODED: AtomicUsize = AtomicUsize::new(0);
    let rt = AgentRuntime::new();
    let counter = load("counter", guests::COUNTER).await.unwrap();
    for t in ["c0", "c1", "c2"] {
        let t = AgentType::new(t).unwrap();
        host()
            .register_as(
                &rt,
                &counter,
                t.clone(),
                vec![Subscription::type_subscription("news", t)],
            )
            .await
            .unwrap();
    }
    rt.start().unwrap();
    for i in 0..2 {
        let news = counted::News {
            i,
            encoded: &ENCODED,
        };
        within(rt.publish(news, &"news/s".parse().unwrap()))
            .await
            .unwrap();
    }
    within(rt.stop_when_idle()).await.unwrap();
    for t in ["c0", "c1", "c2"] {
        let s = within(rt.agent_save_state(&id(&format!("{t}/s"))))
            .await
            .unwrap();
        assert_eq!(s.to_value()["counter"], 2, "{t}");
    }
    // Two publishes to three wasm agents: two encodings, not six.
    assert_eq!(ENCODED.load(Ordering::SeqCst), 2);
}
