//! Hostile plugins (issue #4). Every attack runs in a `hostile` tenant while a `good` tenant runs a
//! steady workload on the same host. For every case the attacker gets a typed error (or its plugin
//! is refused at load), the good tenant completes with every message accounted for, and the
//! process stays within its memory bound.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_runtime::{
    AgentId, AgentRuntime, BoxError, Ceilings, Error, Manifest, MessageContext, PluginError,
    RoutedAgent, Routes, Target, Tenant, TenantConfig, TopicId,
};

use crate::common::*;
use crate::wasm::{guests, host, manifest_path};

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

/// The hostile tenant's settings: tight, so attacks hit the limits quickly.
fn hostile_config() -> TenantConfig {
    let mut c = TenantConfig::new("hostile");
    c.ceilings = Ceilings {
        memory: 32 << 20,
        time: Duration::from_millis(500),
        message_bytes: 64 << 10,
        instances_per_type: 40,
        instances: 50,
        allow_filesystem: false,
    };
    c.mailbox_capacity = 64;
    c.max_queued = 500;
    c.ignore_unhandled_exceptions = true;
    c
}

async fn install(t: &Tenant, name: &str, component: &str) -> Result<(), PluginError> {
    let path = manifest_path(name);
    let m = Manifest::load(&path).map_err(PluginError::Manifest)?;
    let p = t
        .load_with_component(m, &path, Path::new(component))
        .await?;
    t.register(&p).await.map(|_| ())
}

async fn hostile() -> Tenant {
    let t = host().tenant(hostile_config());
    install(&t, "faulty", guests::FAULTY).await.unwrap();
    install(&t, "echo", guests::ECHO).await.unwrap();
    install(&t, "relay", guests::RELAY).await.unwrap();
    t.runtime().start().unwrap();
    t
}

