//! Warren's deliberate departures from AutoGen (issue #2, point 5), each proven here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use warren_core::{
    AgentId, AgentRuntime, AgentType, BoxError, Error, MessageContext, RoutedAgent, Routes,
    Subscription, TopicId,
};

use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

/// `Forward(target)`: send the request on to `target` and return its answer; an empty target
/// answers directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forward {
    path: Vec<String>,
}

struct Relay;
impl RoutedAgent for Relay {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|_: &mut Relay, m: &Forward, ctx: &MessageContext| {
            Box::pin(async move {
                let Some((next, rest)) = m.path.split_first() else {
                    return Ok::<_, BoxError>(format!("answered by {}", ctx.agent_id()));
                };
                let r: String = ctx
                    .send(
                        Forward {
                            path: rest.to_vec(),
                        },
                        &next.parse()?,
                    )
                    .await?;
                Ok(r)
            })
        });
    }
}

async fn relays() -> AgentRuntime {
    let rt = AgentRuntime::new();
    rt.register_routed("a", |_| Relay).await.unwrap();
    rt.register_routed("b", |_| Relay).await.unwrap();
    rt.start().unwrap();
    rt
}

fn cycle_of(e: &Error) -> Vec<String> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(Error::CallCycle { chain }) = cur.downcast_ref::<Error>() {
            return chain.iter().map(|a| a.to_string()).collect();
        }
        cur = std::error::Error::source(cur).unwrap_or_else(|| panic!("no call cycle in: {e}"));
    }
}

#[tokio::test]
async fn a_b_a_cycle_fails_at_once_naming_the_chain() {
    let rt = relays().await;
    let req = Forward {
        path: vec!["b/1".into(), "a/1".into()],
    };
    let e = within(rt.send::<String>(req, &id("a/1")))
        .await
        .unwrap_err();
    assert_eq!(cycle_of(&e), ["a/1", "b/1", "a/1"], "{e}");
    // Other keys of the same types are not on the chain: no cycle.
    let ok: String = within(rt.send(
        Forward {
            path: vec!["b/1".into(), "a/2".into()],
        },
        &id("a/1"),
    ))
    .await
    .unwrap();
    assert_eq!(ok, "answered by a/2");
    // Nothing is left waiting: the agents are healthy and the runtime goes idle.
    within(rt.stop_when_idle()).await.unwrap();
}

/// A longer cycle names every agent on it, in call order: the ones between the send that closes it
/// and the agent it returns to as well as the two ends. The wait-for graph keeps an entry for every
/// agent that has sent from a handler; one that waits for nobody any more neither makes a cycle
/// nor hides one.
#[tokio::test]
async fn a_long_cycle_names_every_agent_on_it() {
    let rt = relays().await;
    // Agents that sent before and wait for nobody now.
    for k in 0..20 {
        let to = format!("b/x{k}");
        let r: String = within(rt.send(Forward { path: vec![to] }, &id(&format!("a/x{k}"))))
            .await
            .unwrap();
        assert_eq!(r, format!("answered by b/x{k}"));
    }
    let path = |p: &[&str]| Forward {
        path: p.iter().map(|s| s.to_string()).collect(),
    };
    let e = within(rt.send::<String>(path(&["b/1", "a/2", "b/2", "a/1"]), &id("a/1")))
        .await
        .unwrap_err();
    assert_eq!(cycle_of(&e), ["a/1", "b/1", "a/2", "b/2", "a/1"], "{e}");
    // The same agents in a chain that does not come back: no cycle.
    let ok: String = within(rt.send(path(&["b/1", "a/2", "b/2", "a/3"]), &id("a/1")))
        .await
        .unwrap();
    assert_eq!(ok, "answered by a/3");
    within(rt.stop_when_idle()).await.unwrap();
}

