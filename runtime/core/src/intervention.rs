//! Intervention handlers: hooks that see, replace or drop every message before delivery
//! (AutoGen's `InterventionHandler`).
//!
//! Handlers run in registration order and **compose**: each sees the message the previous one
//! returned. (AutoGen hands every handler the original message and keeps only the last
//! replacement; that is a bug, not a feature worth copying.) A dropped send or response fails its
//! caller with [`crate::Error::MessageDropped`]; a dropped publish is reported to the publisher
//! the same way. A handler's error is returned as [`crate::Error::InterventionFailed`]. None of
//! these leave the runtime's idle accounting behind, so `stop_when_idle` never hangs on them.

use async_trait::async_trait;

use crate::agent::MessageContext;
use crate::error::BoxError;
use crate::id::{AgentId, MessageId, TopicId};
use crate::message::Message;

/// What a hook decided.
#[derive(Debug)]
pub enum Intervention {
    /// Deliver this message (the original or a replacement).
    Forward(Message),
    /// Do not deliver (AutoGen's `DropMessage`).
    Drop,
}

/// Hooks called for every send, publish and response. Every method defaults to forwarding the
/// message unchanged, so an implementation overrides only what it needs.
///
/// The context passed to `on_send` is the one the recipient will see (`is_rpc` true, no topic).
/// Hooks may run concurrently for different messages; keep shared counters in atomics or locks.
#[async_trait]
pub trait InterventionHandler: Send + Sync + 'static {
    /// A direct message about to be delivered to `recipient`.
    async fn on_send(
        &self,
        message: Message,
        _ctx: &MessageContext,
        _recipient: &AgentId,
    ) -> Result<Intervention, BoxError> {
        Ok(Intervention::Forward(message))
    }

    /// A message about to be published to `ctx.topic_id`.
    async fn on_publish(
        &self,
        message: Message,
        _ctx: &PublishContext,
    ) -> Result<Intervention, BoxError> {
        Ok(Intervention::Forward(message))
    }

    /// A response from `sender` about to reach `recipient` (`None` for an external caller).
    async fn on_response(
        &self,
        message: Message,
        _sender: &AgentId,
        _recipient: Option<&AgentId>,
    ) -> Result<Intervention, BoxError> {
        Ok(Intervention::Forward(message))
    }
}

/// What `on_publish` sees of a published message (AutoGen passes a `MessageContext` with
/// `is_rpc=False`; a publish has no single recipient, so Warren passes this instead).
#[derive(Debug, Clone)]
pub struct PublishContext {
    /// The publishing agent, `None` for external publishers.
    pub sender: Option<AgentId>,
    /// The topic.
    pub topic_id: TopicId,
    /// The message id every recipient will see.
    pub message_id: MessageId,
}
