//! Cases 66-80: lifecycle, state, lookup, tracing and serialization.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use warren_core::{
    Agent, AgentId, AgentRuntime, AgentState, AgentType, BoxError, Error, JsonSerializer, Message,
    MessageContext, MessageSerializer, Payload, RoutedAgent, Routes, SavedState, Subscription,
    Target, TopicId, async_trait,
};

use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[tokio::test]
async fn case_66_lifecycle_misuse_is_typed() {
    let rt = AgentRuntime::new();
    assert!(matches!(rt.stop().await, Err(Error::NotStarted)));
    assert!(matches!(rt.stop_when_idle().await, Err(Error::NotStarted)));
    assert!(matches!(
        rt.stop_when(|| true).await,
        Err(Error::NotStarted)
    ));
    rt.start().unwrap();
    assert!(matches!(rt.start(), Err(Error::AlreadyStarted)));
    assert!(matches!(
        rt.process_next().await,
        Err(Error::AlreadyStarted)
    ));
    rt.stop().await.unwrap();
}

#[tokio::test]
async fn case_67_restart_works() {
    let rt = AgentRuntime::new();
    rt.register_routed("name", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    for round in 0..3 {
        rt.start().unwrap();
        let r: MessageType = within(rt.send(MessageType::new(&round.to_string()), &id("name/k")))
            .await
            .unwrap();
        assert_eq!(r.text, round.to_string());
        within(rt.stop_when_idle()).await.unwrap();
    }
}

#[tokio::test]
async fn case_68_stop_fails_the_callers_whose_messages_it_discards() {
    let rt = AgentRuntime::new();
    let calls = Calls::default();
    let c = calls.clone();
    rt.register_routed("name", move |_| Loopback::new(c.clone()))
        .await
        .unwrap();
    let mut callers = Vec::new();
    for i in 0..3 {
        let rt2 = rt.clone();
        callers.push(tokio::spawn(async move {
            rt2.send::<MessageType>(MessageType::new(&i.to_string()), &id("name/k"))
                .await
        }));
    }
    within(async {
        while rt.unprocessed_messages_count() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    rt.start().unwrap();
    rt.stop().await.unwrap();
    for c in callers {
        // AutoGen: these callers never resolve.
        let e = within(c).await.unwrap().unwrap_err();
        assert!(
            matches!(e, Error::Stopped { target: Target::Agent(ref a) } if a.to_string() == "name/k"),
            "{e}"
        );
    }
    assert_eq!((calls.get(), rt.unprocessed_messages_count()), (0, 0));
}

struct Gate(Arc<tokio::sync::Notify>, Arc<AtomicBool>);
impl RoutedAgent for Gate {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut Gate, m: &MessageType, _| {
            Box::pin(async move {
                a.1.store(true, Ordering::SeqCst);
                a.0.notified().await;
                Ok::<_, BoxError>(m.clone())
            })
        });
    }
}

#[tokio::test]
async fn case_69_a_handler_running_at_stop_still_answers_its_caller() {
    let rt = AgentRuntime::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(AtomicBool::new(false));
    let (g, s) = (gate.clone(), started.clone());
    rt.register_routed("gate", move |_| Gate(g.clone(), s.clone()))
        .await
        .unwrap();
    rt.start().unwrap();
    let rt2 = rt.clone();
    let caller = tokio::spawn(async move {
        rt2.send::<MessageType>(MessageType::new("x"), &id("gate/k"))
            .await
    });
    within(async {
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    rt.stop().await.unwrap();
    gate.notify_one();
    // AutoGen delivers this response only after the next start().
    assert_eq!(within(caller).await.unwrap().unwrap().text, "x");
}

#[tokio::test]
async fn case_70_stop_when_returns_promptly() {
    let rt = AgentRuntime::new();
    rt.start().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.store(true, Ordering::SeqCst);
    });
    let t0 = Instant::now();
    within(rt.stop_when(move || flag.load(Ordering::SeqCst)))
        .await
        .unwrap();
    let waited = t0.elapsed();
    // AutoGen returns about 1.0 s after the call; Warren within one 10 ms poll of the condition.
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(!rt.is_started());
}

struct Closable(Calls);
#[async_trait]
impl Agent for Closable {
    async fn on_message(&mut self, m: Message, _: &MessageContext) -> Result<Message, Error> {
        Ok(m)
    }
    async fn close(&mut self) {
        self.0.hit();
    }
}

#[tokio::test]
async fn case_71_close_closes_every_instantiated_agent() {
    let rt = AgentRuntime::new();
    let closed = Calls::default();
    let c = closed.clone();
    rt.register_factory("cl", move |_| {
        let c = c.clone();
        async move { Ok::<_, BoxError>(Closable(c)) }
    })
    .await
    .unwrap();
    rt.get("cl", "a", false).await.unwrap();
    rt.get("cl", "b", false).await.unwrap();
    within(rt.close()).await.unwrap();
    assert_eq!(closed.get(), 2);
}

struct AlwaysFails;
impl RoutedAgent for AlwaysFails {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|_: &mut AlwaysFails, _m: &MessageType, _| {
            Err::<(), BoxError>("handler error".into())
        });
    }
    fn subscriptions(t: &AgentType) -> Vec<Subscription> {
        vec![Subscription::default_for(t.clone())]
    }
}

