//! Cases 1-9: identities and subscriptions.

use warren_core::{
    AgentId, AgentRuntime, AgentType, Error, IdError, MessageContext, RoutedAgent, Routes,
    Subscription, SubscriptionId, TopicId,
};

use crate::common::*;

#[test]
fn case_01_agent_type_validation() {
    for ok in ["a", "a.b-c_d", "1", "é"] {
        AgentId::new(ok, "k").unwrap();
    }
    for bad in ["", "a b", "a/b", "a:b", "a\n"] {
        let e = AgentId::new(bad, "k").unwrap_err();
        assert!(
            matches!(e, IdError::InvalidAgentType { ref value } if value == bad),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn case_02_keys_are_free_and_from_str_splits_on_first_slash() {
    for key in ["", "a/b", " x "] {
        assert_eq!(
            AgentId::new("t", key).unwrap().to_string(),
            format!("t/{key}")
        );
    }
    let id: AgentId = "a/b/c".parse().unwrap();
    assert_eq!((id.agent_type().as_str(), id.key()), ("a", "b/c"));
    assert!(matches!(
        "ab".parse::<AgentId>(),
        Err(IdError::MissingSeparator { .. })
    ));
    assert_eq!("a/".parse::<AgentId>().unwrap().key(), "");
}

#[test]
fn case_03_topic_type_validation() {
    TopicId::new("a:b=c", "s").unwrap();
    TopicId::new("a.b-c", "any/source at all").unwrap();
    for bad in ["a/b", "", "a b"] {
        assert!(
            matches!(
                TopicId::new(bad, "s"),
                Err(IdError::InvalidTopicType { .. })
            ),
            "{bad:?}"
        );
    }
}

fn at(s: &str) -> AgentType {
    AgentType::new(s).unwrap()
}
fn topic(t: &str, s: &str) -> TopicId {
    TopicId::new(t, s).unwrap()
}

#[test]
fn case_04_type_subscription_match() {
    let s = Subscription::type_subscription("t1", at("a1"));
    assert!(!s.is_match(&topic("t0", "s1")));
    assert!(s.is_match(&topic("t1", "s1")));
    assert!(s.is_match(&topic("t1", "s2")));
}

#[test]
fn case_05_type_subscription_map() {
    let s = Subscription::type_subscription("t1", at("a1"));
    assert_eq!(
        s.map_to_agent(&topic("t1", "s1")).unwrap(),
        AgentId::new("a1", "s1").unwrap()
    );
    let e = s.map_to_agent(&topic("t0", "s1")).unwrap_err();
    assert!(matches!(e, Error::SubscriptionMismatch { .. }));
    assert!(e.to_string().contains("t0/s1"), "{e}");
}

#[test]
fn case_06_prefix_subscription() {
    let s = Subscription::type_prefix("t1", at("a1"));
    assert!(s.is_match(&topic("t1", "x")) && s.is_match(&topic("t1SUFFIX", "x")));
    assert!(Subscription::type_prefix("", at("a1")).is_match(&topic("zzz", "x")));
}

#[tokio::test]
async fn case_07_duplicate_subscriptions_rejected() {
    let rt = AgentRuntime::new();
    rt.add_subscription(Subscription::type_subscription("default", at("MyAgent")))
        .await
        .unwrap();
    let e = rt
        .add_subscription(Subscription::type_subscription("default", at("MyAgent")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SubscriptionExists { .. }), "{e}");
    let e = rt
        .add_subscription(Subscription::default_for(at("MyAgent")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[tokio::test]
async fn case_08_removing_unknown_subscription_is_typed() {
    let rt = AgentRuntime::new();
    let e = rt
        .remove_subscription(&SubscriptionId::new("nonexistent"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownSubscription { ref id } if id.as_str() == "nonexistent"));
    // DefaultSubscription outside a register context: not applicable, the agent type is a parameter.
    assert_eq!(
        Subscription::default_for(at("x")).agent_type().as_str(),
        "x"
    );
}

struct TopicReporter;
impl RoutedAgent for TopicReporter {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(
            |_: &mut TopicReporter, _m: &MessageType, ctx: &MessageContext| {
                Ok::<_, warren_core::BoxError>(ctx.default_topic().to_string())
            },
        );
    }
}

#[tokio::test]
async fn case_09_default_topic_outside_and_inside_a_handler() {
    assert_eq!(TopicId::default_topic().to_string(), "default/default");
    let rt = AgentRuntime::new();
    rt.register_routed("X", |_| TopicReporter).await.unwrap();
    rt.start().unwrap();
    let t: String = within(rt.send(MessageType::new("?"), &AgentId::new("X", "k").unwrap()))
        .await
        .unwrap();
    assert_eq!(t, "default/k");
    within(rt.stop_when_idle()).await.unwrap();
}
