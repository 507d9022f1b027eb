//! [`AgentRuntime`]: registration, routing, the queue, state and lifecycle.
//!
//! # Execution model
//! - Each live agent is a cell with its own FIFO mailbox; one message at a time per
//!   agent, different agents concurrently on whatever tokio runtime the caller uses.
//! - While the runtime is **started**, a send to an idle agent runs inline on the caller's task and
//!   a publish is queued into each recipient's mailbox.
//! - While it is **not started**, sends and publishes wait in one global FIFO queue (AutoGen's queue)
//!   until `start()` or `process_next()` dispatches them. `unprocessed_messages_count` counts that
//!   queue plus every mailbox backlog.
//! - A send made from inside a handler records "this agent waits for that one" in a wait-for
//!   graph. A send that would close a cycle (A->A, A->B->A, or two chains waiting on each other)
//!   fails at once with [`Error::CallCycle`] instead of deadlocking.
//!
//! # Accounting
//! `outstanding` counts every accepted message until its handler has finished (or it has been
//! failed); idle means zero. Every path that accepts a message also decrements it, including drops
//! and failures in interventions, so `stop_when_idle` cannot hang on them (AutoGen's can).

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::agent::{Agent, AgentContext, AgentMetadata, MessageContext};
use crate::cell::{Cell, Claim, Delivery, Detach, Job, Published, Slot};
use crate::error::{BoxError, Error, InterventionStage, Target};
use crate::id::{AgentId, AgentType, MessageId, SubscriptionId, TopicId};
use crate::intervention::{Intervention, InterventionHandler, PublishContext};
use crate::message::{Message, MessageSerializer, SerializerRegistry};
use crate::routed::{Routed, RoutedAgent, build_routes};
use crate::state::{AgentState, SavedState, StateDocument};
use crate::subscription::{Subscription, SubscriptionManager};

/// A factory producing boxed agents.
pub type DynFactory =
    dyn Fn(AgentContext) -> BoxFuture<'static, Result<Box<dyn Agent>, BoxError>> + Send + Sync;

/// The Rust type a factory must produce (AutoGen's `expected_class`).
#[derive(Debug, Clone, Copy)]
pub struct ExpectedType {
    id: TypeId,
    name: &'static str,
}

impl ExpectedType {
    /// Expect a `T` (checked against [`Agent::underlying`], or the agent itself).
    pub fn of<T: Any>() -> Self {
        Self {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }
}

pub(crate) enum TypeEntry {
    Factory {
        factory: Arc<DynFactory>,
        expected: Option<ExpectedType>,
    },
    Instances {
        rust_type: TypeId,
        rust_name: &'static str,
    },
}

/// Options for [`AgentRuntime::send_message`].
#[derive(Debug, Default, Clone)]
pub struct SendOptions {
    /// The sending agent; `None` for an external caller.
    pub sender: Option<AgentId>,
    /// Cancels the wait for the response (the handler keeps running unless it watches the token).
    pub cancellation_token: Option<CancellationToken>,
    /// The message id; generated when `None`.
    pub message_id: Option<MessageId>,
}

/// Options for [`AgentRuntime::publish_message`].
#[derive(Debug, Default, Clone)]
pub struct PublishOptions {
    /// The publishing agent; it does not receive its own message.
    pub sender: Option<AgentId>,
    /// Shared by every recipient's context.
    pub cancellation_token: Option<CancellationToken>,
    /// The message id; generated when `None`.
    pub message_id: Option<MessageId>,
}

/// Options for [`AgentRuntime::register_routed_with`] (AutoGen's `BaseAgent.register` flags).
#[derive(Debug, Default, Clone, Copy)]
pub struct RegisterOptions {
    /// Do not add [`RoutedAgent::subscriptions`].
    pub skip_class_subscriptions: bool,
    /// Do not add the `TypePrefix("<type>:")` direct-message subscription.
    pub skip_direct_message_subscription: bool,
}

/// Default capacity of one agent's mailbox.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 4096;

/// Default bound on all messages waiting in one runtime.
pub const DEFAULT_MAX_QUEUED: usize = 1_000_000;

/// How deep inline (same-task) nested deliveries may go before the runtime hands the next one to a
/// fresh task. Keeps the poll stack bounded for long chains without limiting their length.
const MAX_INLINE_DEPTH: u32 = 16;

/// How a send waits for its answer: delivered in place on the sender's task, or from the
/// recipient's mailbox through a reply channel.
enum Wait {
    InPlace(Detach<Result<Message, Error>>),
    Reply(Option<oneshot::Receiver<Result<Message, Error>>>),
}

/// A drainer yields to the scheduler after this many jobs so one busy agent cannot starve others.
const DRAIN_BATCH: usize = 64;

/// The handler currently running on this task: its agent's cell (for wait-for edges; one
/// reference count per delivery, where the agent's id would be two), and its inline depth.
struct Frame {
    /// The runtime running the handler (its `Inner`'s address): a handler may also use another
    /// runtime, whose wait-for graph and agents its own agent is no part of.
    runtime: usize,
    cell: Arc<Cell>,
    depth: u32,
}

impl Inner {
    /// This runtime's identity in a [`Frame`].
    fn frame_id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// `f` of the running task's handler frame, if it is one of this runtime's handlers.
    fn with_own_frame<R>(self: &Arc<Self>, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        let me = self.frame_id();
        FRAME
            .try_with(|frame| (frame.runtime == me).then(|| f(frame)))
            .ok()
            .flatten()
    }
}

tokio::task_local! {
    static FRAME: Frame;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Stopped,
    /// Started; the global queue is still being dispatched in order.
    Draining,
    Running,
}

enum Envelope {
    Send {
        message: Message,
        ctx: MessageContext,
        reply: oneshot::Sender<Result<Message, Error>>,
    },
    Publish {
        message: Message,
        topic: TopicId,
        sender: Option<AgentId>,
        token: Option<CancellationToken>,
        message_id: MessageId,
    },
}

struct Lifecycle {
    state: RunState,
    queue: VecDeque<Envelope>,
    background_error: Option<Error>,
}

/// The runtime's internal maps, looked up on every message: foldhash instead of SipHash (seeded
/// per process, so keys chosen by callers cannot be precomputed to collide).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub(crate) struct Inner {
    types: RwLock<FastMap<AgentType, Arc<TypeEntry>>>,
    agents: RwLock<FastMap<AgentId, Arc<Cell>>>,
    subscriptions: SubscriptionManager,
    serializers: RwLock<SerializerRegistry>,
    interventions: Vec<Arc<dyn InterventionHandler>>,
    ignore_unhandled_exceptions: bool,
    running: AtomicBool,
    lifecycle: Mutex<Lifecycle>,
    queued: AtomicUsize,
    outstanding: AtomicUsize,
    idle_waiters: AtomicUsize,
    idle: Notify,
    /// The wait-for graph: by the waiting agent's cell (its address), whom it waits for.
    waits: Mutex<FastMap<usize, Waiting>>,
    next_seq: AtomicU64,
    /// Default mailbox capacity, and per-type overrides.
    mailbox_capacity: usize,
    mailbox_overrides: RwLock<FastMap<AgentType, usize>>,
    /// The most messages that may wait in this runtime at once (all mailboxes and the queue).
    max_queued: usize,
}

/// An agent looked up once ([`AgentRuntime::resolve`]), for repeated sends
/// ([`AgentRuntime::send_message_to`]). Cheap to clone.
///
/// It holds the agent weakly: agents keep references to the agents they send to (a wasm
/// instance keeps the recipients it resolved), and two agents that send to each other would
/// otherwise keep each other alive after their runtime is dropped.
#[derive(Clone)]
pub struct AgentRef {
    id: AgentId,
    cell: std::sync::Weak<Cell>,
    /// The runtime that resolved it. (Held weakly too; while it is held no other runtime can be
    /// allocated at that address, so comparing addresses tells runtimes apart.)
    runtime: std::sync::Weak<Inner>,
}

impl AgentRef {
    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }
}

impl std::fmt::Debug for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AgentRef").field(&self.id).finish()
    }
}

/// The agent runtime. Cheap to clone: clones share one runtime.
#[derive(Clone)]
pub struct AgentRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRuntime")
            .field("state", &self.inner.lifecycle.lock().state)
            .field("agents", &self.inner.agents.read().len())
            .field(
                "outstanding",
                &self.inner.outstanding.load(Ordering::Relaxed),
            )
            .finish()
    }
}

/// Configures an [`AgentRuntime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    interventions: Vec<Arc<dyn InterventionHandler>>,
    ignore_unhandled_exceptions: Option<bool>,
    mailbox_capacity: Option<usize>,
    max_queued: Option<usize>,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("interventions", &self.interventions.len())
            .field(
                "ignore_unhandled_exceptions",
                &self.ignore_unhandled_exceptions,
            )
            .finish()
    }
}