#[tokio::test]
async fn case_72_process_next_raises_background_errors() {
    let rt = AgentRuntime::builder()
        .ignore_unhandled_exceptions(false)
        .build();
    rt.register_routed("f", |_| AlwaysFails).await.unwrap();
    for _ in 0..3 {
        rt.publish(MessageType::new("x"), &TopicId::default_topic())
            .await
            .unwrap();
    }
    assert!(within(rt.process_next()).await.unwrap());
    let e = within(rt.process_next()).await.unwrap_err();
    assert!(e.to_string().contains("handler error"), "{e}");
    // AutoGen shuts its queue down here; Warren keeps serving the third message.
    assert!(within(rt.process_next()).await.unwrap());
}

#[derive(Default)]
struct Stateful {
    state: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Set(i64);
impl RoutedAgent for Stateful {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|a: &mut Stateful, m: &Set, _| {
            a.state = m.0;
            Ok::<_, BoxError>(a.state)
        });
    }
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::new(&json!({ "state": self.state }))?)
    }
    fn load_state(&mut self, s: AgentState) -> Result<(), BoxError> {
        self.state = s.to_value()["state"]
            .as_i64()
            .ok_or("state.state must be an integer")?;
        Ok(())
    }
}

#[tokio::test]
async fn case_73_state_moves_between_runtimes() {
    let a = AgentRuntime::new();
    a.register_routed("name1", |_| Stateful::default())
        .await
        .unwrap();
    a.start().unwrap();
    within(a.send::<i64>(Set(1), &id("name1/default")))
        .await
        .unwrap();
    let doc = within(a.save_state()).await.unwrap();
    assert_eq!(doc.to_value(), json!({ "name1/default": { "state": 1 } }));
    // Through text, as a state file would go.
    let text = serde_json::to_string(&doc).unwrap();
    assert_eq!(text, r#"{"name1/default":{"state":1}}"#);
    let b = AgentRuntime::new();
    b.register_routed("name1", |_| Stateful::default())
        .await
        .unwrap();
    within(b.load_state(serde_json::from_str::<SavedState>(&text).unwrap()))
        .await
        .unwrap();
    let s = b
        .try_get_underlying_agent_instance(&id("name1/default"), |s: &mut Stateful| s.state)
        .await
        .unwrap();
    assert_eq!(s, 1);
    assert_eq!(
        within(b.agent_save_state(&id("name1/default")))
            .await
            .unwrap()
            .to_value(),
        json!({ "state": 1 })
    );
}

#[tokio::test]
async fn load_state_takes_the_document_by_value_or_by_reference() {
    let doc = json!({
        "name1/a": { "state": 1 },
        "name1/b": { "state": 2 },
        "name1/c": { "state": 3 },
    });
    for by_value in [true, false] {
        let b = AgentRuntime::new();
        b.register_routed("name1", |_| Stateful::default())
            .await
            .unwrap();
        if by_value {
            within(b.load_state(doc.clone())).await.unwrap();
        } else {
            within(b.load_state(&doc)).await.unwrap();
        }
        // Every agent got its own entry, and the agents exist in document order.
        let saved = within(b.save_state()).await.unwrap();
        assert_eq!(saved.to_value(), doc, "by value: {by_value}");
        assert_eq!(
            saved.keys().collect::<Vec<_>>(),
            ["name1/a", "name1/b", "name1/c"]
        );
        // The same through a SavedState, by value and by reference.
        let c = AgentRuntime::new();
        c.register_routed("name1", |_| Stateful::default())
            .await
            .unwrap();
        if by_value {
            within(c.load_state(saved.clone())).await.unwrap();
        } else {
            within(c.load_state(&saved)).await.unwrap();
        }
        assert_eq!(within(c.save_state()).await.unwrap(), saved);
    }
}

#[tokio::test]
async fn a_key_that_appears_twice_loads_its_last_state() {
    // JSON allows it; serde_json and Python keep the later value, and so does a load.
    let text = r#"{"name1/a": {"state": 1}, "name1/b": {"state": 2}, "name1/a": {"state": 3}}"#;
    let doc: SavedState = serde_json::from_str(text).unwrap();
    assert_eq!(doc.len(), 3);
    assert_eq!(
        doc.get("name1/a").unwrap().to_value(),
        json!({ "state": 3 })
    );
    let b = AgentRuntime::new();
    b.register_routed("name1", |_| Stateful::default())
        .await
        .unwrap();
    within(b.load_state(doc)).await.unwrap();
    let saved = within(b.save_state()).await.unwrap();
    assert_eq!(
        saved.to_value(),
        json!({ "name1/a": { "state": 3 }, "name1/b": { "state": 2 } })
    );
}

/// Sets its state after a pause, so a state operation can arrive while it runs.
struct SlowStateful {
    state: i64,
    started: Arc<AtomicBool>,
}
impl RoutedAgent for SlowStateful {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut SlowStateful, m: &Set, _| {
            Box::pin(async move {
                a.started.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                a.state = m.0;
                Ok::<_, BoxError>(a.state)
            })
        });
    }
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::new(&json!({ "state": self.state }))?)
    }
}

