//! `Agent::on_message_now`: a handler that can answer without waiting answers in place, one that
//! gives the message back is awaited as usual, and a panic in either is a typed error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use warren_core::{
    Agent, AgentId, AgentRuntime, AgentType, Error, Message, MessageContext, Subscription, TopicId,
    async_trait,
};

use crate::common::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Q(i64);

#[derive(Default)]
struct Counts {
    now: AtomicUsize,
    later: AtomicUsize,
}

/// Doubles a non-negative `Q` at once; panics on `Q(-1)`; leaves other negatives to
/// `on_message`, which adds 1000.
struct Quick(Arc<Counts>);

#[async_trait]
impl Agent for Quick {
    fn on_message_now(
        &mut self,
        message: &Message,
        _ctx: &MessageContext,
    ) -> Option<Result<Message, Error>> {
        let Q(n) = message.downcast_ref::<Q>()?;
        assert_ne!(*n, -1, "now boom");
        if *n < 0 {
            return None;
        }
        self.0.now.fetch_add(1, Ordering::SeqCst);
        Some(Ok(Message::new(n * 2)))
    }

    async fn on_message(
        &mut self,
        message: Message,
        _ctx: &MessageContext,
    ) -> Result<Message, Error> {
        self.0.later.fetch_add(1, Ordering::SeqCst);
        let Q(n) = message.decode::<Q>()?;
        Ok(Message::new(n + 1000))
    }
}

#[tokio::test]
async fn a_handler_answers_in_place_or_gives_the_message_back() {
    let counts = Arc::new(Counts::default());
    let rt = AgentRuntime::new();
    let c = counts.clone();
    rt.register_factory("quick", move |_| {
        let c = c.clone();
        async move { Ok::<_, warren_core::BoxError>(Quick(c)) }
    })
    .await
    .unwrap();
    rt.start().unwrap();
    let a: AgentId = "quick/1".parse().unwrap();

    assert_eq!(within(rt.send::<i64>(Q(21), &a)).await.unwrap(), 42);
    assert_eq!(counts.now.load(Ordering::SeqCst), 1);
    assert_eq!(counts.later.load(Ordering::SeqCst), 0, "answered in place");

    assert_eq!(within(rt.send::<i64>(Q(-5), &a)).await.unwrap(), 995);
    assert_eq!(
        counts.later.load(Ordering::SeqCst),
        1,
        "given back, then awaited"
    );

    let e = within(rt.send::<i64>(Q(-1), &a)).await.unwrap_err();
    match &e {
        Error::HandlerPanicked { agent, panic, .. } => {
            assert_eq!(agent, &a);
            assert!(panic.contains("now boom"), "{panic}");
        }
        other => panic!("expected HandlerPanicked, got {other}"),
    }
    assert_eq!(
        within(rt.send::<i64>(Q(4), &a)).await.unwrap(),
        8,
        "the agent keeps serving after a panic"
    );

    // A publish goes the same way (its answer is dropped).
    rt.add_subscription(Subscription::type_subscription(
        "t",
        AgentType::new("quick").unwrap(),
    ))
    .await
    .unwrap();
    within(rt.publish(Q(1), &TopicId::new("t", "1").unwrap()))
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    assert_eq!(counts.now.load(Ordering::SeqCst), 3);
    assert_eq!(counts.later.load(Ordering::SeqCst), 1);
}
