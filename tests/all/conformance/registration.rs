//! Cases 10-23: registration.

use std::sync::Arc;

use warren_core::{
    Agent, AgentContext, AgentId, AgentRuntime, AgentType, BoxError, Error, ExpectedType, Message,
    MessageContext, RegisterOptions, RoutedAgent, Routes, Subscription, TopicId, async_trait,
};

use crate::common::*;

#[tokio::test]
async fn case_10_agent_types_are_unique() {
    let rt = AgentRuntime::new();
    rt.register_routed("name1", |_| Noop).await.unwrap();
    let e = rt.register_routed("name1", |_| Noop).await.unwrap_err();
    assert!(
        matches!(e, Error::AgentTypeExists { ref agent_type } if agent_type.as_str() == "name1")
    );
    let e = rt
        .register_factory("name1", |_| async { Ok::<_, BoxError>(Echo) })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AgentTypeExists { .. }));
    rt.register_routed("name2", |_| Noop).await.unwrap();
}

/// A raw `Agent` (no routing layer) that records the id its factory was given.
struct Echo;

#[async_trait]
impl Agent for Echo {
    async fn on_message(&mut self, m: Message, _ctx: &MessageContext) -> Result<Message, Error> {
        Ok(m)
    }
    fn description(&self) -> String {
        "echo".to_owned()
    }
}

struct Remember(AgentContext);

#[async_trait]
impl Agent for Remember {
    async fn on_message(&mut self, _m: Message, ctx: &MessageContext) -> Result<Message, Error> {
        assert_eq!(self.0.id(), ctx.agent_id());
        Ok(Message::new(self.0.id().to_string()))
    }
}

#[tokio::test]
async fn case_11_and_12_factory_learns_its_id_and_runtime() {
    let rt = AgentRuntime::new();
    rt.register_factory("name1", |ctx: AgentContext| async move {
        assert_eq!(ctx.id(), &AgentId::new("name1", "default").unwrap());
        // Case 12: the runtime is reachable from the context (AutoGen's current_runtime()).
        let runtime = ctx.runtime().expect("runtime alive while building");
        assert!(runtime.is_registered(ctx.id().agent_type()));
        Ok::<_, BoxError>(Remember(ctx))
    })
    .await
    .unwrap();
    rt.start().unwrap();
    let id: String = within(rt.send(1u8, &AgentId::new("name1", "default").unwrap()))
        .await
        .unwrap();
    assert_eq!(id, "name1/default");
}

struct Other;

#[tokio::test]
async fn case_13_expected_type_checked_at_instantiation() {
    let rt = AgentRuntime::new();
    let factory: Arc<warren_core::DynFactory> =
        Arc::new(|_| Box::pin(async { Ok(Box::new(Echo) as Box<dyn Agent>) }));
    rt.register_factory_dyn("e", factory.clone(), Some(ExpectedType::of::<Other>()))
        .await
        .unwrap();
    rt.register_factory_dyn("ok", factory, Some(ExpectedType::of::<Echo>()))
        .await
        .unwrap();
    rt.start().unwrap();
    let e = within(rt.send::<String>("x".to_owned(), &AgentId::new("e", "k").unwrap()))
        .await
        .unwrap_err();
    match e {
        Error::WrongAgentClass {
            expected, actual, ..
        } => {
            assert!(
                expected.ends_with("Other") && actual.ends_with("Echo"),
                "{expected} {actual}"
            );
        }
        other => panic!("expected WrongAgentClass, got {other}"),
    }
    let r: String = within(rt.send("x".to_owned(), &AgentId::new("ok", "k").unwrap()))
        .await
        .unwrap();
    assert_eq!(r, "x");
}

#[tokio::test]
async fn case_14_async_factories_work() {
    let rt = AgentRuntime::new();
    rt.register_factory("slow", |_| async {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        Ok::<_, BoxError>(Echo)
    })
    .await
    .unwrap();
    rt.start().unwrap();
    let r: String = within(rt.send("hi".to_owned(), &AgentId::new("slow", "k").unwrap()))
        .await
        .unwrap();
    assert_eq!(r, "hi");
    // A 2-parameter factory is a compile error in Rust: not applicable.
}

#[tokio::test]
async fn case_15_registered_instances_are_the_instances_used() {
    let rt = AgentRuntime::new();
    let a = Loopback::new(Calls::default());
    let b = Loopback::new(Calls::default());
    let ida = rt
        .register_routed_instance(a, AgentId::new("name", "default").unwrap())
        .await
        .unwrap();
    let idb = rt
        .register_routed_instance(b, AgentId::new("name", "notdefault").unwrap())
        .await
        .unwrap();
    rt.start().unwrap();
    within(rt.send::<MessageType>(MessageType::new("to-a"), &ida))
        .await
        .unwrap();
    let seen_a = rt
        .try_get_underlying_agent_instance(&ida, |l: &mut Loopback| l.received.clone())
        .await
        .unwrap();
    let seen_b = rt
        .try_get_underlying_agent_instance(&idb, |l: &mut Loopback| l.received.clone())
        .await
        .unwrap();
    assert_eq!((seen_a, seen_b), (vec!["to-a".to_owned()], vec![]));
    let e = rt
        .register_routed_instance(Loopback::new(Calls::default()), ida.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AgentExists { ref agent } if *agent == ida));
}