#[tokio::test]
async fn a_state_operation_waits_for_the_running_handler() {
    let rt = AgentRuntime::new();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    rt.register_routed("slow", move |_| SlowStateful {
        state: 0,
        started: s.clone(),
    })
    .await
    .unwrap();
    rt.start().unwrap();
    let r = rt.clone();
    let call = tokio::spawn(async move { r.send::<i64>(Set(7), &id("slow/k")).await });
    within(async {
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Queued behind the running handler, it sees the state the handler left.
    let saved = within(rt.agent_save_state(&id("slow/k"))).await.unwrap();
    assert_eq!(saved.to_value(), json!({ "state": 7 }));
    assert_eq!(within(call).await.unwrap().unwrap(), 7);
}

#[tokio::test]
async fn malformed_state_documents_are_typed_and_change_nothing() {
    let b = AgentRuntime::new();
    b.register_routed("name1", |_| Stateful::default())
        .await
        .unwrap();
    let cases = [
        (json!([1, 2]), "<document>"),
        (json!({ "noslash": {} }), "noslash"),
        (
            json!({ "name1/a": { "state": 5 }, "ghost/x": {} }),
            "ghost/x",
        ),
        (json!({ "bad type/x": {} }), "bad type/x"),
    ];
    for (doc, key) in cases {
        match within(b.load_state(&doc)).await.unwrap_err() {
            Error::InvalidState { key: k, reason } => assert_eq!(k, key, "{reason}"),
            other => panic!("{other}"),
        }
    }
    assert_eq!(
        b.live_agents(),
        0,
        "validation happens before any agent is touched"
    );
    let e = within(b.load_state(&json!({ "name1/a": { "state": "nope" } })))
        .await
        .unwrap_err();
    match &e {
        Error::StateFailed {
            agent,
            op: "load",
            source,
        } => {
            assert_eq!(agent.to_string(), "name1/a");
            assert!(source.to_string().contains("must be an integer"), "{e}");
        }
        other => panic!("{other}"),
    }
}

/// An agent whose state cannot be saved.
struct Unsaveable;
impl RoutedAgent for Unsaveable {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|_: &mut Unsaveable, m: &Set, _| Ok::<_, BoxError>(m.0));
    }
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Err("disk full".into())
    }
}

