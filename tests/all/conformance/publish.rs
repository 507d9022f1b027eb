//! Cases 38-55: publish_message.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use warren_core::{
    AgentId, AgentRuntime, AgentType, BoxError, Error, Message, MessageContext, PublishOptions,
    RoutedAgent, Routes, Subscription, TopicId,
};

use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}
fn topic(s: &str) -> TopicId {
    s.parse().unwrap()
}
fn at(s: &str) -> AgentType {
    AgentType::new(s).unwrap()
}

async fn received(rt: &AgentRuntime, agent: &str) -> Vec<String> {
    rt.try_get_underlying_agent_instance(&id(agent), |l: &mut Loopback| l.received.clone())
        .await
        .unwrap()
}

#[tokio::test]
async fn case_38_type_subscription_delivers_to_the_source_key() {
    let rt = AgentRuntime::new();
    rt.register_routed("name", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription("default", at("name")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("p"), &topic("default/default"))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(received(&rt, "name/default").await.len(), 1);
    assert!(received(&rt, "name/other").await.is_empty());
}

struct DefaultSub;
impl RoutedAgent for DefaultSub {
    fn routes(_: &mut Routes<Self>) {}
    fn subscriptions(t: &AgentType) -> Vec<Subscription> {
        vec![
            Subscription::default_for(t.clone()),
            Subscription::type_subscription("Other", t.clone()),
        ]
    }
}

/// Loopback with the class subscriptions of `DefaultSub` (`@default_subscription` and
/// `@type_subscription("Other")`).
struct SubscribedLoopback(Loopback);
impl RoutedAgent for SubscribedLoopback {
    fn routes(r: &mut Routes<Self>) {
        r.message_sync(|a: &mut SubscribedLoopback, m: &MessageType, _| {
            a.0.received.push(m.text.clone());
            Ok::<_, BoxError>(())
        });
    }
    fn subscriptions(t: &AgentType) -> Vec<Subscription> {
        DefaultSub::subscriptions(t)
    }
}

async fn got(rt: &AgentRuntime, agent: &str) -> usize {
    rt.try_get_underlying_agent_instance(&id(agent), |l: &mut SubscribedLoopback| {
        l.0.received.len()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn case_39_and_40_default_and_type_subscriptions() {
    let rt = AgentRuntime::new();
    rt.register_routed("name", |_| {
        SubscribedLoopback(Loopback::new(Calls::default()))
    })
    .await
    .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("a"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(got(&rt, "name/default").await, 1);
    rt.start().unwrap();
    rt.publish(MessageType::new("b"), &topic("default/other"))
        .await
        .unwrap();
    rt.publish(MessageType::new("c"), &topic("Other/default"))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(
        (got(&rt, "name/other").await, got(&rt, "name/default").await),
        (1, 2)
    );
}

#[tokio::test]
async fn case_42_sender_is_excluded_other_keys_are_not() {
    let rt = AgentRuntime::new();
    rt.register_routed("rec", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription("t", at("rec")))
        .await
        .unwrap();
    rt.start().unwrap();
    let from = |s: &str| PublishOptions {
        sender: Some(id(s)),
        ..Default::default()
    };
    rt.publish_message(
        Message::new(MessageType::new("1")),
        topic("t/s1"),
        from("rec/s1"),
    )
    .await
    .unwrap();
    rt.publish_message(
        Message::new(MessageType::new("2")),
        topic("t/s2"),
        from("rec/s1"),
    )
    .await
    .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(received(&rt, "rec/s2").await, ["2"]);
    assert!(received(&rt, "rec/s1").await.is_empty());
}

#[tokio::test]
async fn case_44_no_subscribers_is_fine() {
    let rt = AgentRuntime::new();
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &topic("nobody/listens"))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn case_46_unregistered_sender_is_a_typed_error() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("name", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription("t", at("name")))
        .await
        .unwrap();
    rt.start().unwrap();
    let e = rt
        .publish_message(
            Message::new(MessageType::new("x")),
            topic("t/s"),
            PublishOptions {
                sender: Some(id("unregistered/x")),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownAgentType { .. }), "{e}");
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(calls.get(), 0, "nobody received it");
}

struct FailingEvent;
impl RoutedAgent for FailingEvent {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|_: &mut FailingEvent, _m: &MessageType, _| {
            Err::<(), BoxError>("Test exception".into())
        });
    }
    fn subscriptions(t: &AgentType) -> Vec<Subscription> {
        vec![Subscription::default_for(t.clone())]
    }
}

#[tokio::test]
async fn case_47_event_handler_errors_surface_when_not_ignored() {
    for n in [1, 3] {
        let rt = AgentRuntime::builder()
            .ignore_unhandled_exceptions(false)
            .build();
        rt.register_routed("name", |_| FailingEvent).await.unwrap();
        rt.start().unwrap();
        for _ in 0..n {
            rt.publish(MessageType::new("x"), &TopicId::default_topic())
                .await
                .unwrap();
        }
        let e = within(rt.stop_when_idle()).await.unwrap_err();
        assert!(matches!(e, Error::HandlerFailed { .. }), "{e}");
        assert!(e.to_string().contains("Test exception"), "{e}");
    }
    let rt = AgentRuntime::new(); // default: ignore, log only
    let cap = Capture::default();
    let _g = cap.install();
    rt.register_routed("name", |_| FailingEvent).await.unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert!(cap.has_event(tracing::Level::ERROR, "Test exception"));
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step(String);

struct Slow(Arc<Mutex<Vec<String>>>, u64);
impl RoutedAgent for Slow {
    fn routes(r: &mut Routes<Self>) {
        r.event(|a: &mut Slow, m: &Step, _ctx: &MessageContext| {
            Box::pin(async move {
                if a.1 == 0 {
                    return Err::<(), BoxError>("fails at once".into());
                }
                tokio::time::sleep(Duration::from_millis(a.1)).await;
                a.0.lock().push(format!("done {}", m.0));
                Ok(())
            })
        });
    }
}

#[tokio::test]
async fn case_48_one_failing_recipient_does_not_stop_others_and_idle_waits_for_all() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("a", |_| Slow(Arc::default(), 0))
        .await
        .unwrap();
    rt.register_routed("b", move |_| Slow(l.clone(), 300))
        .await
        .unwrap();
    for t in ["a", "b"] {
        rt.add_subscription(Subscription::type_subscription("t", at(t)))
            .await
            .unwrap();
    }
    rt.start().unwrap();
    rt.publish(Step("p".into()), &topic("t/s")).await.unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    // AutoGen's stop_when_idle returns before B finishes; Warren's waits for it.
    assert_eq!(*log.lock(), ["done p"]);
}

#[tokio::test]
async fn case_49_factory_errors_on_publish_are_logged() {
    let rt = AgentRuntime::new();
    let cap = Capture::default();
    let _g = cap.install();
    rt.register_factory("broken", |_| async {
        Err::<warren_core_noop::Never, BoxError>("test".into())
    })
    .await
    .unwrap();
    rt.add_subscription(Subscription::default_for(at("broken")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert!(cap.has_event(tracing::Level::ERROR, "error constructing agent"));
    // With ignore_unhandled_exceptions(false) the same failure is raised by stop_when_idle.
    let rt = AgentRuntime::builder()
        .ignore_unhandled_exceptions(false)
        .build();
    rt.register_factory("broken", |_| async {
        Err::<warren_core_noop::Never, BoxError>("test".into())
    })
    .await
    .unwrap();
    rt.add_subscription(Subscription::default_for(at("broken")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &TopicId::default_topic())
        .await
        .unwrap();
    let e = within(rt.stop_when_idle()).await.unwrap_err();
    assert!(
        matches!(e, Error::FactoryFailed { ref agent, .. } if agent.to_string() == "broken/default"),
        "{e}"
    );
}

mod warren_core_noop {
    use warren_core::{Agent, Error, Message, MessageContext, async_trait};
    /// An agent type that is never built (its factory always fails).
    pub struct Never;
    #[async_trait]
    impl Agent for Never {
        async fn on_message(&mut self, m: Message, _: &MessageContext) -> Result<Message, Error> {
            Ok(m)
        }
    }
}

#[tokio::test]
async fn case_50_unhandled_publish_is_logged_at_info() {
    let rt = AgentRuntime::new();
    let cap = Capture::default();
    let _g = cap.install();
    rt.register_routed("lb", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::default_for(at("lb")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(Unhandled { n: 1 }, &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert!(cap.has_event(tracing::Level::INFO, "unhandled message"));
    assert!(cap.has_event(tracing::Level::INFO, "Unhandled"));
}

#[tokio::test]
async fn case_51_publishes_arrive_in_order_with_the_source_key() {
    let rt = AgentRuntime::new();
    rt.register_routed("closure", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::default_for(at("closure")))
        .await
        .unwrap();
    rt.start().unwrap();
    for t in ["1", "2", "3"] {
        rt.publish(MessageType::new(t), &TopicId::default_topic())
            .await
            .unwrap();
    }
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(received(&rt, "closure/default").await, ["1", "2", "3"]);
}

struct StartEnd(Arc<Mutex<Vec<String>>>);
impl RoutedAgent for StartEnd {
    fn routes(r: &mut Routes<Self>) {
        r.event(|a: &mut StartEnd, m: &Step, _| {
            Box::pin(async move {
                a.0.lock().push(format!("start{}", m.0));
                let ms = if m.0 == "1" { 50 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                a.0.lock().push(format!("end{}", m.0));
                Ok::<_, BoxError>(())
            })
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_53_one_message_at_a_time_per_agent() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register_routed("se", move |_| StartEnd(l.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::default_for(at("se")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(Step("1".into()), &TopicId::default_topic())
        .await
        .unwrap();
    rt.publish(Step("2".into()), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    // AutoGen interleaves: start1, start2, end2, end1.
    assert_eq!(*log.lock(), ["start1", "end1", "start2", "end2"]);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    topic: Option<String>,
    is_rpc: bool,
    sender: Option<String>,
    message_id: String,
}

struct CtxLog(Arc<Mutex<Vec<Seen>>>);
impl RoutedAgent for CtxLog {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|a: &mut CtxLog, _m: &MessageType, ctx: &MessageContext| {
            a.0.lock().push(Seen {
                topic: ctx.topic_id.as_ref().map(|t| t.to_string()),
                is_rpc: ctx.is_rpc,
                sender: ctx.sender.as_ref().map(|s| s.to_string()),
                message_id: ctx.message_id.to_string(),
            });
            Ok::<_, BoxError>(())
        });
        r.rpc(|_: &mut CtxLog, m: &String, ctx: &MessageContext| {
            Box::pin(async move {
                ctx.publish(MessageType::new(m), &"fan/x".parse().unwrap())
                    .await?;
                Ok::<_, BoxError>(())
            })
        });
    }
}

#[tokio::test]
async fn case_54_publish_context_seen_by_every_recipient() {
    let rt = AgentRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    rt.register_routed("r1", move |_| CtxLog(l1.clone()))
        .await
        .unwrap();
    rt.register_routed("r2", move |_| CtxLog(l2.clone()))
        .await
        .unwrap();
    rt.register_routed("pub", |_| CtxLog(Arc::default()))
        .await
        .unwrap();
    for t in ["r1", "r2"] {
        rt.add_subscription(Subscription::type_subscription("fan", at(t)))
            .await
            .unwrap();
    }
    rt.start().unwrap();
    within(rt.send::<()>("go".to_owned(), &id("pub/p")))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    let seen = log.lock().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(
            (s.topic.as_deref(), s.is_rpc, s.sender.as_deref()),
            (Some("fan/x"), false, Some("pub/p"))
        );
    }
    assert_eq!(
        seen[0].message_id, seen[1].message_id,
        "one message id for all recipients"
    );
}

#[tokio::test]
async fn publish_reaches_each_matching_agent_once() {
    // Deliberate departure: AutoGen delivers twice when two subscriptions map to one agent.
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("dup", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_subscription("news", at("dup")))
        .await
        .unwrap();
    rt.add_subscription(Subscription::type_prefix("ne", at("dup")))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("x"), &topic("news/s"))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(calls.get(), 1);
}
