//! Helpers shared by the integration tests: message types, small agents, a bounded wait, and a
//! tracing capture.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use warren_core::{BoxError, MessageContext, RoutedAgent, Routes};

/// Every await on runtime work goes through this: a bug fails the test instead of hanging CI.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out after 10 s: this would have hung")
}

/// AutoGen's test `MessageType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageType {
    pub text: String,
}

impl MessageType {
    pub fn new(t: &str) -> Self {
        Self { text: t.to_owned() }
    }
}

/// A message type nobody handles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unhandled {
    pub n: i64,
}

/// A shared call counter handed to agents through their factory.
#[derive(Debug, Default, Clone)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// AutoGen's `LoopbackAgent`: handles `MessageType` (send and publish), counts, returns it.
#[derive(Debug)]
pub struct Loopback {
    pub calls: Calls,
    pub received: Vec<String>,
}

impl Loopback {
    pub fn new(calls: Calls) -> Self {
        Self {
            calls,
            received: Vec::new(),
        }
    }
}

impl RoutedAgent for Loopback {
    fn routes(r: &mut Routes<Self>) {
        r.message_sync(|a: &mut Loopback, m: &MessageType, _ctx: &MessageContext| {
            a.calls.hit();
            a.received.push(m.text.clone());
            Ok::<_, BoxError>(m.clone())
        });
    }
    fn description(&self) -> String {
        "loopback".to_owned()
    }
}

/// AutoGen's `NoopAgent`: handles nothing.
#[derive(Debug)]
pub struct Noop;

impl RoutedAgent for Noop {
    fn routes(_: &mut Routes<Self>) {}
}

/// One captured tracing event or span.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: tracing::Level,
    pub text: String,
}

/// Captures events (message plus fields) and span names while the guard is alive. Use with a
/// current-thread runtime: the subscriber is installed for this thread only.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub events: Arc<Mutex<Vec<Captured>>>,
    pub spans: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(CaptureLayer(self.clone()));
        tracing::subscriber::set_default(sub)
    }

    pub fn has_event(&self, level: tracing::Level, needle: &str) -> bool {
        self.count(level, needle) > 0
    }

    /// How many events at `level` carry `needle`.
    pub fn count(&self, level: tracing::Level, needle: &str) -> usize {
        self.events
            .lock()
            .iter()
            .filter(|e| e.level == level && e.text.contains(needle))
            .count()
    }
}

struct CaptureLayer(Capture);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0.events.lock().push(Captured {
            level: *event.metadata().level(),
            text: f.0,
        });
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields(String::new());
        attrs.record(&mut f);
        self.0
            .spans
            .lock()
            .push(format!("{}{}", attrs.metadata().name(), f.0));
    }
}