#[tokio::test]
async fn a_failed_save_names_the_agent_and_keeps_its_error() {
    let rt = AgentRuntime::new();
    rt.register_routed("ok", |_| Stateful::default())
        .await
        .unwrap();
    rt.register_routed("bad", |_| Unsaveable).await.unwrap();
    rt.start().unwrap();
    within(rt.send::<i64>(Set(1), &id("ok/a"))).await.unwrap();
    within(rt.send::<i64>(Set(2), &id("bad/b"))).await.unwrap();
    match within(rt.save_state()).await.unwrap_err() {
        Error::StateFailed {
            agent,
            op: "save",
            source,
        } => {
            assert_eq!(agent.to_string(), "bad/b");
            assert_eq!(source.to_string(), "disk full");
        }
        other => panic!("{other}"),
    }
    // The runtime keeps serving: the agent that failed to save still answers.
    assert_eq!(
        within(rt.send::<i64>(Set(3), &id("bad/b"))).await.unwrap(),
        3
    );
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn case_75_get_lazy_and_eager() {
    let rt = AgentRuntime::new();
    rt.register_routed("echo", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    assert_eq!(
        rt.get("zzz", "default", true).await.unwrap(),
        id("zzz/default")
    );
    let e = rt.get("zzz", "default", false).await.unwrap_err();
    assert!(matches!(e, Error::UnknownAgentType { .. }));
    assert_eq!(rt.live_agents(), 0);
    rt.get("echo", "newkey", false).await.unwrap();
    assert_eq!(rt.live_agents(), 1);
}

#[tokio::test]
async fn case_76_underlying_instance_and_metadata() {
    let rt = AgentRuntime::new();
    rt.register_routed("echo", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    let e = rt
        .try_get_underlying_agent_instance(&id("echo/k"), |_: &mut Noop| ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongInstanceType { .. }), "{e}");
    let e = rt
        .try_get_underlying_agent_instance(&id("nope/k"), |_: &mut Noop| ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownAgentType { .. }), "{e}");
    let md = rt.agent_metadata(&id("echo/k2")).await.unwrap();
    assert_eq!(
        serde_json::to_value(&md).unwrap(),
        json!({ "type": "echo", "key": "k2", "description": "loopback" })
    );
}

#[tokio::test]
async fn case_77_spans_per_publish_create_and_process() {
    let cap = Capture::default();
    let _g = cap.install();
    let rt = AgentRuntime::new();
    rt.register_routed("name", |_| Loopback::new(Calls::default()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::default_for(AgentType::new("name").unwrap()))
        .await
        .unwrap();
    rt.start().unwrap();
    rt.publish(MessageType::new("p"), &TopicId::default_topic())
        .await
        .unwrap();
    within(rt.stop_when_idle()).await.unwrap();
    let spans = cap.spans.lock().clone();
    assert_eq!(
        spans,
        [
            "warren.publish topic=default/default",
            "warren.create agent=name/default",
            "warren.process agent=name/default"
        ]
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PydanticMessage {
    message: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Nested {
    inner: PydanticMessage,
    either: Option<i64>,
}

#[test]
fn case_78_and_79_json_serialization() {
    let s = JsonSerializer::<PydanticMessage>::new();
    assert_eq!(s.type_name(), "PydanticMessage");
    let m = PydanticMessage {
        message: "hello".into(),
    };
    let bytes = s.serialize(&m).unwrap();
    assert_eq!(bytes, br#"{"message":"hello"}"#);
    let back = s.deserialize(&bytes).unwrap();
    assert_eq!(back.downcast_ref::<PydanticMessage>(), Some(&m));
    // Case 79: nesting and optional (union) fields are fine in Warren; AutoGen's dataclass
    // serializer refuses them.
    let n = Nested {
        inner: m,
        either: None,
    };
    let p = Message::new(n.clone()).to_payload(None).unwrap();
    assert_eq!(Message::from_payload(p).decode::<Nested>().unwrap(), n);
}

struct StrSerializer;
impl MessageSerializer for StrSerializer {
    fn type_name(&self) -> &str {
        "CustomStr"
    }
    fn content_type(&self) -> &str {
        "str"
    }
    fn rust_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<String>()
    }
    fn serialize(&self, v: &(dyn std::any::Any + Send + Sync)) -> Result<Vec<u8>, BoxError> {
        Ok(v.downcast_ref::<String>()
            .ok_or("not a String")?
            .as_bytes()
            .to_vec())
    }
    fn deserialize(&self, d: &[u8]) -> Result<Message, BoxError> {
        Ok(Message::new(String::from_utf8(d.to_vec())?))
    }
}

#[test]
fn case_80_custom_content_type_round_trips() {
    let rt = AgentRuntime::new();
    rt.add_message_serializer(StrSerializer);
    let p = rt.serialize(&Message::new("hello".to_owned())).unwrap();
    assert_eq!(
        p,
        Payload {
            type_name: "CustomStr".into(),
            content_type: "str".into(),
            data: b"hello".to_vec()
        }
    );
    let back = rt.deserialize(&p).unwrap();
    assert_eq!(
        back.downcast_ref::<String>().map(String::as_str),
        Some("hello")
    );
    let e = rt
        .deserialize(&Payload {
            type_name: "agents.ProtoMessage".into(),
            content_type: "application/x-protobuf".into(),
            data: vec![],
        })
        .unwrap_err();
    assert!(matches!(e, Error::UnknownSerializer { .. }), "{e}");
}