impl RuntimeBuilder {
    /// Adds an intervention handler; handlers run in the order added and compose.
    pub fn intervention_handler(mut self, h: impl InterventionHandler) -> Self {
        self.interventions.push(Arc::new(h));
        self
    }

    /// When `false`, a failing event handler becomes a background error raised by the next
    /// `process_next`, `stop`, `stop_when_idle` or `stop_when`. Default `true` (log only).
    pub fn ignore_unhandled_exceptions(mut self, ignore: bool) -> Self {
        self.ignore_unhandled_exceptions = Some(ignore);
        self
    }

    /// The most messages that may wait in one agent's mailbox (default
    /// [`DEFAULT_MAILBOX_CAPACITY`]). When it is full, a send fails at once with
    /// [`Error::LimitExceeded`] (`mailbox`) and a publish skips that recipient, reporting the same
    /// error; nothing waits unboundedly.
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = Some(n.max(1));
        self
    }

    /// The most messages that may wait in the whole runtime at once (default
    /// [`DEFAULT_MAX_QUEUED`]); beyond it new messages are refused with [`Error::LimitExceeded`]
    /// (`queue`). Gives each runtime (each tenant) its own bounded share.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = Some(n.max(1));
        self
    }

    /// Builds the runtime (not started).
    pub fn build(self) -> AgentRuntime {
        AgentRuntime {
            inner: Arc::new(Inner {
                types: RwLock::default(),
                agents: RwLock::default(),
                subscriptions: SubscriptionManager::default(),
                serializers: RwLock::default(),
                interventions: self.interventions,
                ignore_unhandled_exceptions: self.ignore_unhandled_exceptions.unwrap_or(true),
                running: AtomicBool::new(false),
                lifecycle: Mutex::new(Lifecycle {
                    state: RunState::Stopped,
                    queue: VecDeque::new(),
                    background_error: None,
                }),
                queued: AtomicUsize::new(0),
                outstanding: AtomicUsize::new(0),
                idle_waiters: AtomicUsize::new(0),
                idle: Notify::new(),
                waits: Mutex::default(),
                next_seq: AtomicU64::new(0),
                mailbox_capacity: self.mailbox_capacity.unwrap_or(DEFAULT_MAILBOX_CAPACITY),
                mailbox_overrides: RwLock::default(),
                max_queued: self.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
            }),
        }
    }
}

