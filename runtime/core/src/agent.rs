//! The [`Agent`] trait every agent implements (native Rust types and the wasm host's component
//! adapter alike), the per-message [`MessageContext`], and the factory-side [`AgentContext`].

use std::any::Any;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, Error, Target};
use crate::id::{AgentId, DEFAULT_TOPIC_TYPE, MessageId, TopicId};
use crate::message::Message;
use crate::runtime::{AgentRuntime, Inner, PublishOptions, SendOptions};
use crate::state::AgentState;

/// An agent: handles one message at a time.
///
/// The runtime owns each instance and never calls it concurrently: `on_message`, `save_state`,
/// `load_state` and `close` take `&mut self` and run one after another, in arrival order.
#[async_trait]
pub trait Agent: Any + Send {
    /// Handles one message. For a send (`ctx.is_rpc`) the returned message is the response; for a
    /// publish it is ignored. Return [`Error::CantHandle`] for a message type you do not handle.
    async fn on_message(
        &mut self,
        message: Message,
        ctx: &MessageContext,
    ) -> Result<Message, Error>;

    /// Handles one message right away if this agent can without waiting for anything: `Some`
    /// with the result, or `None` to have the runtime call [`Agent::on_message`] with it instead.
    /// The runtime tries it first for every message; a handler that answers here costs no
    /// future, no boxing and no task-local frame. The default answers `None`.
    ///
    /// Only for handlers that do not use the runtime while they run: one that answers here has no
    /// handler frame, so a send or publish it made (it would have to be spawned, since this
    /// cannot await) would not be attributed to this agent (no sender check, no call-cycle
    /// detection). Panics are caught as in `on_message`.
    fn on_message_now(
        &mut self,
        message: &Message,
        ctx: &MessageContext,
    ) -> Option<Result<Message, Error>> {
        let _ = (message, ctx);
        None
    }

    /// The description reported by `agent_metadata`.
    fn description(&self) -> String {
        String::new()
    }

    /// The agent's state: a JSON value (AutoGen: a mapping), as [`AgentState::new`] writes it
    /// from any serializable type. The default is `{}`.
    async fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::default())
    }

    /// Restores state produced by [`Agent::save_state`] ([`AgentState::decode`] reads it into
    /// the agent's own types). The default ignores it.
    async fn load_state(&mut self, _state: AgentState) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called once by `AgentRuntime::close`.
    async fn close(&mut self) {}

    /// The value `try_get_underlying_agent_instance` downcasts. Wrappers (like the routed-agent
    /// adapter) return the wrapped value; the default `None` means "this agent itself".
    fn underlying(&mut self) -> Option<&mut dyn Any> {
        None
    }

    /// The Rust type name of [`Agent::underlying`], for error messages.
    fn underlying_type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// What a factory learns about the agent it builds (AutoGen's `AgentInstantiationContext`).
#[derive(Clone, Debug)]
pub struct AgentContext {
    pub(crate) id: AgentId,
    pub(crate) runtime: Weak<Inner>,
}

impl AgentContext {
    /// The id of the agent being constructed.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The runtime the agent lives in. `None` once the runtime has been dropped.
    ///
    /// Agents should keep the [`AgentContext`], not an [`AgentRuntime`]: the context holds a weak
    /// reference, so an agent never keeps its own runtime alive.
    pub fn runtime(&self) -> Option<AgentRuntime> {
        self.runtime.upgrade().map(AgentRuntime::from_inner)
    }
}

/// Everything a handler knows about the message it is handling (AutoGen's `MessageContext`),
/// plus helpers to send and publish as this agent.
#[derive(Clone)]
pub struct MessageContext {
    /// The sending agent, `None` for external callers.
    pub sender: Option<AgentId>,
    /// The topic, for published messages.
    pub topic_id: Option<TopicId>,
    /// True for a send (RPC), false for a publish.
    pub is_rpc: bool,
    /// The message id (shared by every recipient of one publish).
    pub message_id: MessageId,
    /// The caller's cancellation token, if it gave one (shared by every recipient of a publish).
    pub(crate) token: Option<CancellationToken>,
    /// The token handed out when the caller gave none, made on first use.
    pub(crate) own_token: std::sync::OnceLock<CancellationToken>,
    /// The recipient's cell (its id is the recipient's).
    pub(crate) cell: Arc<crate::cell::Cell>,
    pub(crate) runtime: Arc<Inner>,
}

