//! The conformance cases that concern agents' behaviour, run with wasm agents: context (31, 54),
//! unknown recipients (24), unhandled types (27), sender exclusion (42), delivery by subscription
//! (38), state documents (73), per-agent order (51, 53) and call cycles (34).

use serde::{Deserialize, Serialize};
use warren_runtime::{
    AgentId, AgentType, Error, Message, MessageId, PublishOptions, SendOptions, Subscription,
    TopicId,
};

use super::{guests, runtime_with};
use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[derive(Debug, Serialize, Deserialize)]
struct ContextProbe {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ContextView {
    me: String,
    sender: Option<String>,
    topic: Option<String>,
    is_rpc: bool,
    message_id: String,
}

#[tokio::test]
async fn case_31_context_of_a_send_to_a_wasm_agent() {
    let rt = runtime_with(&[("echo", guests::ECHO)]).await;
    rt.start().unwrap();
    let v: ContextView = within(rt.send(ContextProbe {}, &id("echo/k")))
        .await
        .unwrap();
    assert_eq!(
        (v.me.as_str(), v.sender, v.topic, v.is_rpc),
        ("echo/k", None, None, true)
    );
    let v = within(rt.send_message(
        Message::new(ContextProbe {}),
        id("echo/k"),
        SendOptions {
            sender: Some(id("echo/other")),
            message_id: Some(MessageId::new("abc")),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .decode::<ContextView>()
    .unwrap();
    assert_eq!(
        (v.sender.as_deref(), v.message_id.as_str()),
        (Some("echo/other"), "abc")
    );
}

#[tokio::test]
async fn case_24_and_27_unknown_recipients_and_unhandled_types() {
    let rt = runtime_with(&[("counter", guests::COUNTER)]).await;
    rt.start().unwrap();
    let e = within(rt.send::<()>(ContextProbe {}, &id("nobody/k")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownAgentType { .. }), "{e}");
    let e = within(rt.send::<()>(ContextProbe {}, &id("counter/k")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::CantHandle { ref message_type, .. } if message_type == "ContextProbe"),
        "{e}"
    );
}

#[tokio::test]
async fn cases_38_42_54_publish_to_wasm_subscribers() {
    let rt = runtime_with(&[("echo", guests::ECHO)]).await;
    let echo = AgentType::new("echo").unwrap();
    rt.add_subscription(Subscription::type_subscription("probe", echo))
        .await
        .unwrap();
    rt.start().unwrap();
    let from = |s: &str| PublishOptions {
        sender: Some(id(s)),
        message_id: Some(MessageId::new("m-1")),
        ..Default::default()
    };
    // Sender echo/s1 is excluded from topic probe/s1; echo/s2 gets probe/s2.
    rt.publish_message(
        Message::new(ContextProbe {}),
        TopicId::new("probe", "s1").unwrap(),
        from("echo/s1"),
    )
    .await
    .unwrap();
    rt.publish_message(
        Message::new(ContextProbe {}),
        TopicId::new("probe", "s2").unwrap(),
        from("echo/s1"),
    )
    .await
    .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    let s2 = within(rt.agent_save_state(&id("echo/s2"))).await.unwrap();
    let probes: Vec<ContextView> = serde_json::from_value(s2.to_value()["probes"].clone()).unwrap();
    assert_eq!(
        probes,
        [ContextView {
            me: "echo/s2".into(),
            sender: Some("echo/s1".into()),
            topic: Some("probe/s2".into()),
            is_rpc: false,
            message_id: "m-1".into(),
        }]
    );
    let s1 = within(rt.agent_save_state(&id("echo/s1"))).await.unwrap();
    assert_eq!(s1.to_value()["probes"].as_array().map(|a| a.len()), Some(0));
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

#[tokio::test]
async fn cases_51_and_53_one_message_at_a_time_in_order() {
    let rt = runtime_with(&[("counter", guests::COUNTER)]).await;
    rt.start().unwrap();
    // 200 concurrent sends to one wasm agent: each sees the previous one's effect exactly once.
    let mut calls = Vec::new();
    for _ in 0..200 {
        let rt = rt.clone();
        calls.push(tokio::spawn(async move {
            rt.send::<Pong>(Inc { by: 1 }, &id("counter/one")).await
        }));
    }
    let mut seen = Vec::new();
    for c in calls {
        seen.push(within(c).await.unwrap().unwrap().i);
    }
    seen.sort();
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    // Publishes to the counter's `news` subscription all arrive.
    for i in 0..50 {
        rt.publish(News { i }, &TopicId::new("news", "one").unwrap())
            .await
            .unwrap();
    }
    within(rt.stop_when_idle()).await.unwrap();
    let s = within(rt.agent_save_state(&id("counter/one")))
        .await
        .unwrap();
    assert_eq!(s.to_value()["counter"], 250);
}