impl Default for AgentRuntime {
    fn default() -> Self {
        Self::new()
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

// ------------------------------------------------------------------------------------------------
// Registration, lookup, subscriptions
// ------------------------------------------------------------------------------------------------

impl AgentRuntime {
    /// A runtime with default settings, not started.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    #[cfg(test)]
    pub(crate) fn inner_for_tests(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    fn insert_type(&self, agent_type: &AgentType, entry: TypeEntry) -> Result<(), Error> {
        let mut types = self.inner.types.write();
        if let Some(existing) = types.get(agent_type) {
            return Err(match (&**existing, &entry) {
                (TypeEntry::Instances { .. }, TypeEntry::Factory { .. }) => {
                    Error::MixedRegistration {
                        agent_type: agent_type.clone(),
                    }
                }
                _ => Error::AgentTypeExists {
                    agent_type: agent_type.clone(),
                },
            });
        }
        types.insert(agent_type.clone(), Arc::new(entry));
        Ok(())
    }

    /// Registers a factory that builds agents of `agent_type` lazily, once per key, on the first
    /// message (or state load, or `get(.., lazy=false)`). The factory receives the agent's id and
    /// the runtime through its [`AgentContext`].
    pub async fn register_factory<A, F, Fut>(
        &self,
        agent_type: impl AsRef<str>,
        factory: F,
    ) -> Result<AgentType, Error>
    where
        A: Agent,
        F: Fn(AgentContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let factory: Arc<DynFactory> = Arc::new(move |ctx| {
            let fut = factory(ctx);
            Box::pin(async move { fut.await.map(|a| Box::new(a) as Box<dyn Agent>) })
        });
        self.register_factory_dyn(agent_type, factory, None).await
    }

    /// Registers a factory producing boxed agents, optionally checking what it builds against
    /// `expected` at instantiation (AutoGen's `expected_class`).
    pub async fn register_factory_dyn(
        &self,
        agent_type: impl AsRef<str>,
        factory: Arc<DynFactory>,
        expected: Option<ExpectedType>,
    ) -> Result<AgentType, Error> {
        let agent_type = AgentType::new(agent_type)?;
        self.insert_type(&agent_type, TypeEntry::Factory { factory, expected })?;
        Ok(agent_type)
    }

    /// Registers a [`RoutedAgent`] type the way AutoGen's `BaseAgent.register` does: the factory,
    /// the class subscriptions, the `"<type>:"` direct-message prefix subscription, and JSON
    /// serializers for every handled type.
    pub async fn register_routed<A, F>(
        &self,
        agent_type: impl AsRef<str>,
        factory: F,
    ) -> Result<AgentType, Error>
    where
        A: RoutedAgent,
        F: Fn(AgentContext) -> A + Send + Sync + 'static,
    {
        self.register_routed_with(agent_type, factory, RegisterOptions::default())
            .await
    }

    /// [`AgentRuntime::register_routed`] with options.
    pub async fn register_routed_with<A, F>(
        &self,
        agent_type: impl AsRef<str>,
        factory: F,
        options: RegisterOptions,
    ) -> Result<AgentType, Error>
    where
        A: RoutedAgent,
        F: Fn(AgentContext) -> A + Send + Sync + 'static,
    {
        let routes = build_routes::<A>();
        let table = routes.clone();
        let factory: Arc<DynFactory> = Arc::new(move |ctx| {
            let agent = Routed {
                agent: factory(ctx),
                routes: table.clone(),
            };
            Box::pin(std::future::ready(Ok(Box::new(agent) as Box<dyn Agent>)))
        });
        let agent_type = self
            .register_factory_dyn(agent_type, factory, Some(ExpectedType::of::<A>()))
            .await?;
        if !options.skip_class_subscriptions {
            for s in A::subscriptions(&agent_type) {
                self.add_subscription(s).await?;
            }
        }
        if !options.skip_direct_message_subscription {
            self.add_subscription(Subscription::direct_message(agent_type.clone()))
                .await?;
        }
        {
            let mut reg = self.inner.serializers.write();
            for s in routes.serializers() {
                reg.add(s.clone());
            }
        }
        Ok(agent_type)
    }

    /// Registers one existing agent under `agent_id`. All instances of a type must share one Rust
    /// type, and a type cannot have both instances and a factory.
    pub async fn register_agent_instance<A: Agent>(
        &self,
        agent: A,
        agent_id: AgentId,
    ) -> Result<AgentId, Error> {
        self.register_boxed_instance(Box::new(agent), agent_id)
    }

    /// Registers a [`RoutedAgent`] value as an instance, plus the subscriptions AutoGen's
    /// `register_instance` adds: `TypeSubscription(topic_type=key, agent_type=type)` and the
    /// direct-message prefix subscription (ignored if it already exists).
    pub async fn register_routed_instance<A: RoutedAgent>(
        &self,
        agent: A,
        agent_id: AgentId,
    ) -> Result<AgentId, Error> {
        let routes = build_routes::<A>();
        let id = self.register_boxed_instance(
            Box::new(Routed {
                agent,
                routes: routes.clone(),
            }),
            agent_id,
        )?;
        self.add_subscription(Subscription::type_subscription(
            id.key(),
            id.agent_type().clone(),
        ))
        .await?;
        match self
            .add_subscription(Subscription::direct_message(id.agent_type().clone()))
            .await
        {
            Ok(()) | Err(Error::SubscriptionExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut reg = self.inner.serializers.write();
        for s in routes.serializers() {
            reg.add(s.clone());
        }
        Ok(id)
    }

    fn register_boxed_instance(
        &self,
        mut agent: Box<dyn Agent>,
        agent_id: AgentId,
    ) -> Result<AgentId, Error> {
        let rust_type = rust_type_of(&mut *agent);
        let rust_name = agent.underlying_type_name();
        let mut types = self.inner.types.write();
        let entry = match types.get(agent_id.agent_type()) {
            Some(e) => match &**e {
                TypeEntry::Factory { .. } => {
                    return Err(Error::MixedRegistration {
                        agent_type: agent_id.agent_type().clone(),
                    });
                }
                TypeEntry::Instances {
                    rust_type: t,
                    rust_name: n,
                } => {
                    if *t != rust_type {
                        return Err(Error::InstanceTypeMismatch {
                            agent_type: agent_id.agent_type().clone(),
                            expected: n,
                            actual: rust_name,
                        });
                    }
                    e.clone()
                }
            },
            None => {
                let e = Arc::new(TypeEntry::Instances {
                    rust_type,
                    rust_name,
                });
                types.insert(agent_id.agent_type().clone(), e.clone());
                e
            }
        };
        let mut agents = self.inner.agents.write();
        if agents.contains_key(&agent_id) {
            return Err(Error::AgentExists { agent: agent_id });
        }
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        agents.insert(
            agent_id.clone(),
            Arc::new(Cell::new(
                agent_id.clone(),
                seq,
                entry,
                self.inner.capacity_for(agent_id.agent_type()),
                Some(agent),
            )),
        );
        Ok(agent_id)
    }

    /// Overrides the mailbox capacity for one agent type (agents created from now on).
    pub fn set_mailbox_capacity(&self, agent_type: &AgentType, capacity: usize) {
        self.inner
            .mailbox_overrides
            .write()
            .insert(agent_type.clone(), capacity.max(1));
    }

    /// Whether `agent_type` is registered.
    pub fn is_registered(&self, agent_type: &AgentType) -> bool {
        self.inner.types.read().contains_key(agent_type)
    }

    /// The registered agent types.
    pub fn agent_types(&self) -> Vec<AgentType> {
        self.inner.types.read().keys().cloned().collect()
    }

    /// Adds a subscription; an equivalent one is [`Error::SubscriptionExists`].
    pub async fn add_subscription(&self, subscription: Subscription) -> Result<(), Error> {
        self.inner.subscriptions.add(subscription)
    }

    /// Removes a subscription; an unknown id is [`Error::UnknownSubscription`].
    pub async fn remove_subscription(&self, id: &SubscriptionId) -> Result<(), Error> {
        self.inner.subscriptions.remove(id).map(|_| ())
    }

    /// All subscriptions, in insertion order.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.subscriptions.list()
    }

    /// Registers a serializer for (its type name, its content type); a later one replaces an
    /// earlier one.
    pub fn add_message_serializer(&self, serializer: impl MessageSerializer) {
        self.inner.serializers.write().add(Arc::new(serializer));
    }

    /// Encodes a message with the registered serializers (or its built-in JSON encoding).
    pub fn serialize(&self, message: &Message) -> Result<crate::Payload, Error> {
        self.inner.serializers.read().serialize(message)
    }

    /// [`AgentRuntime::serialize`] for a message the caller owns: a payload is moved out, not
    /// copied.
    pub fn into_payload(&self, message: Message) -> Result<crate::Payload, Error> {
        message.into_payload(Some(&self.inner.serializers.read()))
    }

    /// The message's wire form, borrowed where it can be (see [`Message::encode`]), with this
    /// runtime's serializers; a native value's JSON goes into `buf`.
    pub fn encode<'a>(
        &self,
        message: &'a Message,
        buf: &'a mut Vec<u8>,
    ) -> Result<crate::Encoded<'a>, Error> {
        self.inner.encode(message, buf)
    }

    /// Decodes a payload with the serializer registered for its (type name, content type).
    pub fn deserialize(&self, payload: &crate::Payload) -> Result<Message, Error> {
        self.inner.serializers.read().deserialize(payload)
    }

    /// The id of `agent_type`/`key`. With `lazy = false` the agent is instantiated now, and an
    /// unregistered type is [`Error::UnknownAgentType`].
    pub async fn get(
        &self,
        agent_type: impl AsRef<str>,
        key: impl AsRef<str>,
        lazy: bool,
    ) -> Result<AgentId, Error> {
        let id = AgentId::new(agent_type, key)?;
        if !lazy {
            let cell = self.inner.cell_for(&id)?;
            self.inner.control(&cell, |_| Box::pin(async {})).await?;
        }
        Ok(id)
    }

    /// The agent's type, key and description; instantiates it if needed.
    pub async fn agent_metadata(&self, agent: &AgentId) -> Result<AgentMetadata, Error> {
        let cell = self.inner.cell_for(agent)?;
        self.inner.control(&cell, |_| Box::pin(async {})).await?;
        let description = cell.state.lock().description.clone();
        Ok(AgentMetadata {
            agent_type: agent.agent_type().to_string(),
            key: agent.key().to_owned(),
            description,
        })
    }

    /// One agent's state; instantiates it if needed.
    pub async fn agent_save_state(&self, agent: &AgentId) -> Result<AgentState, Error> {
        let cell = self.inner.cell_for(agent)?;
        let id = agent.clone();
        self.inner
            .control(&cell, move |a| {
                Box::pin(async move {
                    a.save_state().await.map_err(|source| Error::StateFailed {
                        agent: id,
                        op: "save",
                        source,
                    })
                })
            })
            .await?
    }

    /// Loads one agent's state; instantiates it if needed.
    pub async fn agent_load_state(
        &self,
        agent: &AgentId,
        state: impl Into<AgentState>,
    ) -> Result<(), Error> {
        let state = state.into();
        let cell = self.inner.cell_for(agent)?;
        let id = agent.clone();
        self.inner
            .control(&cell, move |a| {
                Box::pin(async move {
                    a.load_state(state)
                        .await
                        .map_err(|source| Error::StateFailed {
                            agent: id,
                            op: "load",
                            source,
                        })
                })
            })
            .await?
    }

    /// Runs `f` on the agent as its Rust type `T`, with exclusive access, after the messages queued
    /// before it (AutoGen's `try_get_underlying_agent_instance`; Rust cannot hand out a reference
    /// into an agent other tasks may be running, so it lends one to a closure instead).
    pub async fn try_get_underlying_agent_instance<T, R>(
        &self,
        agent: &AgentId,
        f: impl FnOnce(&mut T) -> R + Send + 'static,
    ) -> Result<R, Error>
    where
        T: Any,
        R: Send + 'static,
    {
        let cell = self.inner.cell_for(agent)?;
        let id = agent.clone();
        self.inner
            .control(&cell, move |a| {
                let actual = a.underlying_type_name();
                let wrapped = a.underlying().is_some();
                let target: &mut dyn Any = if wrapped {
                    a.underlying().expect("checked")
                } else {
                    &mut **a as &mut dyn Any
                };
                let out = match target.downcast_mut::<T>() {
                    Some(t) => Ok(f(t)),
                    None => Err(Error::WrongInstanceType {
                        agent: id,
                        requested: std::any::type_name::<T>(),
                        actual,
                    }),
                };
                Box::pin(std::future::ready(out))
            })
            .await?
    }

    /// Number of messages waiting: the not-started queue plus every mailbox backlog. Messages
    /// whose handler is running are not counted (as in AutoGen).
    pub fn unprocessed_messages_count(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Number of live (instantiated) agents.
    pub fn live_agents(&self) -> usize {
        self.inner
            .agents
            .read()
            .values()
            .filter(|c| c.is_instantiated())
            .count()
    }
}

/// The `TypeId` of what `try_get_underlying_agent_instance` would see: the wrapped value for
/// wrappers, the agent itself otherwise.
fn rust_type_of(agent: &mut dyn Agent) -> TypeId {
    match agent.underlying() {
        Some(u) => (*u).type_id(),
        None => {
            let any: &dyn Any = agent;
            (*any).type_id()
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Messaging
// ------------------------------------------------------------------------------------------------

impl AgentRuntime {
    /// Sends `message` to `recipient` and awaits its handler's response (AutoGen's
    /// `send_message`). See the crate docs for the errors and how they differ from AutoGen.
    ///
    /// Nothing happens until the future is first polled (the recipient is looked up then). The
    /// future is small (its arguments and a pointer: 168 bytes): the send's state goes in a box
    /// of its own when it starts, so callers that keep thousands of sends waiting in a `join_all`
    /// hold little memory per send.
    pub fn send_message(
        &self,
        message: Message,
        recipient: AgentId,
        options: SendOptions,
    ) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        self.inner.send_message(message, recipient, options)
    }

    /// Looks `agent` up once, for [`send_message_to`](Self::send_message_to): a send through the
    /// reference skips hashing the id and looking it up. The agent itself is still created
    /// lazily, by its first message. Fails like `send_message` for an unregistered type
    /// ([`Error::UnknownAgentType`]) or an unknown key of a type registered by instance
    /// ([`Error::UnknownAgent`]).
    pub fn resolve(&self, agent: &AgentId) -> Result<AgentRef, Error> {
        let cell = self.inner.cell_for(agent)?;
        Ok(AgentRef {
            id: cell.id.clone(),
            cell: Arc::downgrade(&cell),
            runtime: Arc::downgrade(&self.inner),
        })
    }

    /// [`send_message`](Self::send_message) to an agent resolved with [`resolve`](Self::resolve).
    /// A reference resolved by another runtime is looked up again by its id.
    pub async fn send_message_to(
        &self,
        message: Message,
        recipient: &AgentRef,
        options: SendOptions,
    ) -> Result<Message, Error> {
        // This runtime's own reference: its cell is alive (a runtime never drops a cell).
        let own = std::ptr::eq(recipient.runtime.as_ptr(), Arc::as_ptr(&self.inner));
        let cell = match own.then(|| recipient.cell.upgrade()).flatten() {
            Some(cell) => cell,
            None => self.inner.cell_for(&recipient.id)?,
        };
        traced(
            &recipient.id,
            Box::pin(self.inner.send(message, &recipient.id, cell, options)),
        )
        .await
    }

    /// Typed send: a serde value in, an `R` out (decoded from JSON if the recipient is a wasm agent).
    /// As small and as lazy as [`send_message`](Self::send_message)'s: the value is wrapped in a
    /// [`Message`] at once, and sent when the future is first polled.
    pub fn send<R>(
        &self,
        message: impl Serialize + Send + Sync + 'static,
        recipient: &AgentId,
    ) -> impl Future<Output = Result<R, Error>> + Send + '_
    where
        R: DeserializeOwned + Any + Send + Sync,
    {
        // `map`, not `async move { sent.await }`: that would hold the send's future twice.
        self.send_message(
            Message::new(message),
            recipient.clone(),
            SendOptions::default(),
        )
        .map(|sent| sent?.decode())
    }

    /// Publishes `message` to `topic` (AutoGen's `publish_message`). Returns once the message is
    /// routed into every recipient's mailbox; it does not wait for the handlers.
    pub async fn publish_message(
        &self,
        message: Message,
        topic: TopicId,
        options: PublishOptions,
    ) -> Result<(), Error> {
        let span = tracing::debug_span!("warren.publish", topic = %topic);
        let fut = self.inner.clone().publish(message, topic, options);
        if span.is_disabled() {
            fut.await
        } else {
            fut.instrument(span).await
        }
    }

    /// Typed publish.
    pub async fn publish(
        &self,
        message: impl Serialize + Send + Sync + 'static,
        topic: &TopicId,
    ) -> Result<(), Error> {
        self.publish_message(
            Message::new(message),
            topic.clone(),
            PublishOptions::default(),
        )
        .await
    }
}

/// An agent's outgoing edges in the wait-for graph: the cells it waits for, by address, and its
/// id to name a cycle. Agents are known by their cell's address (both cells outlive the edge: the
/// waiting handler holds its own, the send the recipient's), so an edge costs no reference counts.
/// An agent's entry stays when it waits for nobody any more (`on` empty), so its id is cloned once,
/// on its first send from a handler, not on every send: entries number the agents that ever sent
/// from a handler, as cells number the agents (a runtime drops neither).
struct Waiting {
    id: AgentId,
    on: smallvec::SmallVec<[usize; 1]>,
}

fn cell_key(cell: &Arc<Cell>) -> usize {
    Arc::as_ptr(cell) as usize
}

/// Removes a wait-for edge when the send that created it completes (or is dropped).
struct WaitEdge<'a> {
    inner: &'a Inner,
    from: usize,
    to: usize,
}

impl Drop for WaitEdge<'_> {
    fn drop(&mut self) {
        let mut g = self.inner.waits.lock();
        if let Some(w) = g.get_mut(&self.from)
            && let Some(i) = w.on.iter().position(|x| *x == self.to)
        {
            w.on.swap_remove(i);
        }
    }
}

impl Inner {
    /// See [`AgentRuntime::encode`]. The serializers are locked only for a native value not
    /// encoded yet (most messages reaching a wasm agent are bytes already).
    pub(crate) fn encode<'a>(
        &self,
        message: &'a Message,
        buf: &'a mut Vec<u8>,
    ) -> Result<crate::Encoded<'a>, Error> {
        match message.encoded() {
            Some(e) => Ok(e),
            None => message.encode(Some(&self.serializers.read()), buf),
        }
    }

    fn capacity_for(&self, t: &AgentType) -> usize {
        self.mailbox_overrides
            .read()
            .get(t)
            .copied()
            .unwrap_or(self.mailbox_capacity)
    }

    fn mailbox_full(&self, cell: &Cell) -> Error {
        Error::LimitExceeded {
            agent: cell.id.clone(),
            limit: "mailbox",
            value: format!("{} waiting messages", cell.capacity),
        }
    }

    /// Refuses a new waiting message when the runtime-wide quota is used up.
    fn check_queue(&self, agent: &AgentId) -> Result<(), Error> {
        if self.queued.load(Ordering::Relaxed) >= self.max_queued {
            return Err(self.queue_full(agent));
        }
        Ok(())
    }

    fn queue_full(&self, agent: &AgentId) -> Error {
        Error::LimitExceeded {
            agent: agent.clone(),
            limit: "queue",
            value: format!("{} waiting messages in this runtime", self.max_queued),
        }
    }

    /// The cell of `id`, created (empty) on first use. Unknown types and unknown instance keys are
    /// errors right away, before anything is queued.
    pub(crate) fn cell_for(&self, id: &AgentId) -> Result<Arc<Cell>, Error> {
        if let Some(c) = self.agents.read().get(id) {
            return Ok(c.clone());
        }
        let entry = self
            .types
            .read()
            .get(id.agent_type())
            .cloned()
            .ok_or_else(|| Error::UnknownAgentType {
                agent_type: id.agent_type().clone(),
            })?;
        if matches!(&*entry, TypeEntry::Instances { .. }) {
            return Err(Error::UnknownAgent { agent: id.clone() });
        }
        let mut agents = self.agents.write();
        let cell = agents.entry(id.clone()).or_insert_with(|| {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            Arc::new(Cell::new(
                id.clone(),
                seq,
                entry,
                self.capacity_for(id.agent_type()),
                None,
            ))
        });
        Ok(cell.clone())
    }

    /// Refuses a sender whose type is not registered. (A handler sending as its own agent is
    /// known without looking: types are never unregistered.)
    fn check_sender(self: &Arc<Self>, sender: &Option<AgentId>) -> Result<(), Error> {
        if let Some(s) = sender
            && self.with_own_frame(|f| f.cell.id == *s) != Some(true)
            && !self.types.read().contains_key(s.agent_type())
        {
            return Err(Error::UnknownAgentType {
                agent_type: s.agent_type().clone(),
            });
        }
        Ok(())
    }

    /// Records that `from` waits for `to`, unless that closes a cycle in the wait-for graph.
    fn wait_for<'a>(&'a self, from: &Arc<Cell>, to: &Arc<Cell>) -> Result<WaitEdge<'a>, Error> {
        let (f, t) = (cell_key(from), cell_key(to));
        if f == t {
            return Err(Error::CallCycle {
                chain: vec![from.id.clone(), to.id.clone()],
            });
        }
        let mut g = self.waits.lock();
        // Is there a path to -> ... -> from? Then `from` waiting for `to` closes a cycle. (Only
        // if `to` waits for someone itself: a nested send's recipient usually does not.)
        if g.get(&t).is_some_and(|w| !w.on.is_empty()) {
            let mut parent: FastMap<usize, usize> = FastMap::default();
            let mut stack: smallvec::SmallVec<[usize; 8]> = smallvec::smallvec![t];
            while let Some(n) = stack.pop() {
                if n == f {
                    // Every agent on the path but `from` waits for the next one: it is in `g`.
                    let id = |k: usize| match k == f {
                        true => from.id.clone(),
                        false => g[&k].id.clone(),
                    };
                    let mut path = vec![id(f)];
                    let mut cur = f;
                    while cur != t {
                        cur = parent[&cur];
                        path.push(id(cur));
                    }
                    path.reverse();
                    path.push(to.id.clone());
                    return Err(Error::CallCycle { chain: path });
                }
                if let Some(w) = g.get(&n) {
                    for m in &w.on {
                        if *m != t && !parent.contains_key(m) {
                            parent.insert(*m, n);
                            stack.push(*m);
                        }
                    }
                }
            }
        }
        let w = g.entry(f).or_insert_with(|| Waiting {
            id: from.id.clone(),
            on: smallvec::SmallVec::new(),
        });
        // An address names one cell for the runtime's life (it drops none); should that change,
        // a reused address must not keep the old agent's id.
        if !w.id.same(&from.id) {
            w.id = from.id.clone();
        }
        w.on.push(t);
        Ok(WaitEdge {
            inner: self,
            from: f,
            to: t,
        })
    }

    fn accept(&self) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) {
        self.done_n(1);
    }

    /// `n` accepted messages are finished (handled, refused or dropped).
    fn done_n(&self, n: usize) {
        if self.outstanding.fetch_sub(n, Ordering::SeqCst) == n
            && self.idle_waiters.load(Ordering::SeqCst) > 0
        {
            self.idle.notify_waiters();
        }
    }

    async fn wait_idle(&self) {
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.outstanding.load(Ordering::SeqCst) == 0 {
                break;
            }
            notified.await;
        }
        self.idle_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn record_background(&self, e: Error) {
        if self.ignore_unhandled_exceptions {
            return;
        }
        let mut lc = self.lifecycle.lock();
        if lc.background_error.is_none() {
            lc.background_error = Some(e);
        }
    }

    /// A send as callers await it ([`AgentRuntime::send_message`],
    /// [`MessageContext::send_message`]): looks the recipient up when first polled, then runs
    /// [`send`](Self::send) in a box. The send's own state is hundreds of bytes; outside the box
    /// the future holds only its arguments and the box, so a caller with thousands of sends
    /// waiting at once (a `join_all`) keeps, and the kernel faults in, a fraction of the memory.
    pub(crate) async fn send_message(
        self: &Arc<Self>,
        message: Message,
        recipient: AgentId,
        options: SendOptions,
    ) -> Result<Message, Error> {
        let cell = self.cell_for(&recipient)?;
        traced(
            &recipient,
            Box::pin(self.send(message, &recipient, cell, options)),
        )
        .await
    }

    async fn send(
        self: &Arc<Self>,
        message: Message,
        recipient: &AgentId,
        cell: Arc<Cell>,
        options: SendOptions,
    ) -> Result<Message, Error> {
        self.check_sender(&options.sender)?;
        // No token, nobody can cancel: nothing to watch (and nothing to allocate).
        let token = options.cancellation_token;
        // Only interventions need the sender again after the context takes it.
        let response_to = match self.interventions.is_empty() {
            true => None,
            false => options.sender.clone(),
        };
        let ctx = MessageContext {
            sender: options.sender,
            topic_id: None,
            is_rpc: true,
            message_id: options.message_id.unwrap_or_else(MessageId::generate),
            token: token.clone(),
            own_token: Default::default(),
            cell,
            runtime: self.clone(),
        };
        // A send from inside a handler: its agent now waits for the recipient, one level deeper.
        let (_edge, depth) =
            match self.with_own_frame(|f| (self.wait_for(&f.cell, &ctx.cell), f.depth + 1)) {
                Some((edge, depth)) => (Some(edge?), depth),
                None => (None, 0),
            };
        let target = || Target::Agent(recipient.clone());

        // One await per way of waiting, below: each await point keeps its own state in this
        // future, which `Inner::send_message` moves into a box for every send.
        let wait = if self.running.load(Ordering::Acquire) {
            // Interventions are boxed where they run: inline, their state would make every send's
            // future hundreds of bytes larger.
            let message = match self.interventions.is_empty() {
                true => message,
                false => Box::pin(self.intervene_send(message, &ctx)).await?,
            };
            self.check_queue(recipient)?;
            self.accept();
            let mut reply = None;
            let claim = ctx.cell.offer(depth < MAX_INLINE_DEPTH, true, || {
                let (tx, rx) = oneshot::channel();
                reply = Some(rx);
                self.queued.fetch_add(1, Ordering::SeqCst);
                Job::Deliver(Box::new(Delivery {
                    message: message.clone(),
                    ctx: ctx.clone(),
                    reply: tx,
                }))
            });
            match claim {
                Claim::Owned(slot) => Wait::InPlace(Detach::new(async move {
                    let mut slot = slot;
                    // The context's own runtime handle: no reference count of its own.
                    let inner = &ctx.runtime;
                    let r = inner
                        .deliver(&ctx.cell, &mut slot, message, &ctx, depth)
                        .await;
                    let r = ctx.reply(r);
                    inner.done();
                    inner.release(&ctx.cell, slot);
                    r
                })),
                Claim::Queued => Wait::Reply(reply),
                Claim::QueuedIdle(slot) => {
                    self.spawn_drain(ctx.cell.clone(), slot);
                    Wait::Reply(reply)
                }
                Claim::Full => {
                    self.done();
                    return Err(self.mailbox_full(&ctx.cell));
                }
            }
        } else {
            // Not started: wait in the global queue for start() or process_next().
            self.check_queue(recipient)?;
            let (tx, rx) = oneshot::channel();
            self.enqueue(Envelope::Send {
                message,
                ctx,
                reply: tx,
            });
            Wait::Reply(Some(rx))
        };
        let result = match wait {
            Wait::InPlace(fut) => match &token {
                Some(token) => tokio::select! {
                    biased;
                    _ = token.cancelled() => Err(Error::Cancelled { target: target() }),
                    r = fut => r,
                },
                None => fut.await,
            },
            Wait::Reply(reply) => self.await_reply(reply, &token, target).await,
        }?;
        match self.interventions.is_empty() {
            true => Ok(result),
            false => {
                Box::pin(self.intervene_response(result, recipient, response_to.as_ref())).await
            }
        }
    }

    async fn await_reply(
        &self,
        reply: Option<oneshot::Receiver<Result<Message, Error>>>,
        token: &Option<CancellationToken>,
        target: impl Fn() -> Target,
    ) -> Result<Message, Error> {
        let rx = reply.expect("a queued job has a reply channel");
        let stopped = |_| Err(Error::Stopped { target: target() });
        match token {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => Err(Error::Cancelled { target: target() }),
                r = rx => r.unwrap_or_else(stopped),
            },
            None => rx.await.unwrap_or_else(stopped),
        }
    }

    /// Puts an envelope on the global queue while the runtime is not running. If the caller raced
    /// with `start()` and the runtime runs by now, the envelope is dispatched directly instead.
    fn enqueue(self: &Arc<Self>, env: Envelope) {
        let mut lc = self.lifecycle.lock();
        if lc.state == RunState::Running {
            drop(lc);
            let inner = self.clone();
            tokio::spawn(async move { inner.dispatch(env).await });
            return;
        }
        self.accept();
        self.queued.fetch_add(1, Ordering::SeqCst);
        lc.queue.push_back(env);
    }

    /// Dispatches one envelope from the global queue: interventions, then into mailboxes.
    async fn dispatch(self: Arc<Self>, env: Envelope) {
        match env {
            Envelope::Send {
                message,
                ctx,
                reply,
            } => match self.intervene_send(message, &ctx).await {
                Ok(message) => {
                    self.accept();
                    self.queued.fetch_add(1, Ordering::SeqCst);
                    let cell = ctx.cell.clone();
                    let job = Job::Deliver(Box::new(Delivery {
                        message,
                        ctx,
                        reply,
                    }));
                    if let Err(refused) = self.queue_job(&cell, job) {
                        let (job, e) = *refused;
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                        self.done();
                        if let Job::Deliver(d) = job {
                            let _ = d.reply.send(Err(e));
                        }
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Envelope::Publish {
                message,
                topic,
                sender,
                token,
                message_id,
            } => {
                let pctx = PublishContext {
                    sender: sender.clone(),
                    topic_id: topic.clone(),
                    message_id: message_id.clone(),
                };
                match self.intervene_publish(message, &pctx).await {
                    Ok(message) => self.route_publish(message, topic, sender, token, message_id),
                    Err(e) => tracing::warn!(error = %e, "published message not delivered"),
                }
            }
        }
    }

    /// Queues a message job; a full mailbox hands the job back with the error.
    fn queue_job(self: &Arc<Self>, cell: &Arc<Cell>, job: Job) -> Result<(), Box<(Job, Error)>> {
        let mut job = Some(job);
        match cell.offer(false, true, || job.take().expect("offered once")) {
            Claim::QueuedIdle(slot) => self.spawn_drain(cell.clone(), slot),
            Claim::Full => {
                let job = job.take().expect("not queued");
                return Err(Box::new((job, self.mailbox_full(cell))));
            }
            Claim::Queued | Claim::Owned(_) => {}
        }
        Ok(())
    }

    fn spawn_drain(self: &Arc<Self>, cell: Arc<Cell>, slot: Slot) {
        let inner = self.clone();
        tokio::spawn(async move { inner.drain(cell, slot).await });
    }

    fn release(self: &Arc<Self>, cell: &Arc<Cell>, slot: Slot) {
        if let Some(slot) = cell.release(slot) {
            self.spawn_drain(cell.clone(), slot);
        }
    }

    async fn drain(self: Arc<Self>, cell: Arc<Cell>, mut slot: Slot) {
        let mut n = 0usize;
        let mut finished = Finished { inner: &self, n: 0 };
        while let Some(job) = cell.next_job(&mut slot) {
            match job {
                Job::Deliver(d) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    let Delivery {
                        message,
                        ctx,
                        reply,
                    } = *d;
                    let r = self.deliver(&cell, &mut slot, message, &ctx, 0).await;
                    let _ = reply.send(ctx.reply(r));
                    finished.n += 1;
                }
                Job::Publish(p) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    let (message, ctx) = p.open(cell.clone(), self.clone());
                    let r = self.deliver(&cell, &mut slot, message, &ctx, 0).await;
                    self.publish_outcome(&ctx, r);
                    finished.n += 1;
                }
                Job::Control(f) => {
                    finished.report();
                    f(&mut slot).await
                }
            }
            n += 1;
            if n.is_multiple_of(DRAIN_BATCH) {
                finished.report();
                tokio::task::yield_now().await;
            }
        }
    }

    fn publish_outcome(&self, ctx: &MessageContext, r: Result<Message, Error>) {
        match r {
            Ok(_) => {}
            Err(Error::CantHandle {
                agent,
                message_type,
            }) => {
                tracing::info!(agent = %agent, message_type, "unhandled message");
            }
            Err(e) => {
                tracing::error!(agent = %ctx.agent_id(), error = %e, "error processing publish message");
                self.record_background(e);
            }
        }
    }

    /// Builds the agent if the slot is empty.
    async fn ensure_agent(self: &Arc<Self>, cell: &Cell, slot: &mut Slot) -> Result<(), Error> {
        if slot.is_some() {
            return Ok(());
        }
        // Boxed: a factory's state is large and runs once per agent, while this future is part
        // of every delivery's.
        Box::pin(self.create_agent(cell, slot)).await
    }

    /// Builds the agent into the (empty) slot with its type's factory.
    async fn create_agent(self: &Arc<Self>, cell: &Cell, slot: &mut Slot) -> Result<(), Error> {
        let TypeEntry::Factory { factory, expected } = &*cell.entry else {
            return Err(Error::UnknownAgent {
                agent: cell.id.clone(),
            });
        };
        let ctx = AgentContext {
            id: cell.id.clone(),
            runtime: Arc::downgrade(self),
        };
        let span = tracing::debug_span!("warren.create", agent = %cell.id);
        let built = AssertUnwindSafe(factory(ctx))
            .catch_unwind()
            .instrument(span)
            .await;
        let mut agent = match built {
            Ok(Ok(a)) => a,
            Ok(Err(source)) => {
                tracing::error!(agent = %cell.id, error = %source, "error constructing agent");
                // A factory that failed with a runtime error (a quota, say) reports it as it is.
                return Err(match source.downcast::<Error>() {
                    Ok(e) => *e,
                    Err(source) => Error::FactoryFailed {
                        agent: cell.id.clone(),
                        source,
                    },
                });
            }
            Err(p) => {
                return Err(Error::FactoryFailed {
                    agent: cell.id.clone(),
                    source: format!("factory panicked: {}", panic_text(&*p)).into(),
                });
            }
        };
        if let Some(exp) = expected
            && rust_type_of(&mut *agent) != exp.id
        {
            return Err(Error::WrongAgentClass {
                agent_type: cell.id.agent_type().clone(),
                expected: exp.name,
                actual: agent.underlying_type_name(),
            });
        }
        {
            let mut st = cell.state.lock();
            st.instantiated = true;
            st.description = agent.description();
        }
        *slot = Some(agent);
        Ok(())
    }

    /// Runs one message through the agent's handler, constructing the agent first if needed.
    /// Panics are caught and reported as [`Error::HandlerPanicked`].
    async fn deliver(
        self: &Arc<Self>,
        cell: &Arc<Cell>,
        slot: &mut Slot,
        message: Message,
        ctx: &MessageContext,
        depth: u32,
    ) -> Result<Message, Error> {
        self.ensure_agent(cell, slot).await?;
        let agent = slot.as_mut().expect("ensured");
        // Only to name the message if the handler panics (a native type's name costs nothing).
        let for_panic = message.name_later();
        let panicked = |p: Box<dyn Any + Send>| Error::HandlerPanicked {
            agent: cell.id.clone(),
            message_type: for_panic.get(),
            panic: panic_text(&*p),
        };
        let span = tracing::debug_span!("warren.process", agent = %cell.id);
        // A handler that can answer without waiting answers here, in place.
        let now = {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            std::panic::catch_unwind(AssertUnwindSafe(|| agent.on_message_now(&message, ctx)))
        };
        match now {
            Ok(Some(r)) => return r,
            Ok(None) => {}
            Err(p) => return Err(panicked(p)),
        }
        let frame = Frame {
            runtime: self.frame_id(),
            cell: cell.clone(),
            depth,
        };
        let fut = FRAME.scope(frame, agent.on_message(message, ctx));
        let caught = AssertUnwindSafe(fut).catch_unwind();
        let outcome = if span.is_disabled() {
            caught.await
        } else {
            caught.instrument(span).await
        };
        outcome.unwrap_or_else(|p| Err(panicked(p)))
    }

    /// Runs a control operation with exclusive access to the (constructed) agent.
    async fn control<R, F>(self: &Arc<Self>, cell: &Arc<Cell>, f: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Box<dyn Agent>) -> BoxFuture<'a, R> + Send + 'static,
    {
        // An agent asking for exclusive access to itself from inside its own handler would wait
        // for itself forever.
        if self
            .with_own_frame(|f| Arc::ptr_eq(&f.cell, cell))
            .unwrap_or(false)
        {
            return Err(Error::CallCycle {
                chain: vec![cell.id.clone(), cell.id.clone()],
            });
        }
        let mut f = Some(f);
        let mut reply = None;
        let claim = cell.offer(true, false, || {
            let f = f.take().expect("offered once");
            let (tx, rx) = oneshot::channel();
            reply = Some(rx);
            let inner = self.clone();
            let c = cell.clone();
            Job::Control(Box::new(move |slot: &mut Slot| {
                Box::pin(async move {
                    let _ = tx.send(inner.run_control(&c, slot, f).await);
                })
            }))
        });
        match claim {
            // Idle: run it here, without a channel or a queued job.
            Claim::Owned(mut slot) => {
                let f = f.take().expect("not queued");
                let inner = self.clone();
                let cell = cell.clone();
                return Detach::new(async move {
                    let r = inner.run_control(&cell, &mut slot, f).await;
                    inner.release(&cell, slot);
                    r
                })
                .await;
            }
            Claim::Queued | Claim::Full => {}
            Claim::QueuedIdle(slot) => self.spawn_drain(cell.clone(), slot),
        }
        let rx = reply.expect("a queued control job has a reply channel");
        rx.await.unwrap_or_else(|_| {
            Err(Error::Stopped {
                target: Target::Agent(cell.id.clone()),
            })
        })
    }

    /// A control operation against the slot, building the agent first if needed.
    async fn run_control<R, F>(
        self: &Arc<Self>,
        cell: &Cell,
        slot: &mut Slot,
        f: F,
    ) -> Result<R, Error>
    where
        F: for<'a> FnOnce(&'a mut Box<dyn Agent>) -> BoxFuture<'a, R>,
    {
        self.ensure_agent(cell, slot).await?;
        Ok(f(slot.as_mut().expect("ensured")).await)
    }

    async fn intervene_send(
        &self,
        mut message: Message,
        ctx: &MessageContext,
    ) -> Result<Message, Error> {
        let target = || Target::Agent(ctx.agent_id().clone());
        for h in &self.interventions {
            let type_name = message.type_name();
            match h.on_send(message, ctx, ctx.agent_id()).await {
                Ok(Intervention::Forward(m)) => message = m,
                Ok(Intervention::Drop) => {
                    tracing::info!(recipient = %ctx.agent_id(), message_type = type_name, "message dropped by intervention handler");
                    return Err(Error::MessageDropped {
                        stage: InterventionStage::Send,
                        target: target(),
                        message_type: type_name,
                    });
                }
                Err(source) => {
                    return Err(Error::InterventionFailed {
                        stage: InterventionStage::Send,
                        target: target(),
                        source,
                    });
                }
            }
        }
        Ok(message)
    }

    async fn intervene_publish(
        &self,
        mut message: Message,
        ctx: &PublishContext,
    ) -> Result<Message, Error> {
        let target = || Target::Topic(ctx.topic_id.clone());
        for h in &self.interventions {
            let type_name = message.type_name();
            match h.on_publish(message, ctx).await {
                Ok(Intervention::Forward(m)) => message = m,
                Ok(Intervention::Drop) => {
                    tracing::info!(topic = %ctx.topic_id, message_type = type_name, "message dropped by intervention handler");
                    return Err(Error::MessageDropped {
                        stage: InterventionStage::Publish,
                        target: target(),
                        message_type: type_name,
                    });
                }
                Err(source) => {
                    return Err(Error::InterventionFailed {
                        stage: InterventionStage::Publish,
                        target: target(),
                        source,
                    });
                }
            }
        }
        Ok(message)
    }

    async fn intervene_response(
        &self,
        mut message: Message,
        responder: &AgentId,
        recipient: Option<&AgentId>,
    ) -> Result<Message, Error> {
        if self.interventions.is_empty() {
            return Ok(message);
        }
        let target = || Target::Agent(responder.clone());
        for h in &self.interventions {
            let type_name = message.type_name();
            match h.on_response(message, responder, recipient).await {
                Ok(Intervention::Forward(m)) => message = m,
                Ok(Intervention::Drop) => {
                    return Err(Error::MessageDropped {
                        stage: InterventionStage::Response,
                        target: target(),
                        message_type: type_name,
                    });
                }
                Err(source) => {
                    return Err(Error::InterventionFailed {
                        stage: InterventionStage::Response,
                        target: target(),
                        source,
                    });
                }
            }
        }
        Ok(message)
    }

    async fn publish(
        self: Arc<Self>,
        message: Message,
        topic: TopicId,
        options: PublishOptions,
    ) -> Result<(), Error> {
        self.check_sender(&options.sender)?;
        let token = options.cancellation_token;
        let message_id = options.message_id.unwrap_or_else(MessageId::generate);
        if !self.running.load(Ordering::Acquire) {
            let env = Envelope::Publish {
                message,
                topic,
                sender: options.sender,
                token,
                message_id,
            };
            self.enqueue(env);
            return Ok(());
        }
        let message = if self.interventions.is_empty() {
            message
        } else {
            let pctx = PublishContext {
                sender: options.sender.clone(),
                topic_id: topic.clone(),
                message_id: message_id.clone(),
            };
            self.intervene_publish(message, &pctx).await?
        };
        self.route_publish(message, topic, options.sender, token, message_id);
        Ok(())
    }

    /// Queues a published message into every recipient's mailbox (each recipient once, never the
    /// sender). A recipient that cannot be reached is reported without affecting the others.
    fn route_publish(
        self: &Arc<Self>,
        mut message: Message,
        topic: TopicId,
        sender: Option<AgentId>,
        token: Option<CancellationToken>,
        message_id: MessageId,
    ) {
        let recipients = self.subscriptions.recipients(&topic);
        if recipients.len() > 1 {
            // Wasm recipients then share one JSON encoding instead of making one each.
            message.share_encoding();
        }
        let published = Arc::new(Published {
            message,
            sender,
            topic,
            token,
            message_id,
        });
        let sender = published.sender.as_ref();
        // The recipients (never the sender) with their cells, under one read lock (cells that do
        // not exist yet are made below).
        let targets: smallvec::SmallVec<[Recipient<'_>; 16]> = {
            let agents = self.agents.read();
            recipients
                .iter()
                .filter(|r| Some(*r) != sender)
                .map(|r| (r, agents.get(r).cloned()))
                .collect()
        };
        let expected = targets.len();
        if expected == 0 {
            return;
        }
        // Counted once for the whole publish (two atomic operations instead of two per
        // recipient); what is not queued after all is given back below.
        self.outstanding.fetch_add(expected, Ordering::SeqCst);
        let already = self.queued.fetch_add(expected, Ordering::SeqCst);
        let mut queued = 0;
        for (r, cell) in targets {
            let outcome = cell.map_or_else(|| self.cell_for(r), Ok).and_then(|c| {
                // The runtime-wide quota, counted recipient by recipient over those queued.
                if already.saturating_add(queued) >= self.max_queued {
                    return Err(self.queue_full(r));
                }
                self.queue_job(&c, Job::Publish(published.clone()))
                    .map_err(|refusal| refusal.1)
            });
            match outcome {
                Ok(()) => queued += 1,
                Err(e) => {
                    tracing::error!(recipient = %r, topic = %published.topic, error = %e, "cannot deliver published message");
                    self.record_background(e);
                }
            }
        }
        let refused = expected - queued;
        if refused > 0 {
            self.queued.fetch_sub(refused, Ordering::SeqCst);
            self.done_n(refused);
        }
    }
}

