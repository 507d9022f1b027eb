//! Cases 56-65: intervention handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use warren_core::{
    AgentId, AgentRuntime, AgentType, BoxError, Error, Intervention, InterventionHandler,
    InterventionStage, Message, MessageContext, PublishContext, SendOptions, Subscription, TopicId,
    async_trait,
};

use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[derive(Default, Clone)]
struct Counting {
    send: Arc<AtomicUsize>,
    publish: Arc<AtomicUsize>,
    response: Arc<AtomicUsize>,
}

#[async_trait]
impl InterventionHandler for Counting {
    async fn on_send(
        &self,
        m: Message,
        _: &MessageContext,
        _: &AgentId,
    ) -> Result<Intervention, BoxError> {
        self.send.fetch_add(1, Ordering::SeqCst);
        Ok(Intervention::Forward(m))
    }
    async fn on_publish(&self, m: Message, _: &PublishContext) -> Result<Intervention, BoxError> {
        self.publish.fetch_add(1, Ordering::SeqCst);
        Ok(Intervention::Forward(m))
    }
    async fn on_response(
        &self,
        m: Message,
        _: &AgentId,
        _: Option<&AgentId>,
    ) -> Result<Intervention, BoxError> {
        self.response.fetch_add(1, Ordering::SeqCst);
        Ok(Intervention::Forward(m))
    }
}

#[tokio::test]
async fn case_56_interventions_see_every_message() {
    let h = Counting::default();
    let rt = AgentRuntime::builder()
        .intervention_handler(h.clone())
        .build();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("name", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    within(rt.send::<MessageType>(MessageType::new("x"), &id("name/default")))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    let n = |a: &Arc<AtomicUsize>| a.load(Ordering::SeqCst);
    assert_eq!((n(&h.send), n(&h.response), calls.get()), (1, 1, 1));
    rt.add_subscription(Subscription::default_for(AgentType::new("name").unwrap()))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("p"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!((n(&h.publish), calls.get()), (1, 2));
}

#[derive(Debug)]
struct InterventionException;
impl std::fmt::Display for InterventionException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterventionException")
    }
}
impl std::error::Error for InterventionException {}

/// What a hook does at its stage.
#[derive(Clone, Copy)]
enum Act {
    Drop,
    Raise,
}

/// Drops or raises at one stage, forwards everything else.
struct At(InterventionStage, Act);

fn drop_at(stage: InterventionStage) -> At {
    At(stage, Act::Drop)
}

fn raise_at(stage: InterventionStage) -> At {
    At(stage, Act::Raise)
}

impl At {
    fn decide(&self, stage: InterventionStage, m: Message) -> Result<Intervention, BoxError> {
        match (self.0 == stage, self.1) {
            (false, _) => Ok(Intervention::Forward(m)),
            (true, Act::Drop) => Ok(Intervention::Drop),
            (true, Act::Raise) => Err(Box::new(InterventionException)),
        }
    }
}

#[async_trait]
impl InterventionHandler for At {
    async fn on_send(
        &self,
        m: Message,
        _: &MessageContext,
        _: &AgentId,
    ) -> Result<Intervention, BoxError> {
        self.decide(InterventionStage::Send, m)
    }
    async fn on_publish(&self, m: Message, _: &PublishContext) -> Result<Intervention, BoxError> {
        self.decide(InterventionStage::Publish, m)
    }
    async fn on_response(
        &self,
        m: Message,
        _: &AgentId,
        _: Option<&AgentId>,
    ) -> Result<Intervention, BoxError> {
        self.decide(InterventionStage::Response, m)
    }
}

async fn runtime_with(h: impl InterventionHandler) -> (AgentRuntime, Calls) {
    let rt = AgentRuntime::builder().intervention_handler(h).build();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("name", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::default_for(AgentType::new("name").unwrap()))
        .await
        .unwrap();
    rt.start().unwrap();
    (rt, calls)
}