/// Holds until `release` fires, then sends to `peer`: used to make two independent call chains
/// wait on each other.
struct Crosser {
    started: Arc<AtomicUsize>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CrossTo(String);
impl RoutedAgent for Crosser {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut Crosser, m: &CrossTo, ctx: &MessageContext| {
            Box::pin(async move {
                a.started.fetch_add(1, Ordering::SeqCst);
                while a.started.load(Ordering::SeqCst) < 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let r: Result<String, Error> =
                    ctx.send(Forward { path: vec![] }, &m.0.parse()?).await;
                Ok::<_, BoxError>(match r {
                    Ok(s) => s,
                    Err(e) => format!("refused: {e}"),
                })
            })
        });
        r.rpc_sync(|_: &mut Crosser, _m: &Forward, _| Ok::<_, BoxError>("served".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_waiting_on_each_other_are_refused_not_deadlocked() {
    let rt = AgentRuntime::new();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    rt.register_routed("x", move |_| Crosser { started: s.clone() })
        .await
        .unwrap();
    rt.start().unwrap();
    let (r1, r2) = (rt.clone(), rt.clone());
    let one =
        tokio::spawn(async move { r1.send::<String>(CrossTo("x/2".into()), &id("x/1")).await });
    let two =
        tokio::spawn(async move { r2.send::<String>(CrossTo("x/1".into()), &id("x/2")).await });
    let (a, b) = (
        within(one).await.unwrap().unwrap(),
        within(two).await.unwrap().unwrap(),
    );
    // Whichever send came second closes the cycle and is refused; the first one is then served.
    let refused = [&a, &b]
        .iter()
        .filter(|s| s.starts_with("refused: call cycle"))
        .count();
    let served = [&a, &b].iter().filter(|s| s.as_str() == "served").count();
    assert_eq!((refused, served), (1, 1), "{a} / {b}");
}

/// An agent that drives another runtime from its handler: `Forward` goes to the first agent of
/// its path in that runtime (as an outside caller), `SaveIn` saves an agent's state there.
struct Bridge {
    to: AgentRuntime,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SaveIn(String);
impl RoutedAgent for Bridge {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|me: &mut Bridge, m: &Forward, _: &MessageContext| {
            let to = me.to.clone();
            Box::pin(async move {
                let (first, rest) = m.path.split_first().ok_or("empty path")?;
                let r: String = to
                    .send(
                        Forward {
                            path: rest.to_vec(),
                        },
                        &first.parse()?,
                    )
                    .await?;
                Ok::<_, BoxError>(r)
            })
        });
        r.rpc(|me: &mut Bridge, m: &SaveIn, _: &MessageContext| {
            let to = me.to.clone();
            Box::pin(async move {
                to.agent_save_state(&m.0.parse()?).await?;
                Ok::<_, BoxError>("saved".to_owned())
            })
        });
    }
}

#[tokio::test]
async fn a_handler_using_another_runtime_is_not_taken_for_an_agent_of_it() {
    // Runtime B has agents `a/1` and `b/1`; runtime A has its own `a/1`, which calls into B.
    let b = relays().await;
    let a = AgentRuntime::new();
    let to = b.clone();
    a.register_routed("a", move |_| Bridge { to: to.clone() })
        .await
        .unwrap();
    a.start().unwrap();
    // A's a/1 asks B's b/1, which asks B's a/1: nobody waits for B's a/1, so this is no cycle
    // (B once recorded the outside call as A's a/1 waiting, and refused it as a/1 -> b/1 -> a/1).
    let r: String = within(a.send(
        Forward {
            path: vec!["b/1".into(), "a/1".into()],
        },
        &id("a/1"),
    ))
    .await
    .unwrap();
    assert_eq!(r, "answered by a/1");
    // And B's a/1 may be saved from A's a/1's handler: it is not asking for itself.
    let r: String = within(a.send(SaveIn("a/1".into()), &id("a/1")))
        .await
        .unwrap();
    assert_eq!(r, "saved");
    within(a.stop_when_idle()).await.unwrap();
    within(b.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn chains_longer_than_the_inline_depth_still_complete() {
    let rt = relays().await;
    // 200 hops alternating a/i and b/i: far beyond the inline limit, no stack growth.
    let path: Vec<String> = (1..200)
        .map(|i| format!("{}/{i}", if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    let r: String = within(rt.send(Forward { path }, &id("a/0"))).await.unwrap();
    assert_eq!(r, "answered by b/199");
}

struct Panicker(usize);
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Explode(bool);
impl RoutedAgent for Panicker {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|a: &mut Panicker, m: &Explode, _| {
            a.0 += 1;
            if m.0 {
                panic!("kaboom");
            }
            Ok::<_, BoxError>(a.0)
        });
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_typed_error_and_the_agent_keeps_serving() {
    let rt = AgentRuntime::new();
    rt.register_routed("p", |_| Panicker(0)).await.unwrap();
    rt.start().unwrap();
    let e = within(rt.send::<usize>(Explode(true), &id("p/k")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::HandlerPanicked { ref panic, .. } if panic == "kaboom"),
        "{e}"
    );
    assert_eq!(
        within(rt.send::<usize>(Explode(false), &id("p/k")))
            .await
            .unwrap(),
        2
    );
}

struct Sleeper(Arc<Mutex<Vec<String>>>);
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap(u64, String);
impl RoutedAgent for Sleeper {
    fn routes(r: &mut Routes<Self>) {
        r.message(|a: &mut Sleeper, m: &Nap, ctx: &MessageContext| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(m.0)).await;
                a.0.lock().push(format!("{} {}", ctx.agent_id(), m.1));
                Ok::<_, BoxError>(())
            })
        });
    }
}

#[tokio::test]
async fn fifo_per_agent_and_different_agents_run_concurrently() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("s", move |_| Sleeper(l.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let mut calls = Vec::new();
    for (agent, ms, tag) in [
        ("s/a", 80, "a1"),
        ("s/a", 1, "a2"),
        ("s/a", 1, "a3"),
        ("s/b", 20, "b1"),
    ] {
        let rt = rt.clone();
        calls.push(tokio::spawn(async move {
            rt.send::<()>(Nap(ms, tag.into()), &id(agent)).await
        }));
        tokio::task::yield_now().await;
    }
    for c in calls {
        within(c).await.unwrap().unwrap();
    }
    // a's messages in arrival order despite a1 being slowest; b overtook a1, so they overlapped.
    assert_eq!(*log.lock(), ["s/b b1", "s/a a1", "s/a a2", "s/a a3"]);
}

#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_cut_the_handler_off() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("s", move |_| Sleeper(l.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    // The caller gives up after 5 ms (its own timeout, not a cancellation token).
    let r = tokio::time::timeout(
        Duration::from_millis(5),
        rt.send::<()>(Nap(50, "x".into()), &id("s/k")),
    )
    .await;
    assert!(r.is_err());
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(*log.lock(), ["s/k x"], "the handler ran to completion");
    // The agent was released and serves the next message.
    rt.start().unwrap();
    within(rt.send::<()>(Nap(0, "y".into()), &id("s/k")))
        .await
        .unwrap();
}

#[tokio::test]
async fn stop_fails_queued_mailbox_messages_and_nobody_waits_forever() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("s", move |_| Sleeper(l.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let mut calls = Vec::new();
    for tag in ["first", "second", "third"] {
        let rt = rt.clone();
        calls.push(tokio::spawn(async move {
            rt.send::<()>(Nap(30, tag.into()), &id("s/k")).await
        }));
        tokio::task::yield_now().await;
    }
    rt.add_subscription(Subscription::type_subscription(
        "naps",
        AgentType::new("s").unwrap(),
    ))
    .await
    .unwrap();
    for tag in ["published 1", "published 2"] {
        rt.publish(Nap(0, tag.into()), &TopicId::new("naps", "k").unwrap())
            .await
            .unwrap();
    }
    assert_eq!(
        rt.unprocessed_messages_count(),
        4,
        "first runs; two sends and two publishes wait in the mailbox"
    );
    rt.stop().await.unwrap();
    let results: Vec<_> = futures_results(calls).await;
    assert!(
        results[0].is_ok(),
        "the running handler finishes and answers"
    );
    for r in &results[1..] {
        assert!(matches!(r, Err(Error::Stopped { .. })), "{r:?}");
    }
    assert_eq!(rt.unprocessed_messages_count(), 0);
    assert_eq!(
        *log.lock(),
        ["s/k first"],
        "the discarded sends and publishes never ran"
    );
}

async fn futures_results(
    calls: Vec<tokio::task::JoinHandle<Result<(), Error>>>,
) -> Vec<Result<(), Error>> {
    let mut out = Vec::new();
    for c in calls {
        out.push(within(c).await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_failing_recipient_does_not_stop_the_others() {
    let rt = AgentRuntime::builder()
        .ignore_unhandled_exceptions(false)
        .build();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("good", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    // An instance-only type whose key does not exist: routing to it fails.
    rt.register_routed_instance(Noop, id("broken/only"))
        .await
        .unwrap();
    for t in ["broken", "good"] {
        rt.add_subscription(Subscription::type_subscription(
            "t",
            AgentType::new(t).unwrap(),
        ))
        .await
        .unwrap();
    }
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &TopicId::new("t", "s").unwrap())
        .await
        .unwrap();
    let e = within(rt.stop_when_idle()).await.unwrap_err();
    assert!(matches!(e, Error::UnknownAgent { .. }), "{e}");
    assert_eq!(
        calls.get(),
        1,
        "AutoGen delivers to nobody when one recipient cannot be built"
    );
}

#[tokio::test]
async fn a_full_mailbox_refuses_at_once_instead_of_growing() {
    let rt = AgentRuntime::builder().mailbox_capacity(2).build();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("s", move |_| Sleeper(l.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let mut calls = Vec::new();
    for tag in ["running", "queued1", "queued2"] {
        let rt = rt.clone();
        calls.push(tokio::spawn(async move {
            rt.send::<()>(Nap(50, tag.into()), &id("s/k")).await
        }));
        tokio::task::yield_now().await;
    }
    let e = within(rt.send::<()>(Nap(0, "refused".into()), &id("s/k")))
        .await
        .unwrap_err();
    match &e {
        Error::LimitExceeded {
            agent,
            limit,
            value,
        } => {
            assert_eq!((agent.to_string().as_str(), *limit), ("s/k", "mailbox"));
            assert!(value.contains('2'), "{value}");
        }
        other => panic!("expected a mailbox limit, got {other}"),
    }
    for c in futures_results(calls).await {
        c.unwrap();
    }
    assert_eq!(*log.lock(), ["s/k running", "s/k queued1", "s/k queued2"]);
    // Another agent of the same type is unaffected, and the full one recovers.
    within(rt.send::<()>(Nap(0, "other".into()), &id("s/other")))
        .await
        .unwrap();
    within(rt.send::<()>(Nap(0, "again".into()), &id("s/k")))
        .await
        .unwrap();
}

/// Registers a `Sleeper` type for each of `types`, logging into `log`, each subscribed to topic
/// type `t`.
async fn sleepers_on_topic_t(rt: &AgentRuntime, types: &[&str], log: &Arc<Mutex<Vec<String>>>) {
    for t in types {
        let l = log.clone();
        rt.register_routed(*t, move |_| Sleeper(l.clone()))
            .await
            .unwrap();
        rt.add_subscription(Subscription::type_subscription(
            "t",
            AgentType::new(*t).unwrap(),
        ))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_runtime_wide_queue_quota_bounds_every_mailbox_together() {
    let rt = AgentRuntime::builder().max_queued(3).build();
    let log = Arc::new(Mutex::new(Vec::new()));
    sleepers_on_topic_t(&rt, &["s"], &log).await;
    rt.start().unwrap();
    // Five publishes to one busy agent: three wait, two are refused (and reported).
    for i in 0..5 {
        rt.publish(Nap(20, format!("p{i}")), &TopicId::new("t", "k").unwrap())
            .await
            .unwrap();
    }
    assert_eq!(rt.unprocessed_messages_count(), 3);
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(log.lock().len(), 3);
}

#[tokio::test]
async fn a_publish_to_more_recipients_than_the_queue_quota_leaves_reaches_the_first_ones() {
    let rt = AgentRuntime::builder()
        .max_queued(3)
        .ignore_unhandled_exceptions(false)
        .build();
    let log = Arc::new(Mutex::new(Vec::new()));
    // First in line, a recipient that cannot be reached (an instance-only type without this
    // key): refused, it takes none of the room.
    rt.register_routed_instance(Noop, id("broken/only"))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription(
        "t",
        AgentType::new("broken").unwrap(),
    ))
    .await
    .unwrap();
    sleepers_on_topic_t(&rt, &["s1", "s2", "s3", "s4", "s5"], &log).await;
    rt.start().unwrap();
    // One publish, six recipients, room for three waiting messages: the quota is counted
    // recipient by recipient, so the unreachable one is refused, three are queued and the last
    // two refused.
    rt.publish(Nap(0, "p".into()), &TopicId::new("t", "k").unwrap())
        .await
        .unwrap();
    assert_eq!(rt.unprocessed_messages_count(), 3);
    let e = within(rt.stop_when_idle()).await.unwrap_err();
    assert!(
        matches!(&e, Error::UnknownAgent { .. }),
        "the first refusal: {e}"
    );
    let mut got = log.lock().clone();
    got.sort();
    assert_eq!(got, ["s1/k p", "s2/k p", "s3/k p"]);
    assert_eq!(rt.unprocessed_messages_count(), 0);
}