/// A publish's recipient, with its cell if it exists already.
type Recipient<'a> = (&'a AgentId, Option<Arc<Cell>>);

/// Messages a drain loop has finished, reported as done (for idleness) in one go: before the
/// loop yields, runs a control job or ends (also if its task is dropped). While the loop holds
/// unreported messages it is itself busy, so the runtime cannot be idle meanwhile anyway.
/// (The waiting-message count is kept exact: a message leaves it when its handler starts.)
struct Finished<'a> {
    inner: &'a Inner,
    n: usize,
}

impl Finished<'_> {
    fn report(&mut self) {
        if self.n > 0 {
            self.inner.done_n(self.n);
            self.n = 0;
        }
    }
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.report();
    }
}

// ------------------------------------------------------------------------------------------------
// Lifecycle and state
// ------------------------------------------------------------------------------------------------

impl AgentRuntime {
    /// Starts processing: the global queue is dispatched in order, then messages flow directly.
    /// Must be called inside a tokio runtime. A second `start()` is [`Error::AlreadyStarted`].
    pub fn start(&self) -> Result<(), Error> {
        let mut lc = self.inner.lifecycle.lock();
        if lc.state != RunState::Stopped {
            return Err(Error::AlreadyStarted);
        }
        if lc.queue.is_empty() {
            lc.state = RunState::Running;
            self.inner.running.store(true, Ordering::Release);
        } else {
            lc.state = RunState::Draining;
            let inner = self.inner.clone();
            tokio::spawn(async move {
                loop {
                    let env = {
                        let mut lc = inner.lifecycle.lock();
                        if lc.state != RunState::Draining {
                            return;
                        }
                        match lc.queue.pop_front() {
                            Some(e) => e,
                            None => {
                                lc.state = RunState::Running;
                                inner.running.store(true, Ordering::Release);
                                return;
                            }
                        }
                    };
                    inner.queued.fetch_sub(1, Ordering::SeqCst);
                    inner.clone().dispatch(env).await;
                    inner.done();
                }
            });
        }
        Ok(())
    }

