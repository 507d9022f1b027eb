//! # warren-core
//!
//! The pure runtime core of Warren: everything AutoGen's `AgentRuntime` does, for agents written
//! as Rust types, with no dependency on wasmtime. The wasm host (`warren-runtime`) plugs component
//! agents into this same runtime through the [`Agent`] trait.
//!
//! - [`id`]: validated ids ([`AgentId`], [`AgentType`], [`TopicId`], ...).
//! - [`subscription`]: type and prefix subscriptions and publish routing.
//! - [`message`]: messages as native values or payloads, and serializers.
//! - [`agent`]: the [`Agent`] trait and the per-message [`MessageContext`].
//! - [`routed`]: typed handlers per message type ([`RoutedAgent`]).
//! - [`intervention`]: hooks on every send, publish and response.
//! - [`runtime`]: the [`AgentRuntime`] itself: queue, mailboxes, lifecycle and state.
//! - [`state`]: saved state, one agent's ([`AgentState`]) and a runtime's ([`SavedState`]).
//!
//! ```
//! use warren_core::{AgentRuntime, AgentId, BoxError, RoutedAgent, Routes};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)] struct Ping { i: i64 }
//! #[derive(Serialize, Deserialize)] struct Pong { i: i64 }
//!
//! struct Echo;
//! impl RoutedAgent for Echo {
//!     fn routes(r: &mut Routes<Self>) {
//!         r.rpc_sync(|_: &mut Echo, m: &Ping, _| Ok::<_, BoxError>(Pong { i: m.i }));
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), warren_core::Error> {
//! let rt = AgentRuntime::new();
//! rt.register_routed("echo", |_| Echo).await?;
//! rt.start()?;
//! let pong: Pong = rt.send(Ping { i: 7 }, &AgentId::new("echo", "k")?).await?;
//! assert_eq!(pong.i, 7);
//! rt.stop_when_idle().await?;
//! # Ok(()) }
//! ```

pub mod agent;
mod cell;
pub mod error;
pub mod id;
pub mod intervention;
pub mod message;
pub mod routed;
pub mod runtime;
pub mod state;
pub mod subscription;

pub use agent::{Agent, AgentContext, AgentMetadata, MessageContext};
pub use error::{BoxError, Error, InterventionStage, Target};
pub use id::{AgentId, AgentType, DEFAULT_TOPIC_TYPE, IdError, MessageId, SubscriptionId, TopicId};
pub use intervention::{Intervention, InterventionHandler, PublishContext};
pub use message::{
    Codec, Encoded, INLINE_JSON, JSON, JsonSerializer, MSGPACK, Message, MessageSerializer,
    Payload, SerializerRegistry,
};
pub use routed::{RouteBuilder, RoutedAgent, Routes};
pub use runtime::{
    AgentRef, AgentRuntime, DEFAULT_MAILBOX_CAPACITY, DEFAULT_MAX_QUEUED, DynFactory, ExpectedType,
    PublishOptions, RegisterOptions, RuntimeBuilder, SendOptions, WeakRuntime,
};
pub use state::{AgentState, SavedState, StateDocument};
pub use subscription::Subscription;
pub use tokio_util::sync::CancellationToken;

/// Re-exported so agents can name the trait's boxed futures and `#[async_trait]` without extra
/// dependencies.
pub use async_trait::async_trait;
pub use futures_util::future::BoxFuture;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