#[tokio::test]
async fn case_16_instances_of_one_type_share_a_rust_type() {
    let rt = AgentRuntime::new();
    rt.register_routed_instance(Noop, AgentId::new("name", "noop").unwrap())
        .await
        .unwrap();
    let e = rt
        .register_routed_instance(
            Loopback::new(Calls::default()),
            AgentId::new("name", "loopback").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InstanceTypeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("Noop") && e.to_string().contains("Loopback"),
        "{e}"
    );
}

#[tokio::test]
async fn case_17_factories_and_instances_do_not_mix() {
    let rt = AgentRuntime::new();
    rt.register_routed_instance(Noop, AgentId::new("name", "x").unwrap())
        .await
        .unwrap();
    let e = rt.register_routed("name", |_| Noop).await.unwrap_err();
    assert!(matches!(e, Error::MixedRegistration { .. }), "{e}");
    rt.register_routed("fact", |_| Noop).await.unwrap();
    let e = rt
        .register_routed_instance(Noop, AgentId::new("fact", "x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MixedRegistration { .. }), "{e}");
    // Case 18 (one object under two ids) cannot be written in Rust: registration moves the value.
}

#[tokio::test]
async fn case_19_instance_only_type_with_a_new_key() {
    let rt = AgentRuntime::builder()
        .ignore_unhandled_exceptions(false)
        .build();
    rt.register_routed_instance(
        Loopback::new(Calls::default()),
        AgentId::new("name", "default").unwrap(),
    )
    .await
    .unwrap();
    rt.add_subscription(Subscription::type_subscription(
        "notdefault",
        AgentType::new("name").unwrap(),
    ))
    .await
    .unwrap();
    rt.start().unwrap();
    rt.publish(
        MessageType::new("p"),
        &TopicId::new("notdefault", "notdefault").unwrap(),
    )
    .await
    .unwrap();
    let e = within(rt.stop_when_idle()).await.unwrap_err();
    assert!(
        matches!(e, Error::UnknownAgent { ref agent } if agent.to_string() == "name/notdefault"),
        "{e}"
    );
    // A send to another key fails at once, with the same typed error.
    let e = rt
        .send::<MessageType>(
            MessageType::new("s"),
            &AgentId::new("name", "other").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownAgent { .. }), "{e}");
}

struct WithDefault;
impl RoutedAgent for WithDefault {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|_: &mut WithDefault, _m: &MessageType, _| Ok::<_, BoxError>(()));
    }
    fn subscriptions(t: &AgentType) -> Vec<Subscription> {
        vec![Subscription::default_for(t.clone())]
    }
}

fn describe(subs: &[Subscription]) -> Vec<String> {
    subs.iter()
        .map(|s| match s {
            Subscription::Type {
                topic_type,
                agent_type,
                ..
            } => format!("Type({topic_type}->{agent_type})"),
            Subscription::TypePrefix {
                prefix, agent_type, ..
            } => format!("Prefix({prefix}->{agent_type})"),
        })
        .collect()
}

#[tokio::test]
async fn case_20_subscriptions_added_by_registration() {
    let rt = AgentRuntime::new();
    rt.register_routed("bad", |_| WithDefault).await.unwrap();
    assert_eq!(
        describe(&rt.subscriptions()),
        ["Type(default->bad)", "Prefix(bad:->bad)"]
    );
    let rt = AgentRuntime::new();
    rt.register_routed_instance(Noop, AgentId::new("inst", "a").unwrap())
        .await
        .unwrap();
    rt.register_routed_instance(Noop, AgentId::new("inst", "b").unwrap())
        .await
        .unwrap();
    assert_eq!(
        describe(&rt.subscriptions()),
        ["Type(a->inst)", "Prefix(inst:->inst)", "Type(b->inst)"]
    );
}

struct IntAgent;
impl RoutedAgent for IntAgent {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|_: &mut IntAgent, m: &i64, _| Ok::<_, BoxError>(m * 2));
    }
}

#[tokio::test]
async fn case_21_primitive_message_types_just_work() {
    // AutoGen cannot build serializers for `int`; every serde type is a message type in Warren.
    let rt = AgentRuntime::new();
    rt.register_routed("ints", |_| IntAgent).await.unwrap();
    rt.start().unwrap();
    let r: i64 = within(rt.send(21i64, &AgentId::new("ints", "k").unwrap()))
        .await
        .unwrap();
    assert_eq!(r, 42);
}

#[tokio::test]
async fn case_22_skip_class_subscriptions() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    struct Counting(Calls);
    impl RoutedAgent for Counting {
        fn routes(r: &mut Routes<Self>) {
            r.event_sync(|a: &mut Counting, _m: &MessageType, _| {
                a.0.hit();
                Ok::<_, BoxError>(())
            });
        }
        fn subscriptions(t: &AgentType) -> Vec<Subscription> {
            vec![Subscription::default_for(t.clone())]
        }
    }
    rt.register_routed_with(
        "skipper",
        move |_| Counting(c.clone()),
        RegisterOptions {
            skip_class_subscriptions: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("p"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(calls.get(), 0);
}

#[tokio::test]
async fn case_23_direct_message_prefix_subscription() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("rec", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("1"), &TopicId::new("rec:", "s9").unwrap())
        .await
        .unwrap();
    rt.publish(
        MessageType::new("2"),
        &TopicId::new("rec:whatever", "s9").unwrap(),
    )
    .await
    .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    let got = rt
        .try_get_underlying_agent_instance(
            &AgentId::new("rec", "s9").unwrap(),
            |l: &mut Loopback| l.received.clone(),
        )
        .await
        .unwrap();
    assert_eq!(got, ["1", "2"]);
}