    /// Whether the runtime is started.
    pub fn is_started(&self) -> bool {
        self.inner.lifecycle.lock().state != RunState::Stopped
    }

    /// Stops at once. Every message not yet being handled (the global queue and every mailbox
    /// backlog) is discarded, and each discarded send fails its caller with [`Error::Stopped`];
    /// handlers already running finish, and their callers get their results. Raises a pending
    /// background error. Not started: [`Error::NotStarted`].
    pub async fn stop(&self) -> Result<(), Error> {
        let queue = {
            let mut lc = self.inner.lifecycle.lock();
            if lc.state == RunState::Stopped {
                return Err(Error::NotStarted);
            }
            lc.state = RunState::Stopped;
            self.inner.running.store(false, Ordering::Release);
            std::mem::take(&mut lc.queue)
        };
        let mut discarded = 0usize;
        for env in queue {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            discarded += 1;
            fail_envelope(env);
            self.inner.done();
        }
        let cells: Vec<Arc<Cell>> = self.inner.agents.read().values().cloned().collect();
        for cell in cells {
            for job in cell.take_queued_messages() {
                self.inner.queued.fetch_sub(1, Ordering::SeqCst);
                discarded += 1;
                let target = Target::Agent(cell.id.clone());
                match job {
                    Job::Deliver(d) => {
                        let _ = d.reply.send(Err(Error::Stopped { target }));
                    }
                    Job::Publish(_) => {
                        tracing::warn!(%target, "published message discarded by stop()")
                    }
                    Job::Control(_) => unreachable!("control jobs stay queued"),
                }
                self.inner.done();
            }
        }
        if discarded > 0 {
            tracing::warn!(
                discarded,
                "stop() discarded queued messages; their senders got a stopped error"
            );
        }
        self.take_background()
    }