impl std::fmt::Debug for MessageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageContext")
            .field("recipient", self.agent_id())
            .field("sender", &self.sender)
            .field("topic_id", &self.topic_id)
            .field("is_rpc", &self.is_rpc)
            .field("message_id", &self.message_id)
            .finish()
    }
}

impl MessageContext {
    /// The caller's cancellation token (AutoGen's `ctx.cancellation_token`), shared by every
    /// recipient of one publish. A message sent without one gets its own token, made only if a
    /// handler asks; cancelling it cancels the caller's wait (see `reply`).
    pub fn cancellation_token(&self) -> &CancellationToken {
        match &self.token {
            Some(t) => t,
            None => self.own_token.get_or_init(CancellationToken::new),
        }
    }

    /// A send's result as its caller gets it: if the caller gave no token and the handler cancelled
    /// the one it was handed, the caller gets [`Error::Cancelled`], as in AutoGen, where that
    /// token is the caller's own. (The caller learns it when the handler returns.)
    pub(crate) fn reply(&self, result: Result<Message, Error>) -> Result<Message, Error> {
        if self.token.is_none() && self.own_token.get().is_some_and(|t| t.is_cancelled()) {
            return Err(Error::Cancelled {
                target: Target::Agent(self.agent_id().clone()),
            });
        }
        result
    }

    /// The agent handling this message.
    pub fn agent_id(&self) -> &AgentId {
        &self.cell.id
    }

    /// The message's wire form with the runtime's serializers: what
    /// `ctx.runtime().encode(message, buf)` gives, without making a runtime handle.
    pub fn encode<'a>(
        &self,
        message: &'a Message,
        buf: &'a mut Vec<u8>,
    ) -> Result<crate::Encoded<'a>, Error> {
        self.runtime.encode(message, buf)
    }

    /// The runtime.
    pub fn runtime(&self) -> AgentRuntime {
        AgentRuntime::from_inner(self.runtime.clone())
    }

    /// AutoGen's `DefaultTopicId()` inside a handler: topic type `default`, source = this agent's key.
    pub fn default_topic(&self) -> TopicId {
        TopicId::new(DEFAULT_TOPIC_TYPE, self.agent_id().key())
            .expect("the default topic type is valid")
    }

    /// Sends `message` to `recipient` as this agent and awaits the response. Like
    /// [`AgentRuntime::send_message`], the future is small and starts the send when first polled.
    pub fn send_message(
        &self,
        message: Message,
        recipient: AgentId,
    ) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        self.runtime.send_message(
            message,
            recipient,
            SendOptions {
                sender: Some(self.agent_id().clone()),
                ..Default::default()
            },
        )
    }

    /// Typed [`MessageContext::send_message`]: sends a serde value and decodes an `R`.
    pub fn send<R>(
        &self,
        message: impl Serialize + Send + Sync + 'static,
        recipient: &AgentId,
    ) -> impl Future<Output = Result<R, Error>> + Send + '_
    where
        R: DeserializeOwned + Any + Send + Sync,
    {
        self.send_message(Message::new(message), recipient.clone())
            .map(|sent| sent?.decode())
    }

    /// Publishes `message` to `topic` as this agent.
    pub async fn publish_message(&self, message: Message, topic: TopicId) -> Result<(), Error> {
        self.runtime()
            .publish_message(
                message,
                topic,
                PublishOptions {
                    sender: Some(self.agent_id().clone()),
                    ..Default::default()
                },
            )
            .await
    }

    /// Typed [`MessageContext::publish_message`].
    pub async fn publish(
        &self,
        message: impl Serialize + Send + Sync + 'static,
        topic: &TopicId,
    ) -> Result<(), Error> {
        self.publish_message(Message::new(message), topic.clone())
            .await
    }
}

/// What `agent_metadata` returns (AutoGen's `AgentMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentMetadata {
    /// The agent type.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// The agent key.
    pub key: String,
    /// The agent's description.
    pub description: String,
}
