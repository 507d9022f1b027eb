//! The runtime's one error type, [`Error`]. Every variant names the thing at fault.
//!
//! AutoGen raises builtin exceptions (`ValueError`, `LookupError`, a bare
//! `Exception("Recipient not found")`); Warren gives each failure its own variant so a caller can
//! match on it. A handler's own error travels unchanged inside [`Error::HandlerFailed`] and can be
//! downcast back to its concrete type.

use std::fmt;
use std::time::Duration;

use crate::id::{AgentId, AgentType, IdError, SubscriptionId, TopicId};

/// A boxed error from user code (handlers, factories, serializers, interventions).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a message was going: one agent (send) or a topic (publish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A direct message to an agent.
    Agent(AgentId),
    /// A published message.
    Topic(TopicId),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Agent(a) => write!(f, "agent {a}"),
            Target::Topic(t) => write!(f, "topic {t}"),
        }
    }
}

/// Which intervention hook acted on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterventionStage {
    /// `on_send`, before a direct message is delivered.
    Send,
    /// `on_publish`, before a published message is routed.
    Publish,
    /// `on_response`, before a response reaches its caller.
    Response,
}

impl fmt::Display for InterventionStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InterventionStage::Send => "on_send",
            InterventionStage::Publish => "on_publish",
            InterventionStage::Response => "on_response",
        })
    }
}

