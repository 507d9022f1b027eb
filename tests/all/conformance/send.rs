//! Cases 24-37: send_message (RPC).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_core::{
    Agent, AgentId, AgentRef, AgentRuntime, BoxError, CancellationToken, Error, Message,
    MessageContext, MessageId, RoutedAgent, Routes, SendOptions, Target, async_trait,
};

use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[tokio::test]
async fn case_24_unknown_recipient_is_a_typed_error_at_once() {
    let rt = AgentRuntime::new(); // not started
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("nobody/k")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::UnknownAgentType { ref agent_type } if agent_type.as_str() == "nobody"),
        "{e}"
    );
    assert_eq!(rt.unprocessed_messages_count(), 0, "nothing is queued");
}

/// Raw agent that bumps a shared counter inside the message and returns the same message.
struct Mutator;

#[async_trait]
impl Agent for Mutator {
    async fn on_message(&mut self, m: Message, _: &MessageContext) -> Result<Message, Error> {
        m.downcast_ref::<Arc<AtomicUsize>>()
            .expect("native")
            .fetch_add(1, Ordering::SeqCst);
        Ok(m)
    }
}

#[tokio::test]
async fn case_25_response_is_the_handlers_value_by_reference() {
    let rt = AgentRuntime::new();
    rt.register_factory("m", |_| async { Ok::<_, BoxError>(Mutator) })
        .await
        .unwrap();
    rt.start().unwrap();
    let shared = Arc::new(AtomicUsize::new(0));
    let resp = within(rt.send_message(
        Message::opaque(shared.clone()),
        id("m/k"),
        SendOptions::default(),
    ))
    .await
    .unwrap();
    // The caller sees the recipient's mutation, and the response is the very same object.
    assert_eq!(shared.load(Ordering::SeqCst), 1);
    let back = resp.downcast_ref::<Arc<AtomicUsize>>().unwrap();
    assert!(Arc::ptr_eq(back, &shared));
    assert!(
        resp.payload().is_none(),
        "native to native never serializes"
    );
}

/// Stands in for Python's `KeyError`.
#[derive(Debug)]
struct KeyError(&'static str);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.0)
    }
}
impl std::error::Error for KeyError {}

struct Raiser;
impl RoutedAgent for Raiser {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(
            |_: &mut Raiser, _m: &MessageType, _| -> Result<MessageType, BoxError> {
                Err(Box::new(KeyError("boom")))
            },
        );
    }
}

#[tokio::test]
async fn case_26_handler_errors_keep_their_type() {
    let rt = AgentRuntime::new();
    rt.register_routed("raiser", |_| Raiser).await.unwrap();
    rt.start().unwrap();
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("raiser/k")))
        .await
        .unwrap_err();
    assert_eq!(
        e.handler_error::<KeyError>().map(|k| k.0),
        Some("boom"),
        "{e}"
    );
    assert!(
        matches!(e, Error::HandlerFailed { ref agent, ref message_type, .. }
        if agent.to_string() == "raiser/k" && message_type == "MessageType")
    );
}

