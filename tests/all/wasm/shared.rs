//! Shared instances (`agent.agents_per_instance`): several agents of one type in one component
//! instance, each in its own slot. Each keeps its own state and identity; a trap resets the
//! agents of the trapping instance (to their last saved state), and no others; state saves and
//! loads per agent; a component whose calls can wait is refused.

use std::path::Path;

use warren_runtime::{
    AgentId, AgentRuntime, Error, LoadedPlugin, Manifest, PluginError, SavedState,
};

use super::local_messages::*;
use super::{guests, host, manifest_path};
use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

/// Loads fixture or plugin `name` with `agents_per_instance` set.
async fn load_shared(
    name: &str,
    component: &str,
    per_instance: u32,
) -> Result<LoadedPlugin, PluginError> {
    let path = manifest_path(name);
    let mut m = Manifest::load(&path).map_err(PluginError::Manifest)?;
    m.agent.agents_per_instance = Some(per_instance);
    host()
        .load_with_component(m, &path, Path::new(component))
        .await
}

async fn local_runtime(plugin: &LoadedPlugin) -> AgentRuntime {
    let rt = AgentRuntime::new();
    host().register(&rt, plugin).await.unwrap();
    rt.start().unwrap();
    rt
}

async fn add(rt: &AgentRuntime, agent: &str, n: i64) -> i64 {
    within(rt.send::<Total>(Add { n }, &id(agent)))
        .await
        .unwrap_or_else(|e| panic!("{agent}: {e}"))
        .n
}

/// Makes `agent` print `line` (stdout and stderr) and panic with "boom"; returns the trap report, after
/// checking the error is `Trapped` and names `agent`.
async fn crash(rt: &AgentRuntime, agent: &str, line: &str) -> String {
    let e = within(rt.send::<()>(
        Crash {
            line: line.into(),
            message: "boom".into(),
        },
        &id(agent),
    ))
    .await
    .unwrap_err();
    match e {
        Error::Trapped { agent: a, trap } => {
            assert_eq!(a, id(agent));
            trap
        }
        other => panic!("expected Trapped, got {other}"),
    }
}

#[tokio::test]
async fn agents_in_one_instance_keep_their_own_state_and_a_trap_resets_only_that_instance() {
    let plugin = load_shared("local", guests::LOCAL, 3).await.unwrap();
    let rt = local_runtime(&plugin).await;
    // Seven agents in creation order: instances {a0, a1, a2}, {a3, a4, a5}, {a6}.
    let names: Vec<String> = (0..7).map(|i| format!("local/a{i}")).collect();
    for (i, a) in names.iter().enumerate() {
        assert_eq!(add(&rt, a, 10 * (i as i64 + 1)).await, 10 * (i as i64 + 1));
    }
    for (i, a) in names.iter().enumerate() {
        assert_eq!(
            add(&rt, a, 0).await,
            10 * (i as i64 + 1),
            "{a} kept its own total"
        );
        let me: Iam = within(rt.send(WhoAmI {}, &id(a))).await.unwrap();
        let key = format!("a{i}");
        assert_eq!((me.key.as_str(), me.created_as.as_str()), (&*key, &*key));
    }

    // a0 saves (10), then moves on (11); a1 traps.
    let saved = within(rt.agent_save_state(&id("local/a0"))).await.unwrap();
    assert_eq!(saved.to_value()["total"], 10);
    assert_eq!(add(&rt, "local/a0", 1).await, 11);
    let trap = crash(&rt, "local/a1", "going down").await;
    assert!(trap.contains("boom"), "{trap}");
    // The trapping instance's agents: a0 back to its saved state, a1 and a2 (never saved) fresh,
    // and a fresh agent knows who it is again.
    assert_eq!(add(&rt, "local/a0", 0).await, 10);
    assert_eq!(add(&rt, "local/a1", 0).await, 0);
    assert_eq!(add(&rt, "local/a2", 0).await, 0);
    let me: Iam = within(rt.send(WhoAmI {}, &id("local/a2"))).await.unwrap();
    assert_eq!(me.created_as, "a2");
    // The other instances lost nothing.
    for (i, a) in names.iter().enumerate().skip(3) {
        assert_eq!(add(&rt, a, 0).await, 10 * (i as i64 + 1));
    }

    // A time limit breached in a shared instance is reported for the agent that looped, and
    // resets its neighbours (a3, a5) but not the agents of other instances.
    let e = within(rt.send::<()>(Loop {}, &id("local/a4")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::DeadlineExceeded { agent, .. } if agent == &id("local/a4")),
        "{e}"
    );
    assert_eq!(add(&rt, "local/a3", 0).await, 0);
    assert_eq!(add(&rt, "local/a5", 0).await, 0);
    assert_eq!(add(&rt, "local/a6", 0).await, 70);
    assert_eq!(add(&rt, "local/a0", 0).await, 10);
    within(rt.stop_when_idle()).await.unwrap();
}