#[tokio::test]
async fn case_57_and_65_dropped_send_fails_the_caller_and_idle_still_returns() {
    let (rt, calls) = runtime_with(drop_at(InterventionStage::Send)).await;
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("name/default")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::MessageDropped { stage: InterventionStage::Send, ref message_type, .. } if message_type == "MessageType"),
        "{e}"
    );
    assert_eq!(calls.get(), 0);
    // Case 65: AutoGen's stop_when_idle never returns after a drop.
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn case_58_dropped_response_fails_the_caller() {
    let (rt, calls) = runtime_with(drop_at(InterventionStage::Response)).await;
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("name/default")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageDropped {
                stage: InterventionStage::Response,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(calls.get(), 1);
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn case_59_failing_on_send_reaches_the_caller_with_its_type() {
    let (rt, calls) = runtime_with(raise_at(InterventionStage::Send)).await;
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("name/default")))
        .await
        .unwrap_err();
    match &e {
        Error::InterventionFailed {
            stage: InterventionStage::Send,
            source,
            ..
        } => {
            assert!(source.downcast_ref::<InterventionException>().is_some())
        }
        other => panic!("{other}"),
    }
    assert_eq!(calls.get(), 0);
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn case_60_failing_on_response_after_the_handler_ran() {
    let (rt, calls) = runtime_with(raise_at(InterventionStage::Response)).await;
    let e = within(rt.send::<MessageType>(MessageType::new("x"), &id("name/default")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InterventionFailed {
                stage: InterventionStage::Response,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn case_61_dropped_or_failed_publish_is_reported_to_the_publisher() {
    let (rt, calls) = runtime_with(drop_at(InterventionStage::Publish)).await;
    let e = rt
        .publish(MessageType::new("x"), &TopicId::default_topic())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MessageDropped {
                stage: InterventionStage::Publish,
                ..
            }
        ),
        "{e}"
    );
    within(rt.stop_when_idle()).await.unwrap();
    let (rt2, calls2) = runtime_with(raise_at(InterventionStage::Publish)).await;
    let e = rt2
        .publish(MessageType::new("x"), &TopicId::default_topic())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InterventionFailed {
                stage: InterventionStage::Publish,
                ..
            }
        ),
        "{e}"
    );
    within(rt2.stop_when_idle()).await.unwrap();
    assert_eq!((calls.get(), calls2.get()), (0, 0));
}

struct Rewrite(fn(&str) -> String);

#[async_trait]
impl InterventionHandler for Rewrite {
    async fn on_send(
        &self,
        m: Message,
        _: &MessageContext,
        _: &AgentId,
    ) -> Result<Intervention, BoxError> {
        let text = m.decode::<MessageType>()?.text;
        Ok(Intervention::Forward(Message::new(MessageType::new(
            &(self.0)(&text),
        ))))
    }
}

#[tokio::test]
async fn case_62_interventions_compose() {
    let rt = AgentRuntime::builder()
        .intervention_handler(Rewrite(|s| s.to_uppercase()))
        .intervention_handler(Rewrite(|s| format!("{s}!")))
        .build();
    rt.register_routed("name", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.start().unwrap();
    let r: MessageType = within(rt.send(MessageType::new("hi"), &id("name/k")))
        .await
        .unwrap();
    // AutoGen gives "hi!": only the last replacement wins.
    assert_eq!(r.text, "HI!");
    // Case 63 (a hook returning None) cannot be written: a hook returns Forward or Drop.
}

/// (responder, original sender) per response.
type Peers = Vec<(String, Option<String>)>;

#[derive(Default, Clone)]
struct ResponsePeers(Arc<Mutex<Peers>>);

#[async_trait]
impl InterventionHandler for ResponsePeers {
    async fn on_response(
        &self,
        m: Message,
        sender: &AgentId,
        recipient: Option<&AgentId>,
    ) -> Result<Intervention, BoxError> {
        self.0
            .lock()
            .push((sender.to_string(), recipient.map(|r| r.to_string())));
        Ok(Intervention::Forward(m))
    }
}

#[tokio::test]
async fn case_64_on_response_sees_responder_and_original_sender() {
    let peers = ResponsePeers::default();
    let rt = AgentRuntime::builder()
        .intervention_handler(peers.clone())
        .build();
    rt.register_routed("name", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.start().unwrap();
    within(rt.send::<MessageType>(MessageType::new("x"), &id("name/k")))
        .await
        .unwrap();
    within(rt.send_message(
        Message::new(MessageType::new("y")),
        id("name/k"),
        SendOptions {
            sender: Some(id("name/caller")),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        *peers.0.lock(),
        [
            ("name/k".to_owned(), None),
            ("name/k".to_owned(), Some("name/caller".to_owned()))
        ]
    );
}