    fn take_background(&self) -> Result<(), Error> {
        match self.inner.lifecycle.lock().background_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until no message is queued or being handled (nested sends and publishes included),
    /// then stops. Dropped or failed messages never make this hang.
    pub async fn stop_when_idle(&self) -> Result<(), Error> {
        if !self.is_started() {
            return Err(Error::NotStarted);
        }
        self.inner.wait_idle().await;
        self.stop().await
    }

    /// Stops once `condition` returns true. It is checked at once and then every 10 ms (AutoGen
    /// polls once a second, so its `stop_when` lags by up to a second).
    pub async fn stop_when(&self, condition: impl Fn() -> bool) -> Result<(), Error> {
        if !self.is_started() {
            return Err(Error::NotStarted);
        }
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop().await
    }

    /// Dispatches the oldest message of the global queue (only while not started) and lets its
    /// handler begin. Returns `false` when the queue is empty instead of waiting for a message.
    /// A pending background error is raised first.
    pub async fn process_next(&self) -> Result<bool, Error> {
        self.take_background()?;
        let env = {
            let mut lc = self.inner.lifecycle.lock();
            if lc.state != RunState::Stopped {
                return Err(Error::AlreadyStarted);
            }
            lc.queue.pop_front()
        };
        let Some(env) = env else { return Ok(false) };
        self.inner.queued.fetch_sub(1, Ordering::SeqCst);
        self.inner.clone().dispatch(env).await;
        self.inner.done();
        tokio::task::yield_now().await;
        Ok(true)
    }

    /// Stops if started, fails every message still queued with [`Error::Stopped`], then calls
    /// [`Agent::close`] on every instantiated agent in creation order.
    pub async fn close(&self) -> Result<(), Error> {
        let stopped = if self.is_started() {
            self.stop().await
        } else {
            Ok(())
        };
        let queue = std::mem::take(&mut self.inner.lifecycle.lock().queue);
        for env in queue {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            fail_envelope(env);
            self.inner.done();
        }
        for cell in self.instantiated_cells() {
            self.inner.control(&cell, |a| a.close()).await?;
        }
        stopped
    }

    /// The instantiated agents in creation order. Sorted by a copy of each sequence number kept
    /// beside its cell: comparing through the `Arc` would read a scattered cell per comparison.
    fn instantiated_cells(&self) -> Vec<Arc<Cell>> {
        let mut cells: Vec<(u64, Arc<Cell>)> = self
            .inner
            .agents
            .read()
            .values()
            .filter(|c| c.is_instantiated())
            .map(|c| (c.seq, c.clone()))
            .collect();
        // Sequence numbers are unique, so an unstable sort gives the one order.
        cells.sort_unstable_by_key(|(seq, _)| *seq);
        cells.into_iter().map(|(_, c)| c).collect()
    }

    /// Every instantiated agent's state, keyed `"type/key"` in creation order: the same document
    /// AutoGen's `save_state` produces (serialize it with serde_json), so a state file moves
    /// between the two.
    pub async fn save_state(&self) -> Result<SavedState, Error> {
        let cells = self.instantiated_cells();
        let mut out = SavedState::with_capacity(cells.len());
        for cell in cells {
            // The agent's own (already boxed) future, not one more wrapped around it: this runs
            // once per agent.
            let state = self
                .inner
                .control(&cell, |a| a.save_state())
                .await?
                .map_err(state_failed(&cell.id, "save"))?;
            out.push(cell.id.joined(), state);
        }
        Ok(out)
    }

    /// Loads a document from [`AgentRuntime::save_state`] (a [`SavedState`], or a JSON object as
    /// a `Value`). The whole document is validated first (every key a valid `type/key` of a
    /// registered type; factory types or existing instances), so a malformed document changes
    /// nothing. AutoGen silently skips unknown types; Warren names them.
    ///
    /// Pass the document by value to hand each agent its state without a copy, or by reference
    /// to keep it.
    pub async fn load_state<'v>(&self, state: impl StateDocument<'v>) -> Result<(), Error> {
        let doc = state.into_document()?;
        let mut cells = Vec::with_capacity(doc.len());
        // Room for every new agent at once, instead of rehashing as the map grows.
        self.inner.agents.write().reserve(doc.len());
        // Each agent type is validated and allocated once per document, and its agents share it.
        let mut types: FastMap<&str, AgentType> = FastMap::default();
        for key in doc.keys() {
            let id = parse_state_key(key, &mut types).map_err(|e| Error::InvalidState {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
            let cell = self.inner.cell_for(&id).map_err(|e| Error::InvalidState {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
            cells.push(cell);
        }
        // Every key is valid: now the states, in document order, moved out of an owned document.
        let states: Box<dyn Iterator<Item = AgentState> + Send> = match doc {
            Cow::Owned(doc) => Box::new(doc.into_iter().map(|(_, s)| s)),
            Cow::Borrowed(doc) => Box::new(doc.iter().map(|(_, s)| s.clone())),
        };
        for (cell, state) in cells.into_iter().zip(states) {
            self.inner
                .control(&cell, move |a| a.load_state(state))
                .await?
                .map_err(state_failed(&cell.id, "load"))?;
        }
        Ok(())
    }

    /// A weak handle, for agents and hosts that must not keep the runtime alive.
    pub fn downgrade(&self) -> WeakRuntime {
        WeakRuntime(Arc::downgrade(&self.inner))
    }
}

/// A state document's `type/key` (split like [`AgentId`]'s `FromStr`), with the type taken from
/// `types` when an earlier key had it.
fn parse_state_key<'k>(
    key: &'k str,
    types: &mut FastMap<&'k str, AgentType>,
) -> Result<AgentId, crate::IdError> {
    let Some((t, k)) = key.split_once('/') else {
        return key.parse();
    };
    let agent_type = match types.get(t) {
        Some(known) => known.clone(),
        None => {
            let parsed = AgentType::new(t)?;
            types.insert(t, parsed.clone());
            parsed
        }
    };
    Ok(AgentId::from_parts(agent_type, k))
}

/// Wraps an agent's own save or load error, naming the agent and the operation.
fn state_failed(agent: &AgentId, op: &'static str) -> impl FnOnce(BoxError) -> Error {
    let agent = agent.clone();
    move |source| Error::StateFailed { agent, op, source }
}

/// A weak reference to an [`AgentRuntime`].
#[derive(Clone, Debug)]
pub struct WeakRuntime(Weak<Inner>);

impl WeakRuntime {
    /// A handle that refers to no runtime (for agents probed outside any runtime).
    pub fn detached() -> Self {
        Self(Weak::new())
    }

    /// The runtime, if it is still alive.
    pub fn upgrade(&self) -> Option<AgentRuntime> {
        self.0.upgrade().map(AgentRuntime::from_inner)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inner")
    }
}

fn fail_envelope(env: Envelope) {
    match env {
        Envelope::Send { reply, ctx, .. } => {
            let _ = reply.send(Err(Error::Stopped {
                target: Target::Agent(ctx.cell.id.clone()),
            }));
        }
        Envelope::Publish { topic, message, .. } => {
            tracing::warn!(%topic, message_type = message.type_name(), "published message discarded: the runtime stopped before routing it");
        }
    }
}

/// A send's boxed future inside a `warren.send` span when that span is enabled. A disabled span
/// costs nothing to create; skipping the wrapper then saves a poll layer.
fn traced<F: Future>(
    recipient: &AgentId,
    fut: Pin<Box<F>>,
) -> Either<Pin<Box<F>>, Instrumented<Pin<Box<F>>>> {
    let span = tracing::debug_span!("warren.send", recipient = %recipient);
    if span.is_disabled() {
        Either::Left(fut)
    } else {
        Either::Right(fut.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every send's future is moved into a box (`Inner::send_message`), so its size is copied per
    /// message: each await point keeps its own state in it, and interventions (boxed where they
    /// run) and the ways of waiting (one await each) must not multiply it. 512 bytes in this
    /// (debug) build and in release; before, 648 here and 1,376 in release, where the awaited
    /// functions are inlined into it.
    #[tokio::test]
    async fn a_sends_future_stays_small() {
        let rt = AgentRuntime::new();
        let never: Arc<DynFactory> = Arc::new(|_| Box::pin(async { Err("never built".into()) }));
        rt.register_factory_dyn("t", never, None).await.unwrap();
        let id = AgentId::new("t", "k").unwrap();
        let cell = rt.inner.cell_for(&id).unwrap();
        let fut = rt
            .inner
            .send(Message::new(1u8), &id, cell, SendOptions::default());
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 576, "a send's future is {size} bytes");
    }

    /// What a caller holds while a send waits to be polled (thousands of them in a `join_all` or
    /// in `rpc_concurrent`): the arguments and, once started, a box. Each is written to fresh
    /// memory that the kernel faults in, so the size is paid per send in page faults as well as
    /// in copies. 168 and 176 bytes here and in release; before, 352 and 376 (the send's
    /// span and box, and the typed send's second copy of the inner future, inline).
    #[tokio::test]
    async fn a_waiting_sends_future_holds_little_more_than_its_arguments() {
        let rt = AgentRuntime::new();
        let id = AgentId::new("t", "k").unwrap();
        let untyped = rt.send_message(Message::new(1u8), id.clone(), SendOptions::default());
        let typed = rt.send::<u8>(1u8, &id);
        let arguments = std::mem::size_of::<(&AgentRuntime, Message, AgentId, SendOptions)>();
        for (what, size) in [
            ("send_message", std::mem::size_of_val(&untyped)),
            ("send", std::mem::size_of_val(&typed)),
        ] {
            assert!(
                size <= arguments + 72,
                "{what}'s future is {size} bytes for {arguments} bytes of arguments"
            );
        }
    }
}