/// Whether an event of the guest `agent` carries `text`.
fn logged(cap: &Capture, agent: &str, text: &str) -> bool {
    let tag = format!("agent={agent} ");
    cap.events
        .lock()
        .iter()
        .any(|e| e.text.contains(&tag) && e.text.contains(text))
}

#[tokio::test]
async fn a_shared_instance_tags_output_with_the_agent_that_wrote_it_and_a_trap_quotes_only_its_own()
{
    let cap = Capture::default();
    let _guard = cap.install();
    let plugin = load_shared("local", guests::LOCAL, 3).await.unwrap();
    let rt = local_runtime(&plugin).await;
    let say = |agent: &'static str, text: &str| {
        let rt = rt.clone();
        let text = text.to_owned();
        async move {
            within(rt.send::<()>(Say { text }, &id(agent)))
                .await
                .unwrap_or_else(|e| panic!("{agent}: {e}"))
        }
    };
    say("local/a0", "first from a0\n").await;
    say("local/a1", "first from a1\n").await;
    // An unfinished line stays a0's when a1 writes next.
    say("local/a0", "a0 unfinished").await;
    say("local/a1", "second from a1\n").await;
    say("local/a2", "a2 is here\n").await;
    for (agent, text) in [
        ("local/a0", "first from a0"),
        ("local/a1", "first from a1"),
        ("local/a0", "a0 unfinished"),
        ("local/a1", "second from a1"),
        ("local/a2", "a2 is here"),
    ] {
        assert!(logged(&cap, agent, text), "{text:?} tagged {agent}");
    }
    assert!(!logged(&cap, "local/a1", "a0 unfinished"));
    assert!(!logged(&cap, "local/a0", "from a1"));

    // a2 traps: the report quotes a2's stderr, none of what a0 and a1 wrote before it.
    let trap = crash(&rt, "local/a2", "a2 going down").await;
    assert!(
        trap.contains("a2 going down") && trap.contains("boom"),
        "{trap}"
    );
    assert!(
        !trap.contains("from a1") && !trap.contains("a0 unfinished"),
        "{trap}"
    );
    // The fresh instance tags its output too.
    say("local/a1", "a1 after the trap\n").await;
    assert!(logged(&cap, "local/a1", "a1 after the trap"));
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn shared_agents_save_and_load_their_own_state_across_runtimes() {
    let plugin = load_shared("local", guests::LOCAL, 4).await.unwrap();
    let a = local_runtime(&plugin).await;
    for i in 0..10 {
        add(&a, &format!("local/k{i}"), 3 * i + 1).await;
    }
    let doc = within(a.save_state()).await.unwrap();
    let v = doc.to_value();
    for i in 0..10 {
        assert_eq!(v[format!("local/k{i}")]["total"], 3 * i + 1, "{v}");
    }
    let text = serde_json::to_string(&doc).unwrap();
    // Another registration of the same plugin, in a fresh runtime: its agents are created by
    // the load, into instances of their own registration.
    let b = local_runtime(&plugin).await;
    within(b.load_state(serde_json::from_str::<SavedState>(&text).unwrap()))
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(add(&b, &format!("local/k{i}"), 0).await, 3 * i + 1);
    }
    let me: Iam = within(b.send(WhoAmI {}, &id("local/k7"))).await.unwrap();
    assert_eq!(me.key, "k7");
    // Runtime A is untouched by B.
    assert_eq!(add(&a, "local/k9", 1).await, 29);
    within(a.stop_when_idle()).await.unwrap();
    within(b.stop_when_idle()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_one_instance_called_from_several_threads_at_once_lose_nothing() {
    let plugin = load_shared("local", guests::LOCAL, 4).await.unwrap();
    let rt = local_runtime(&plugin).await;
    // 8 agents in two instances, 50 additions each, all in flight at once from two threads.
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..50 {
        for k in 0..8 {
            let rt = rt.clone();
            calls.spawn(async move {
                let agent = format!("local/t{k}");
                rt.send::<Total>(Add { n: 1 }, &id(&agent))
                    .await
                    .unwrap_or_else(|e| panic!("{agent} round {round}: {e}"))
            });
        }
    }
    within(async {
        while let Some(r) = calls.join_next().await {
            r.unwrap();
        }
    })
    .await;
    for k in 0..8 {
        assert_eq!(add(&rt, &format!("local/t{k}"), 0).await, 50);
    }
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn a_component_that_can_wait_cannot_share_instances() {
    let e = load_shared("faulty", guests::FAULTY, 2).await.unwrap_err();
    match &e {
        PluginError::CannotShareInstances {
            plugin,
            agents_per_instance,
            reason,
        } => {
            assert_eq!((plugin.as_str(), *agents_per_instance), ("faulty", 2));
            assert!(reason.contains("send"), "{reason}");
        }
        other => panic!("expected CannotShareInstances, got {other}"),
    }
    assert!(e.to_string().contains("agents_per_instance"), "{e}");
    // One per instance is what every plugin can do.
    load_shared("faulty", guests::FAULTY, 1).await.unwrap();
}