#[tokio::test]
async fn case_27_unhandled_type_is_cant_handle() {
    let rt = AgentRuntime::new();
    rt.register_routed("lb", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.start().unwrap();
    let e = within(rt.send::<()>(Unhandled { n: 1 }, &id("lb/k")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::CantHandle { ref message_type, .. } if message_type == "Unhandled"),
        "{e}"
    );
    // Case 28 (declared return type checked at run time) is enforced by the compiler in Rust.
}

#[derive(Default)]
struct Router {
    rpc: usize,
    events: usize,
    long: usize,
}

impl RoutedAgent for Router {
    fn routes(r: &mut Routes<Self>) {
        r.message_sync(|a: &mut Router, _m: &MessageType, _| {
            a.rpc += 1;
            Ok::<_, BoxError>(())
        })
        .when(|_, ctx| ctx.is_rpc);
        r.message_sync(|a: &mut Router, _m: &MessageType, _| {
            a.events += 1;
            Ok::<_, BoxError>(())
        })
        .when(|_, ctx| !ctx.is_rpc);
        r.rpc_sync(|a: &mut Router, m: &String, _| {
            a.long += 1;
            Ok::<_, BoxError>(format!("long:{m}"))
        })
        .when(|m, _| m.len() > 3);
        r.rpc_sync(|_: &mut Router, m: &String, _| Ok::<_, BoxError>(format!("short:{m}")));
        r.event_sync(|_: &mut Router, _m: &i64, _| Ok::<_, BoxError>(()));
    }
    fn subscriptions(t: &warren_core::AgentType) -> Vec<warren_core::Subscription> {
        vec![warren_core::Subscription::default_for(t.clone())]
    }
}

#[tokio::test]
async fn case_29_and_30_predicates_kinds_and_declaration_order() {
    let rt = AgentRuntime::new();
    rt.register_routed("r", |_| Router::default())
        .await
        .unwrap();
    rt.start().unwrap();
    let me = id("r/default");
    within(rt.send::<()>(MessageType::new("s"), &me))
        .await
        .unwrap();
    rt.publish(
        MessageType::new("p"),
        &warren_core::TopicId::default_topic(),
    )
    .await
    .unwrap();
    // Content routing (case 29) and first-declared-wins (case 30; AutoGen: alphabetical).
    assert_eq!(
        within(rt.send::<String>("abcdef".to_owned(), &me))
            .await
            .unwrap(),
        "long:abcdef"
    );
    assert_eq!(
        within(rt.send::<String>("ab".to_owned(), &me))
            .await
            .unwrap(),
        "short:ab"
    );
    // An event handler ignores sends.
    let e = within(rt.send::<()>(5i64, &me)).await.unwrap_err();
    assert!(matches!(e, Error::CantHandle { .. }), "{e}");
    within(rt.stop_when_idle()).await.unwrap();
    let counts = rt
        .try_get_underlying_agent_instance(&me, |r: &mut Router| (r.rpc, r.events, r.long))
        .await
        .unwrap();
    assert_eq!(counts, (1, 1, 1));
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CtxView {
    sender: Option<String>,
    topic: Option<String>,
    is_rpc: bool,
    message_id: String,
}

struct CtxReporter;
impl RoutedAgent for CtxReporter {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(
            |_: &mut CtxReporter, _m: &MessageType, ctx: &MessageContext| {
                Ok::<_, BoxError>(CtxView {
                    sender: ctx.sender.as_ref().map(|s| s.to_string()),
                    topic: ctx.topic_id.as_ref().map(|t| t.to_string()),
                    is_rpc: ctx.is_rpc,
                    message_id: ctx.message_id.to_string(),
                })
            },
        );
    }
}

#[tokio::test]
async fn case_31_message_context_of_a_send() {
    let rt = AgentRuntime::new();
    rt.register_routed("echo", |_| CtxReporter).await.unwrap();
    rt.start().unwrap();
    let v: CtxView = within(rt.send(MessageType::new("m"), &id("echo/k")))
        .await
        .unwrap();
    assert_eq!((v.sender, v.topic, v.is_rpc), (None, None, true));
    assert!(!v.message_id.is_empty());
    let v2: CtxView = within(rt.send(MessageType::new("m"), &id("echo/k")))
        .await
        .unwrap();
    assert_ne!(v.message_id, v2.message_id, "generated ids are unique");
    let v = within(rt.send_message(
        Message::new(MessageType::new("m")),
        id("echo/k"),
        SendOptions {
            sender: Some(id("echo/other")),
            message_id: Some(MessageId::new("abc")),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .decode::<CtxView>()
    .unwrap();
    assert_eq!(
        (v.sender.as_deref(), v.message_id.as_str()),
        (Some("echo/other"), "abc")
    );
}

#[tokio::test]
async fn case_32_unknown_sender_type_is_typed_and_senders_are_not_instantiated() {
    let rt = AgentRuntime::new();
    rt.register_routed("echo", |_| CtxReporter).await.unwrap();
    rt.register_routed("other", |_| CtxReporter).await.unwrap();
    rt.start().unwrap();
    let opts = |s: &str| SendOptions {
        sender: Some(id(s)),
        ..Default::default()
    };
    let e = within(rt.send_message(
        Message::new(MessageType::new("m")),
        id("echo/k"),
        opts("ghost/g"),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::UnknownAgentType { ref agent_type } if agent_type.as_str() == "ghost")
    );
    within(rt.send_message(
        Message::new(MessageType::new("m")),
        id("echo/k"),
        opts("other/o"),
    ))
    .await
    .unwrap();
    // AutoGen instantiates a registered sender as a side effect of logging; Warren does not.
    assert_eq!(rt.live_agents(), 1);
}

#[tokio::test]
async fn case_33_not_started_sends_wait_for_process_next() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("lb", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    let rt2 = rt.clone();
    let caller = tokio::spawn(async move {
        rt2.send::<MessageType>(MessageType::new("x"), &id("lb/k"))
            .await
    });
    within(async {
        while rt.unprocessed_messages_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(rt.unprocessed_messages_count(), 1);
    assert_eq!(calls.get(), 0, "nothing runs before process_next");
    assert!(within(rt.process_next()).await.unwrap());
    // One turn: the response goes straight to the caller (AutoGen needs a second process_next).
    let r = within(caller).await.unwrap().unwrap();
    assert_eq!((r.text.as_str(), calls.get()), ("x", 1));
    assert!(
        !within(rt.process_next()).await.unwrap(),
        "empty queue returns false, never blocks"
    );
}

struct SelfCaller;
impl RoutedAgent for SelfCaller {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(
            |_: &mut SelfCaller, m: &MessageType, ctx: &MessageContext| {
                Box::pin(async move {
                    let me = ctx.agent_id().clone();
                    let r: Result<MessageType, Error> = ctx.send(m.clone(), &me).await;
                    Ok(format!("{}", r.unwrap_err()))
                })
            },
        );
    }
}

#[tokio::test]
async fn case_34_self_send_is_a_call_cycle_not_a_deadlock() {
    let rt = AgentRuntime::new();
    rt.register_routed("selfish", |_| SelfCaller).await.unwrap();
    rt.start().unwrap();
    let text: String = within(rt.send(MessageType::new("x"), &id("selfish/k")))
        .await
        .unwrap();
    assert!(
        text.contains("call cycle: selfish/k -> selfish/k"),
        "{text}"
    );
}

struct LongRunning(Calls);
impl RoutedAgent for LongRunning {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut LongRunning, _m: &MessageType, ctx: &MessageContext| {
            Box::pin(async move {
                a.0.hit();
                tokio::select! {
                    _ = ctx.cancellation_token().cancelled() => Err::<(), BoxError>("handler saw cancellation".into()),
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(()),
                }
            })
        });
    }
}

/// Answers whether its token was cancelled on arrival; cancels it when the message says so.
struct TokenWatcher;
impl RoutedAgent for TokenWatcher {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(
            |_: &mut TokenWatcher, m: &MessageType, ctx: &MessageContext| {
                let seen = ctx.cancellation_token().is_cancelled();
                if m.text == "cancel" {
                    ctx.cancellation_token().cancel();
                    // The same token every time the handler asks.
                    assert!(ctx.cancellation_token().is_cancelled());
                }
                Ok::<_, BoxError>(seen)
            },
        );
    }
}

#[tokio::test]
async fn a_send_without_a_token_hands_the_handler_one_that_cancels_the_caller() {
    let rt = AgentRuntime::new();
    rt.register_routed("watcher", |_| TokenWatcher)
        .await
        .unwrap();
    rt.start().unwrap();
    // As in AutoGen, where the runtime makes the caller a token: the handler cancelling it
    // cancels the caller's wait.
    let e = within(rt.send::<bool>(MessageType::new("cancel"), &id("watcher/k")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e:?}");
    // The next message gets a fresh, uncancelled token.
    let seen: bool = within(rt.send(MessageType::new("look"), &id("watcher/k")))
        .await
        .unwrap();
    assert!(!seen);
}

#[tokio::test]
async fn case_35_cancelling_after_delivery() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("long", move |_| LongRunning(c.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let token = CancellationToken::new();
    let rt2 = rt.clone();
    let t2 = token.clone();
    let caller = tokio::spawn(async move {
        rt2.send_message(
            Message::new(MessageType::new("x")),
            id("long/k"),
            SendOptions {
                cancellation_token: Some(t2),
                ..Default::default()
            },
        )
        .await
    });
    within(async {
        while calls.get() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    token.cancel();
    let e = within(caller).await.unwrap().unwrap_err();
    assert!(
        matches!(e, Error::Cancelled { target: Target::Agent(ref a) } if a.to_string() == "long/k"),
        "{e}"
    );
    // The handler saw the token and finished; the agent is free again.
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(rt.unprocessed_messages_count(), 0);
}

struct Outer(Calls);
impl RoutedAgent for Outer {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut Outer, m: &MessageType, ctx: &MessageContext| {
            Box::pin(async move {
                a.0.hit();
                let r = ctx
                    .runtime()
                    .send_message(
                        Message::new(m.clone()),
                        "inner/k".parse().unwrap(),
                        SendOptions {
                            sender: Some(ctx.agent_id().clone()),
                            cancellation_token: Some(ctx.cancellation_token().clone()),
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok::<_, BoxError>(r.decode::<MessageType>()?)
            })
        });
    }
}

#[tokio::test]
async fn case_36_nested_cancellation_only_outer_called() {
    let rt = AgentRuntime::new(); // not started: step with process_next
    let (outer, inner) = (Calls::default(), Calls::default());
    let (o, i) = (outer.clone(), inner.clone());
    rt.register_routed("outer", move |_| Outer(o.clone()))
        .await
        .unwrap();
    rt.register_routed("inner", move |_| LongRunning(i.clone()))
        .await
        .unwrap();
    let token = CancellationToken::new();
    let (rt2, t2) = (rt.clone(), token.clone());
    let caller = tokio::spawn(async move {
        rt2.send_message(
            Message::new(MessageType::new("x")),
            id("outer/k"),
            SendOptions {
                cancellation_token: Some(t2),
                ..Default::default()
            },
        )
        .await
    });
    within(async {
        while rt.unprocessed_messages_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    within(rt.process_next()).await.unwrap(); // outer runs and queues the inner send
    within(async {
        while rt.unprocessed_messages_count() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    token.cancel();
    let e = within(caller).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    assert_eq!((outer.get(), inner.get()), (1, 0));
}

#[tokio::test]
async fn case_36_nested_cancellation_inner_called() {
    let rt = AgentRuntime::new();
    let (outer, inner) = (Calls::default(), Calls::default());
    let (o, i) = (outer.clone(), inner.clone());
    rt.register_routed("outer", move |_| Outer(o.clone()))
        .await
        .unwrap();
    rt.register_routed("inner", move |_| LongRunning(i.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let token = CancellationToken::new();
    let (rt2, t2) = (rt.clone(), token.clone());
    let caller = tokio::spawn(async move {
        rt2.send_message(
            Message::new(MessageType::new("x")),
            id("outer/k"),
            SendOptions {
                cancellation_token: Some(t2),
                ..Default::default()
            },
        )
        .await
    });
    within(async {
        while inner.get() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    token.cancel();
    assert!(matches!(
        within(caller).await.unwrap(),
        Err(Error::Cancelled { .. })
    ));
    // Both handlers observed the token: the runtime goes idle instead of waiting 30 s.
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!((outer.get(), inner.get()), (1, 1));
}

#[tokio::test]
async fn case_37_already_cancelled_token_still_delivers_once() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("lb", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let token = CancellationToken::new();
    token.cancel();
    let e = within(rt.send_message(
        Message::new(MessageType::new("x")),
        id("lb/k"),
        SendOptions {
            cancellation_token: Some(token),
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }));
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(calls.get(), 1);
}

/// Not in AutoGen: a recipient looked up once (`resolve`) and sent to by reference, which spares
/// the id's lookup per send. It behaves as a send by id: the agent is created by its first
/// message, not by `resolve`; unknown types fail at `resolve`; and a reference taken from
/// another runtime is looked up again by id, so it reaches this runtime's agent.
#[tokio::test]
async fn a_resolved_recipient_is_sent_to_like_its_id() {
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let a = AgentRuntime::new();
    let b = AgentRuntime::new();
    for (rt, calls) in [(&a, &calls_a), (&b, &calls_b)] {
        let calls = calls.clone();
        rt.register_routed("lb", move |_| Loopback::new(calls.clone()))
            .await
            .unwrap();
        rt.start().unwrap();
    }
    let e = a.resolve(&id("ghost/k")).unwrap_err();
    assert!(
        matches!(e, Error::UnknownAgentType { ref agent_type } if agent_type.as_str() == "ghost"),
        "{e}"
    );

    let to = a.resolve(&id("lb/k")).unwrap();
    assert_eq!(to.id(), &id("lb/k"));
    assert_eq!(a.live_agents(), 0, "resolving creates no agent");
    // Sends `text` through `to` with runtime `rt` and returns the answer's text.
    async fn via(rt: &AgentRuntime, to: &AgentRef, text: &str) -> String {
        let m = Message::new(MessageType::new(text));
        let back = within(rt.send_message_to(m, to, SendOptions::default()))
            .await
            .unwrap();
        back.decode::<MessageType>().unwrap().text
    }
    for text in ["one", "two"] {
        assert_eq!(via(&a, &to, text).await, text);
    }
    assert_eq!((calls_a.get(), a.live_agents()), (2, 1));

    // A reference from runtime `a` used with runtime `b` reaches `b`'s agent of that id.
    assert_eq!(via(&b, &to, "three").await, "three");
    assert_eq!((calls_a.get(), calls_b.get()), (2, 1));
    assert_eq!(b.live_agents(), 1);

    // Once its runtime is gone, a reference still names the agent for any other runtime.
    drop(a);
    assert_eq!(via(&b, &to, "four").await, "four");
    assert_eq!(calls_b.get(), 2);
}