fn format_chain(ids: &[AgentId]) -> String {
    ids.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Every failure the runtime reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An id failed validation.
    #[error(transparent)]
    InvalidId(#[from] IdError),

    /// No factory or instance is registered for this agent type (AutoGen: `Exception("Recipient not found")`).
    #[error("unknown agent type `{agent_type}`: no factory or instance is registered for it")]
    UnknownAgentType {
        /// The unregistered type.
        agent_type: AgentType,
    },

    /// The type has only registered instances and this key is not one of them.
    #[error(
        "agent `{agent}` does not exist: type `{}` has registered instances only, and none with this key",
        agent.agent_type()
    )]
    UnknownAgent {
        /// The missing agent.
        agent: AgentId,
    },

    /// `register_factory` for a type that is already registered.
    #[error("agent type `{agent_type}` is already registered")]
    AgentTypeExists {
        /// The duplicate type.
        agent_type: AgentType,
    },

    /// A factory and instances registered for one type.
    #[error(
        "agent type `{agent_type}` cannot have both a factory and registered instances; use one or the other"
    )]
    MixedRegistration {
        /// The type.
        agent_type: AgentType,
    },

    /// `register_agent_instance` for an id that is already registered.
    #[error("agent `{agent}` is already registered")]
    AgentExists {
        /// The duplicate id.
        agent: AgentId,
    },

    /// Instances of one agent type must all be of the same Rust type.
    #[error("instances of agent type `{agent_type}` must all be `{expected}`; got `{actual}`")]
    InstanceTypeMismatch {
        /// The agent type.
        agent_type: AgentType,
        /// The Rust type of the first instance.
        expected: &'static str,
        /// The Rust type offered now.
        actual: &'static str,
    },

    /// A factory registered with an expected type produced another type.
    #[error("factory for agent type `{agent_type}` produced `{actual}`, expected `{expected}`")]
    WrongAgentClass {
        /// The agent type.
        agent_type: AgentType,
        /// The expected Rust type.
        expected: &'static str,
        /// The Rust type the factory returned.
        actual: &'static str,
    },

    /// The factory failed to construct an agent.
    #[error("could not construct agent `{agent}`: {source}")]
    FactoryFailed {
        /// The agent being constructed.
        agent: AgentId,
        /// The factory's error.
        #[source]
        source: BoxError,
    },

    /// `try_get_underlying_agent_instance` asked for the wrong Rust type.
    #[error("agent `{agent}` is a `{actual}`, not a `{requested}`")]
    WrongInstanceType {
        /// The agent.
        agent: AgentId,
        /// The requested Rust type.
        requested: &'static str,
        /// The agent's Rust type.
        actual: &'static str,
    },

    /// An equivalent subscription already exists.
    #[error("subscription already exists: {subscription} duplicates {existing}")]
    SubscriptionExists {
        /// The rejected subscription.
        subscription: String,
        /// The subscription it duplicates.
        existing: String,
    },

    /// `remove_subscription` with an id that is not registered.
    #[error("unknown subscription id `{id}`")]
    UnknownSubscription {
        /// The id.
        id: SubscriptionId,
    },

    /// `map_to_agent` on a topic the subscription does not match (AutoGen: `CantHandleException`).
    #[error("{subscription} does not match topic {topic}")]
    SubscriptionMismatch {
        /// The subscription.
        subscription: String,
        /// The topic.
        topic: TopicId,
    },

    /// The agent has no handler for this message type (AutoGen: `CantHandleException`, or `None`).
    #[error("agent `{agent}` cannot handle message type `{message_type}`")]
    CantHandle {
        /// The recipient.
        agent: AgentId,
        /// The message type name.
        message_type: String,
    },

    /// An intervention handler dropped the message (AutoGen: `MessageDroppedException`).
    #[error(
        "message `{message_type}` to {target} was dropped by an intervention handler ({stage})"
    )]
    MessageDropped {
        /// The hook that dropped it.
        stage: InterventionStage,
        /// Where the message was going.
        target: Target,
        /// The message type name.
        message_type: String,
    },

    /// An intervention handler failed; its error is kept as the source.
    #[error("intervention handler failed in {stage} for {target}: {source}")]
    InterventionFailed {
        /// The hook that failed.
        stage: InterventionStage,
        /// Where the message was going.
        target: Target,
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// A send whose recipient is already waiting in the same call chain; delivering it would
    /// deadlock, since each agent handles one message at a time.
    #[error("call cycle: {} would deadlock, since {} is already waiting for a response", format_chain(.chain), .chain.last().map(|a| a.to_string()).unwrap_or_default())]
    CallCycle {
        /// The waiting agents, ending with the recipient that closes the cycle.
        chain: Vec<AgentId>,
    },

    /// The runtime stopped before the message was processed.
    #[error("the runtime stopped before the message to {target} was processed")]
    Stopped {
        /// Where the message was going.
        target: Target,
    },

    /// A lifecycle call that needs a started runtime.
    #[error("the runtime is not started")]
    NotStarted,

    /// `start()` on a started runtime, or `process_next()` while the runtime runs by itself.
    #[error("the runtime is already started")]
    AlreadyStarted,

    /// The caller's cancellation token fired before the response arrived.
    #[error("the message to {target} was cancelled")]
    Cancelled {
        /// Where the message was going.
        target: Target,
    },

    /// The recipient's handler returned an error; it is kept as the source with its type.
    #[error("agent `{agent}` failed to handle `{message_type}`: {source}")]
    HandlerFailed {
        /// The agent whose handler failed.
        agent: AgentId,
        /// The message type name.
        message_type: String,
        /// The handler's error, downcastable to its concrete type.
        #[source]
        source: BoxError,
    },

    /// The recipient's handler panicked.
    #[error("agent `{agent}` panicked while handling `{message_type}`: {panic}")]
    HandlerPanicked {
        /// The agent.
        agent: AgentId,
        /// The message type name.
        message_type: String,
        /// The panic payload, when it was a string.
        panic: String,
    },

    /// No serializer is registered for this (type name, content type).
    #[error("no serializer for message type `{type_name}` with content type `{content_type}`")]
    UnknownSerializer {
        /// The message type name.
        type_name: String,
        /// The content type.
        content_type: String,
    },

    /// Encoding or decoding a message failed.
    #[error("could not convert message `{type_name}` ({content_type}): {source}")]
    Codec {
        /// The message type name.
        type_name: String,
        /// The content type.
        content_type: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// A response of an unexpected type reached a typed caller.
    #[error("expected a `{expected}` response, got `{actual}`")]
    UnexpectedResponse {
        /// The type the caller asked for.
        expected: String,
        /// The type that arrived.
        actual: String,
    },

    /// A state document or entry is malformed.
    #[error("invalid state for `{key}`: {reason}")]
    InvalidState {
        /// The offending key (`type/key`), or `<document>` for the whole document.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// Saving or loading an agent's state failed.
    #[error("agent `{agent}` failed to {op} its state: {source}")]
    StateFailed {
        /// The agent.
        agent: AgentId,
        /// `save` or `load`.
        op: &'static str,
        /// The agent's error.
        #[source]
        source: BoxError,
    },

    /// A sandbox capability check refused the operation.
    #[error("access denied: agent `{agent}` may not {action}")]
    AccessDenied {
        /// The agent that tried.
        agent: AgentId,
        /// What it tried, e.g. `send to billing/1`.
        action: String,
    },

    /// A message exceeded a size limit.
    #[error("message too large for {target}: {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Where the message was going.
        target: Target,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A handler ran past its time limit and was interrupted.
    #[error("agent `{agent}` exceeded its time limit of {limit:?} per message")]
    DeadlineExceeded {
        /// The agent.
        agent: AgentId,
        /// The limit.
        limit: Duration,
    },

    /// A resource limit other than time or message size was hit.
    #[error("agent `{agent}` hit the {limit} limit ({value})")]
    LimitExceeded {
        /// The agent.
        agent: AgentId,
        /// Which limit, e.g. `memory`, `fuel`, `instances`, `mailbox`.
        limit: &'static str,
        /// The limit's value, with its unit.
        value: String,
    },

    /// A sandboxed agent trapped; the instance was discarded.
    #[error("agent `{agent}` trapped: {trap}")]
    Trapped {
        /// The agent.
        agent: AgentId,
        /// The trap, as wasmtime reported it.
        trap: String,
    },

    /// An agent implementation failed in a way that is neither a handler error nor a trap.
    #[error("agent `{agent}`: {source}")]
    Agent {
        /// The agent.
        agent: AgentId,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A short machine-readable name for the variant, used in logs and across the wasm boundary.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidId(_) => "invalid-id",
            Error::UnknownAgentType { .. } | Error::UnknownAgent { .. } => "unknown-agent",
            Error::AgentTypeExists { .. }
            | Error::MixedRegistration { .. }
            | Error::AgentExists { .. }
            | Error::InstanceTypeMismatch { .. }
            | Error::WrongAgentClass { .. }
            | Error::WrongInstanceType { .. } => "registration",
            Error::FactoryFailed { .. } => "factory-failed",
            Error::SubscriptionExists { .. }
            | Error::UnknownSubscription { .. }
            | Error::SubscriptionMismatch { .. } => "subscription",
            Error::CantHandle { .. } => "cannot-handle",
            Error::MessageDropped { .. } => "dropped",
            Error::InterventionFailed { .. } => "intervention-failed",
            Error::CallCycle { .. } => "call-cycle",
            Error::Stopped { .. } | Error::NotStarted | Error::AlreadyStarted => "stopped",
            Error::Cancelled { .. } => "cancelled",
            Error::HandlerFailed { .. } | Error::HandlerPanicked { .. } => "handler-failed",
            Error::UnknownSerializer { .. }
            | Error::Codec { .. }
            | Error::UnexpectedResponse { .. } => "codec",
            Error::InvalidState { .. } | Error::StateFailed { .. } => "state",
            Error::AccessDenied { .. } => "access-denied",
            Error::MessageTooLarge { .. } => "message-too-large",
            Error::DeadlineExceeded { .. } => "deadline-exceeded",
            Error::LimitExceeded { .. } => "limit-exceeded",
            Error::Trapped { .. } => "trapped",
            Error::Agent { .. } => "agent",
        }
    }

    /// The handler's own error, when this is [`Error::HandlerFailed`] wrapping an `E`.
    pub fn handler_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::HandlerFailed { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_cycle_names_the_chain() {
        let a = AgentId::new("a", "1").unwrap();
        let b = AgentId::new("b", "1").unwrap();
        let e = Error::CallCycle {
            chain: vec![a.clone(), b, a],
        };
        let text = e.to_string();
        assert!(text.contains("a/1 -> b/1 -> a/1"), "{text}");
        assert_eq!(e.kind(), "call-cycle");
    }
}