#[derive(Debug, Serialize, Deserialize)]
struct Inc {
    by: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct News {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct GetState {}
#[derive(Debug, Serialize, Deserialize)]
struct StateView {
    counter: i64,
    note: String,
}

/// A well-behaved tenant running a steady workload: 300 sends and 100 publishes to counters, every
/// one accounted for at the end.
async fn good_workload() {
    let t = host().tenant(TenantConfig::new("good"));
    install(&t, "counter", guests::COUNTER).await.unwrap();
    let rt = t.runtime().clone();
    rt.start().unwrap();
    for i in 0..300 {
        let p: Pong = within(rt.send(Inc { by: 1 }, &id("counter/good")))
            .await
            .unwrap();
        assert!(p.i > i, "lost a message: {} after {} sends", p.i, i + 1);
        if i % 3 == 0 {
            rt.publish(News { i }, &TopicId::new("news", "good").unwrap())
                .await
                .unwrap();
        }
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    within(rt.stop_when_idle()).await.unwrap();
    rt.start().unwrap();
    let v: StateView = within(rt.send(GetState {}, &id("counter/good")))
        .await
        .unwrap();
    assert_eq!(v.counter, 400, "300 sends + 100 publishes");
}

fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Runs `attack` in the hostile tenant while the good tenant works; both must finish, and the
/// process must stay under 1.5 GiB resident (the attacks would take far more unchecked).
async fn under_attack<F, Fut>(attack: F)
where
    F: FnOnce(Tenant) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let t = hostile().await;
    let attacker = tokio::spawn(attack(t));
    let good = tokio::spawn(good_workload());
    tokio::time::timeout(Duration::from_secs(60), async {
        attacker.await.expect("attack assertions");
        good.await.expect("good tenant assertions");
    })
    .await
    .expect("attack and workload finished");
    let rss = rss_mb();
    assert!(rss < 1536, "process RSS {rss} MiB");
}

#[derive(Debug, Serialize, Deserialize)]
struct Spin {}
#[derive(Debug, Serialize, Deserialize)]
struct Hog {
    megabytes: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Recurse {
    depth: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Panic {
    message: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct Big {
    bytes: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Blob {
    data: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct Count {
    value: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Flood {
    to: String,
    count: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Storm {
    generation: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Reach {
    to: String,
}

/// Has the faulty agent `from` ping `to` and returns the answer's number.
async fn reach(rt: &AgentRuntime, from: &str, to: &str) -> Result<i64, Error> {
    let p: Pong = rt.send(Reach { to: to.into() }, &id(from)).await?;
    Ok(p.i)
}
#[derive(Debug, Serialize, Deserialize)]
struct Shout {
    topic_type: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct Forward {
    path: Vec<String>,
}
#[derive(Debug, Serialize, Deserialize)]
struct Forge {
    handle: u32,
}
#[derive(Debug, Serialize, Deserialize)]
struct Garble {
    to: String,
    data: Vec<u8>,
}
#[derive(Debug, Serialize, Deserialize)]
struct Hoard {
    count: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Keep {
    count: u64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Stash {
    to: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct Unstash {}
#[derive(Debug, Serialize, Deserialize)]
struct Churn {
    to: String,
    count: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_interrupted_at_its_deadline() {
    under_attack(|t| async move {
        let started = std::time::Instant::now();
        let e = t
            .runtime()
            .send::<()>(Spin {}, &id("faulty/a"))
            .await
            .unwrap_err();
        match e {
            Error::DeadlineExceeded { agent, limit } => {
                assert_eq!(agent, id("faulty/a"));
                assert_eq!(limit, Duration::from_millis(500));
            }
            other => panic!("expected DeadlineExceeded, got {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "interrupted, not awaited"
        );
        // The agent serves again (a fresh instance).
        let c: Count = t
            .runtime()
            .send(Inc { by: 1 }, &id("faulty/a"))
            .await
            .unwrap();
        assert_eq!(c.value, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    under_attack(|t| async move {
        let e = t
            .runtime()
            .send::<Count>(Hog { megabytes: 4096 }, &id("faulty/m"))
            .await
            .unwrap_err();
        match e {
            Error::LimitExceeded {
                agent,
                limit,
                value,
            } => {
                assert_eq!((agent, limit), (id("faulty/m"), "memory"));
                assert!(value.contains("32 MiB"), "{value}");
            }
            other => panic!("expected a memory limit, got {other}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_on_stack_exhaustion() {
    under_attack(|t| async move {
        let e = t
            .runtime()
            .send::<Count>(Recurse { depth: 100_000_000 }, &id("faulty/r"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Trapped { ref trap, .. } if trap.contains("call stack exhausted")),
            "{e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_typed_trap() {
    under_attack(|t| async move {
        let e = t
            .runtime()
            .send::<()>(
                Panic {
                    message: "hostile".into(),
                },
                &id("faulty/p"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Trapped { ref trap, .. } if trap.contains("hostile")),
            "{e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_the_limit_is_refused() {
    under_attack(|t| async move {
        let e = t
            .runtime()
            .send::<Blob>(Big { bytes: 1 << 20 }, &id("faulty/b"))
            .await
            .unwrap_err();
        match e {
            Error::MessageTooLarge { size, limit, .. } => {
                assert!(size > limit && limit == 64 << 10, "{size} {limit}");
            }
            other => panic!("expected MessageTooLarge, got {other}"),
        }
        // A message too large for the recipient is refused before it reaches the guest.
        let huge = Blob {
            data: "y".repeat(100 << 10),
        };
        let e = t
            .runtime()
            .send::<Blob>(huge, &id("echo/x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::MessageTooLarge { .. }), "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_flood_is_cut_off_by_the_deadline() {
    under_attack(|t| async move {
        let flood = Flood {
            to: "echo/victim".into(),
            count: u64::MAX,
        };
        let e = t
            .runtime()
            .send::<Count>(flood, &id("faulty/f"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DeadlineExceeded { .. }), "{e}");
        // The flooded agent is fine.
        let p: Pong = t
            .runtime()
            .send(Inc { by: 0 }, &id("faulty/f"))
            .await
            .map(|c: Count| Pong { i: c.value })
            .unwrap();
        assert_eq!(p.i, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_storm_is_bounded_by_the_tenants_quotas() {
    under_attack(|t| async move {
        let rt = t.runtime().clone();
        rt.publish(
            Storm { generation: 0 },
            &TopicId::new("storm", "s").unwrap(),
        )
        .await
        .unwrap();
        // The storm spreads to fresh agents until the instance quota stops it; then it dies out.
        within(rt.stop_when_idle()).await.unwrap();
        assert_eq!(
            t.live_instances(),
            40,
            "the per-type ceiling of 40 live faulty agents holds"
        );
        assert!(rt.live_agents() <= 50);
        assert_eq!(rt.unprocessed_messages_count(), 0);
        // A new agent id past the quota is refused with a typed limit error.
        rt.start().unwrap();
        let e = rt
            .send::<Count>(Inc { by: 1 }, &id("faulty/one-too-many"))
            .await
            .unwrap_err();
        match e {
            Error::LimitExceeded {
                agent,
                limit,
                value,
            } => {
                assert_eq!((agent, limit), (id("faulty/one-too-many"), "instances"));
                assert!(value.contains("40"), "{value}");
            }
            other => panic!("expected an instance limit, got {other}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_cycles_are_refused_not_deadlocked() {
    under_attack(|t| async move {
        let rt = t.runtime();
        let e = rt
            .send::<String>(
                Forward {
                    path: vec!["hop/a".into()],
                },
                &id("hop/a"),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("call cycle"), "{e}");
        let path = vec!["hop/b".into(), "hop/a".into()];
        let e = rt
            .send::<String>(Forward { path }, &id("hop/a"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("call cycle"), "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_deny_sends_and_publishes_outside_the_manifest() {
    under_attack(|t| async move {
        let rt = t.runtime();
        // `faulty` may send to echo and faulty only, publish to storm only.
        let e = reach(rt, "faulty/c", "hop/1").await.unwrap_err();
        assert!(
            e.to_string().contains("access-denied") && e.to_string().contains("capabilities.send"),
            "{e}"
        );
        let e = rt
            .send::<()>(
                Shout {
                    topic_type: "alerts".into(),
                },
                &id("faulty/c"),
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("access-denied")
                && e.to_string().contains("capabilities.publish"),
            "{e}"
        );
        // Allowed ones work.
        assert_eq!(reach(rt, "faulty/c", "echo/1").await.unwrap(), 1);
    })
    .await;
}

/// Message data that is not what its content type says (MessagePack here: broken, cut short, with
/// data after the value, nested past the limit) is a typed decoding error for the sender, naming
/// the type and the content type, whether a native or a wasm agent was to read it; both go on
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_data_is_a_typed_error_for_native_and_wasm_recipients() {
    #[derive(Debug, Serialize, Deserialize)]
    struct Ping {
        i: i64,
    }
    struct Native;
    impl RoutedAgent for Native {
        fn routes(r: &mut Routes<Self>) {
            r.rpc_sync(|_: &mut Native, m: &Ping, _: &MessageContext| {
                Ok::<_, BoxError>(Pong { i: m.i + 1 })
            });
        }
    }
    under_attack(|t| async move {
        let rt = t.runtime();
        rt.register_routed("native", |_| Native).await.unwrap();
        let garble = |to: &str, data: Vec<u8>| {
            let to = to.to_owned();
            async move {
                let b: Blob = rt.send(Garble { to, data }, &id("faulty/g")).await.unwrap();
                b.data
            }
        };
        // `{"i": 5}`, and ways to break it.
        let good = vec![0x81, 0xa1, b'i', 0x05];
        let bad = [
            vec![0xc1],
            good[..3].to_vec(),
            [good.clone(), vec![0x00]].concat(),
            [vec![0x91; 200], vec![0x00]].concat(),
        ];
        for to in ["native/x", "echo/1"] {
            for data in bad.clone() {
                let r = garble(to, data.clone()).await;
                let named = match to {
                    "native/x" => r.contains("`Ping`") && r.contains("application/msgpack"),
                    _ => r.contains("cannot decode `Ping`"),
                };
                assert!(r.starts_with("Err(") && named, "{to} {data:?}: {r}");
            }
            assert_eq!(garble(to, good.clone()).await, "Ok(())", "{to}");
        }
        assert_eq!(reach(rt, "faulty/g", "native/y").await.unwrap(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_handles_cannot_be_forged_or_hoarded() {
    under_attack(|t| async move {
        let rt = t.runtime();
        // A handle the instance was never given names no agent.
        let e = rt
            .send::<()>(Forge { handle: 7 }, &id("faulty/h"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("recipient handle 7 was not given to this instance"),
            "{e}"
        );
        // Resolving stops at the per-instance limit with an error that says so; an id already
        // resolved keeps its handle.
        let b: Blob = rt
            .send(Hoard { count: 1000 }, &id("faulty/h"))
            .await
            .unwrap();
        assert!(
            b.data.starts_with("resolved 256, distinct 256, then Some(")
                && b.data
                    .contains("holds 256 recipient handles, the most it may")
                && b.data.ends_with("echo/k0 again: Ok(0) (first Some(0))"),
            "{}",
            b.data
        );
        // The instance keeps sending, by id now, to an agent it has no handle for.
        assert_eq!(reach(rt, "faulty/h", "echo/late").await.unwrap(), 1);
    })
    .await;
}

/// Responses a guest holds in the host (`send-to-held`) are bounded per instance and last one
/// `handle` call: a plugin that holds them and never lets go cannot grow the host's memory, and
/// one that keeps a held reply past its call gets a typed error, not some later response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_responses_are_bounded_and_last_one_call() {
    under_attack(|t| async move {
        let rt = t.runtime();
        let b: Blob = rt
            .send(Keep { count: 1000 }, &id("faulty/k"))
            .await
            .unwrap();
        assert!(
            b.data.starts_with("held 256, then Some(\"Error::Other(")
                && b.data
                    .contains("this instance holds 256 responses, the most it may")
                && b.data.contains("; first reads Some(Ok(")
                && b.data.ends_with("; earlier None"),
            "{}",
            b.data
        );
        // That call returned, so all 256 were released: there is room again, and the first of
        // them can no longer be read.
        let b: Blob = rt.send(Keep { count: 3 }, &id("faulty/k")).await.unwrap();
        assert!(
            b.data
                .starts_with("held 3, then None; first reads Some(Ok(")
                && b.data.contains("earlier Some(Err(")
                && b.data.contains("is not held by this instance"),
            "{}",
            b.data
        );
        // A reply kept in the agent past its call is refused when answered with later, as a
        // failure of that agent's handler; the agent keeps working.
        let c: Count = rt
            .send(
                Stash {
                    to: "echo/s".into(),
                },
                &id("faulty/s"),
            )
            .await
            .unwrap();
        assert_eq!(c.value, 1);
        let e = rt
            .send::<Pong>(Unstash {}, &id("faulty/s"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::HandlerFailed { ref agent, .. } if *agent == id("faulty/s"))
                && e.to_string().contains("is not held by this instance"),
            "{e}"
        );
        let c: Count = rt.send(Inc { by: 2 }, &id("faulty/s")).await.unwrap();
        assert_eq!(c.value, 2);
        // The SDK reads a held reply through the host and releases it when the reply is dropped:
        // a handler can take more replies in one call than an instance may hold at once.
        let c: Count = rt
            .send(
                Churn {
                    to: "echo/c".into(),
                    count: 300,
                },
                &id("faulty/c"),
            )
            .await
            .unwrap();
        assert_eq!(c.value, (0..300).sum::<i64>());
    })
    .await;
}

/// A relay answering with a response it holds (`send_raw`) is held to its plugin's size limit as
/// if it had made that answer itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_on_response_larger_than_the_limit_is_refused() {
    struct Big;
    impl RoutedAgent for Big {
        fn routes(r: &mut Routes<Self>) {
            r.rpc(|_: &mut Big, _: &Forward, _: &MessageContext| {
                Box::pin(async { Ok::<_, BoxError>("z".repeat(100 << 10)) })
            });
        }
    }
    under_attack(|t| async move {
        let rt = t.runtime();
        rt.register_routed("big", |_| Big).await.unwrap();
        let forward = |to: &str| Forward {
            path: vec![to.to_string()],
        };
        let e = rt
            .send::<String>(forward("big/x"), &id("hop/r"))
            .await
            .unwrap_err();
        match e {
            Error::MessageTooLarge {
                target: Target::Agent(ref agent),
                size,
                limit,
            } => {
                assert_eq!(*agent, id("hop/r"), "{e}");
                assert!(size > 100 << 10 && limit == 64 << 10, "{e}");
            }
            other => panic!("expected MessageTooLarge, got {other}"),
        }
        // Within the limit it passes.
        let r: String = rt.send(forward("hop/s"), &id("hop/r")).await.unwrap();
        assert_eq!(r, "answered by hop/s");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_each_other() {
    let good = host().tenant(TenantConfig::new("neighbour"));
    install(&good, "counter", guests::COUNTER).await.unwrap();
    good.runtime().start().unwrap();
    let _: Pong = within(good.runtime().send(Inc { by: 5 }, &id("counter/secret")))
        .await
        .unwrap();
    let bad = hostile().await;
    // Guessing the neighbour's type and key does not reach it: the type does not exist here.
    let e = within(bad.runtime().send::<String>(
        Forward {
            path: vec!["counter/secret".into()],
        },
        &id("hop/x"),
    ))
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("unknown agent type `counter`"),
        "{e}"
    );
    // A publish on the neighbour's topic goes nowhere near it.
    bad.runtime()
        .publish(News { i: 1 }, &TopicId::new("news", "secret").unwrap())
        .await
        .unwrap();
    within(bad.runtime().stop_when_idle()).await.unwrap();
    within(good.runtime().stop_when_idle()).await.unwrap();
    let state = within(good.runtime().save_state()).await.unwrap();
    assert_eq!(
        state.get("counter/secret").unwrap().to_value()["counter"],
        5,
        "untouched by the publish"
    );
    let theirs = within(bad.runtime().save_state()).await.unwrap();
    assert!(
        theirs.keys().all(|k| !k.starts_with("counter/")),
        "{theirs:?}"
    );
    // A plugin loaded for one tenant cannot be registered in another.
    let path = manifest_path("echo");
    let m = Manifest::load(&path).unwrap();
    let p = good
        .load_with_component(m, &path, Path::new(guests::ECHO))
        .await
        .unwrap();
    let e = bad.register(&p).await.unwrap_err();
    assert!(e.to_string().contains("another tenant"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_refused_at_load_in_a_tenant() {
    under_attack(|t| async move {
        let scratch = Path::new(guests::ROOT).join("target").join("test-scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let junk = scratch.join("hostile-junk.wasm");
        std::fs::write(&junk, b"MZ\x90\x00 definitely not wasm").unwrap();
        let text = "[agent]\ntype = \"evil\"\ncomponent = \"evil.wasm\"\n";
        let mpath = scratch.join("hostile.toml");
        std::fs::write(&mpath, text).unwrap();
        let load = |c: &'static str| {
            let t = t.clone();
            let mpath = mpath.clone();
            async move {
                let m = Manifest::load(&mpath).unwrap();
                t.load_with_component(m, &mpath, Path::new(c))
                    .await
                    .unwrap_err()
            }
        };
        let junk: &'static str = Box::leak(junk.display().to_string().into_boxed_str());
        assert!(matches!(
            load(junk).await,
            PluginError::NotAComponent { .. }
        ));
        assert!(matches!(
            load(guests::COMMAND).await,
            PluginError::WrongWorld { .. }
        ));
        assert!(matches!(
            load(guests::FS_READER).await,
            PluginError::ImportNotGranted { .. }
        ));
        assert_eq!(t.runtime().agent_types().len(), 3, "nothing was registered");
    })
    .await;
}

#[tokio::test]
async fn a_component_importing_sockets_is_refused_at_load() {
    let t = host().tenant(hostile_config());
    let path = manifest_path("faulty");
    let m = Manifest::load(&path).unwrap();
    let e = t
        .load_with_component(m, &path, Path::new(guests::NET_CLIENT))
        .await
        .unwrap_err();
    match &e {
        PluginError::ImportNotGranted { import, why, .. } => {
            assert!(import.contains("wasi:sockets/"), "{import}");
            assert!(why.contains("no network"), "{why}");
        }
        other => panic!("expected ImportNotGranted, got {other}"),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ReadFile {
    path: String,
}

#[tokio::test]
async fn a_filesystem_grant_opens_one_directory_read_only_and_nothing_else() {
    // Allowed by the manifest's [capabilities.filesystem], on a tenant that permits it.
    let mut config = TenantConfig::new("files");
    config.ceilings.allow_filesystem = true;
    let t = host().tenant(config);
    let path = manifest_path("fs-reader");
    let m = Manifest::load(&path).unwrap();
    let p = t
        .load_with_component(m, &path, Path::new(guests::FS_READER))
        .await
        .unwrap();
    t.register(&p).await.unwrap();
    let rt = t.runtime();
    rt.start().unwrap();
    let text: String = within(rt.send(
        ReadFile {
            path: "/data/hello.txt".into(),
        },
        &id("reader/1"),
    ))
    .await
    .unwrap();
    assert_eq!(text.trim(), "granted content");
    // Outside the grant there is nothing: not the host's files, not a parent directory.
    for outside in ["/etc/passwd", "/data/../Cargo.toml", "Cargo.toml"] {
        let e = within(rt.send::<String>(
            ReadFile {
                path: outside.into(),
            },
            &id("reader/1"),
        ))
        .await
        .unwrap_err();
        assert!(matches!(e, Error::HandlerFailed { .. }), "{outside}: {e}");
    }
    // A tenant that does not permit filesystem grants refuses the plugin at load.
    let strict = host().tenant(TenantConfig::new("strict"));
    let m = Manifest::load(&path).unwrap();
    let e = strict
        .load_with_component(m, &path, Path::new(guests::FS_READER))
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::ImportNotGranted { .. }), "{e}");
}

#[tokio::test]
async fn fuel_metering_stops_a_guest_deterministically() {
    use warren_runtime::{HostConfig, WasmHost};
    let cache = Path::new(guests::ROOT)
        .join("target")
        .join("test-compile-cache");
    let host = WasmHost::with_config(HostConfig {
        fuel: true,
        cache_dir: Some(cache),
        ..HostConfig::default()
    })
    .unwrap();
    let path = manifest_path("faulty");
    let mut m = Manifest::load(&path).unwrap();
    m.limits.fuel = Some(5_000_000);
    m.limits.time_ms = Some(60_000);
    let p = host
        .load_with_component(m, &path, Path::new(guests::FAULTY))
        .await
        .unwrap();
    let rt = warren_runtime::AgentRuntime::new();
    host.register(&rt, &p).await.unwrap();
    rt.start().unwrap();
    // Small work fits in the budget; an endless loop runs out of fuel (not of time).
    let c: Count = within(rt.send(Inc { by: 2 }, &id("faulty/fuel")))
        .await
        .unwrap();
    assert_eq!(c.value, 2);
    let e = within(rt.send::<()>(Spin {}, &id("faulty/fuel")))
        .await
        .unwrap_err();
    match e {
        Error::LimitExceeded {
            agent,
            limit,
            value,
        } => {
            assert_eq!((agent, limit), (id("faulty/fuel"), "fuel"));
            assert!(value.contains("5000000"), "{value}");
        }
        other => panic!("expected a fuel limit, got {other}"),
    }
    // A host without fuel metering refuses a manifest that asks for it, naming the key.
    let mut m = Manifest::load(&path).unwrap();
    m.limits.fuel = Some(1);
    let e = crate::wasm::host()
        .load_with_component(m, &path, Path::new(guests::FAULTY))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("limits.fuel"), "{e}");
}
