//! The host side of the WIT package in `wit/`: generated bindings, the `host` interface every
//! plugin imports, and conversions between WIT values and `warren-core` values.

use std::sync::Arc;

use warren_core::{Codec, Error, Message, PublishOptions, SendOptions, Target};

use crate::host::{Handling, StoreState};
use crate::manifest::allowed;
use warren_typename::inline;

// Only `send` and `publish` wait (for another agent); the other host functions answer at once.
// An instance that imports neither can then be run without a fiber (see `sync_world`).
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "warren:agent/host.send": async,
        "warren:agent/host.send-to": async,
        "warren:agent/host.send-to-held": async,
        "warren:agent/host.publish": async,
    },
    exports: { default: async },
});

/// The same world with synchronous exports, for instances none of whose imports is async: a call
/// is then a plain function call on the caller's stack (no fiber to enter, no fiber stack kept
/// per live instance). The imported interfaces are the ones above.
pub(crate) mod sync_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        require_store_data_send: true,
        with: {
            "warren:agent/types": super::warren::agent::types,
            "warren:agent/host": super::warren::agent::host,
        },
    });
}

pub(crate) use exports::warren::agent::agent::Description;
use warren::agent::host::Level;
pub(crate) use warren::agent::types as wit;

/// A content type as the WIT carries it: JSON and MessagePack as their cases, no string to copy
/// into the guest per message.
fn content_type_to_wit(ct: std::borrow::Cow<'_, str>) -> wit::ContentType {
    match Codec::of(&ct) {
        Some(Codec::Json) => wit::ContentType::Json,
        Some(Codec::Msgpack) => wit::ContentType::Msgpack,
        None => wit::ContentType::Other(ct.into_owned()),
    }
}

/// A content type from the WIT. JSON and MessagePack by their static names (nothing allocated);
/// an `other` naming either is the same content type.
fn content_type_from_wit(ct: wit::ContentType) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    match ct {
        wit::ContentType::Json => Cow::Borrowed(warren_core::JSON),
        wit::ContentType::Msgpack => Cow::Borrowed(warren_core::MSGPACK),
        wit::ContentType::Other(s) => owned_content_type(Cow::Owned(s)),
    }
}

/// A content type kept past the message it came from: JSON and MessagePack by their static names.
fn owned_content_type(ct: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'static, str> {
    match Codec::of(&ct) {
        Some(c) => std::borrow::Cow::Borrowed(c.content_type()),
        None => std::borrow::Cow::Owned(ct.into_owned()),
    }
}

/// The codec of a WIT content type (the case, not a string compare), for a message kept inline
/// ([`Message::from_short`]); `None` for `other`.
fn case_codec(ct: &wit::ContentType) -> Option<Codec> {
    match ct {
        wit::ContentType::Json => Some(Codec::Json),
        wit::ContentType::Msgpack => Some(Codec::Msgpack),
        wit::ContentType::Other(_) => None,
    }
}

/// A payload as `handle`, `send` and `publish` carry it: a type the component declared travels
/// as its index in `types` (no string copied into the guest, none compared there), short data
/// inline. ([`type_name_of`] names its type again, for an error.)
pub(crate) fn to_wit_message(p: warren_core::Encoded<'_>, types: &[Arc<str>]) -> wit::Message {
    let message_type = match types.iter().position(|t| **t == *p.type_name) {
        Some(i) => wit::MessageType::Declared(i as u32),
        None => wit::MessageType::Named(p.type_name.into_owned()),
    };
    wit::Message {
        message_type,
        content_type: content_type_to_wit(p.content_type),
        data: data_to_wit(p.data),
    }
}

/// The type name of a message bound for a guest (a declared type by its index in `types`).
pub(crate) fn type_name_of(m: &wit::Message, types: &[Arc<str>]) -> String {
    match &m.message_type {
        wit::MessageType::Named(name) => name.clone(),
        wit::MessageType::Declared(i) => types
            .get(*i as usize)
            .map_or_else(|| format!("<declared type {i}>"), |t| t.to_string()),
    }
}

thread_local! {
    /// Where messages bound for a guest are encoded: one buffer per thread, reused, so a message
    /// that travels inline allocates nothing on the way.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer kept after use only up to this size (a rare large message does not pin its size).
const SCRATCH_KEEP: usize = 64 * 1024;

/// Runs `f` with this thread's encoding buffer (a fresh one if it is in use further up the
/// stack: a native value's `Serialize` impl may itself send).
pub(crate) fn encoding<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Message data as the WIT carries it: inline when it fits, so the call places nothing in the
/// guest's memory (no `cabi_realloc` call into the guest, nothing for it to free).
fn data_to_wit(data: std::borrow::Cow<'_, [u8]>) -> wit::MessageData {
    match inline::pack(&data) {
        Some((len, [word0, word1, word2, word3])) => wit::MessageData::Inline(wit::InlineBytes {
            len,
            word0,
            word1,
            word2,
            word3,
        }),
        None => wit::MessageData::Bytes(data.into_owned()),
    }
}

impl wit::MessageData {
    /// The size of the data in bytes (as the sender states it, for inline data).
    pub(crate) fn len(&self) -> usize {
        match self {
            wit::MessageData::Inline(b) => usize::from(b.len),
            wit::MessageData::Bytes(b) => b.len(),
        }
    }
}

/// Inline message data from the WIT, unpacked into `buf`. An inline length above its capacity is
/// the guest's error.
fn inline_from_wit<'a>(
    b: &wit::InlineBytes,
    buf: &'a mut [u8; inline::CAPACITY],
) -> Result<&'a [u8], wit::Error> {
    inline::unpack_into(b.len, [b.word0, b.word1, b.word2, b.word3], buf)
        .map_err(|e| wit::Error::Other(e.to_string()))
}

/// Message data from the WIT, owned.
fn data_from_wit(data: wit::MessageData) -> Result<Vec<u8>, wit::Error> {
    match data {
        wit::MessageData::Bytes(b) => Ok(b),
        wit::MessageData::Inline(b) => {
            Ok(inline_from_wit(&b, &mut [0; inline::CAPACITY])?.to_vec())
        }
    }
}

/// A message `handle` answered with, as a payload. An index outside the declared table is the
/// guest's error (`other`).
pub(crate) fn from_wit_message(m: wit::Message, types: &[Arc<str>]) -> Result<Message, wit::Error> {
    let declared = |i: u32| {
        types.get(i as usize).ok_or_else(|| {
            wit::Error::Other(format!(
                "message type index {i}, but the component declared {} types",
                types.len()
            ))
        })
    };
    // The common answer: a declared type with short JSON or MessagePack data. It stays inside
    // the message, sharing the table's name: nothing is allocated for it.
    if let (wit::MessageType::Declared(i), Some(ct), wit::MessageData::Inline(b)) =
        (&m.message_type, case_codec(&m.content_type), &m.data)
    {
        let mut buf = [0; inline::CAPACITY];
        let data = inline_from_wit(b, &mut buf)?;
        return Ok(Message::from_short(declared(*i)?.clone(), ct, data));
    }
    let type_name = match m.message_type {
        wit::MessageType::Named(name) => name,
        wit::MessageType::Declared(i) => declared(i)?.to_string(),
    };
    Ok(Message::from_payload(warren_core::Payload {
        type_name,
        content_type: content_type_from_wit(m.content_type),
        data: data_from_wit(m.data)?,
    }))
}

impl From<&warren_core::AgentId> for wit::AgentId {
    fn from(a: &warren_core::AgentId) -> Self {
        Self {
            agent_type: a.agent_type().to_string(),
            key: a.key().to_owned(),
        }
    }
}

impl From<&warren_core::TopicId> for wit::TopicId {
    fn from(t: &warren_core::TopicId) -> Self {
        Self {
            topic_type: t.topic_type().to_owned(),
            source: t.source().to_owned(),
        }
    }
}

fn context(h: Option<&Handling>) -> wit::MessageContext {
    match h {
        Some(h) => wit::MessageContext {
            sender: h.sender.as_ref().map(Into::into),
            topic: h.topic.as_ref().map(Into::into),
            is_rpc: h.is_rpc,
            message_id: h.message_id.to_string(),
        },
        None => wit::MessageContext {
            sender: None,
            topic: None,
            is_rpc: false,
            message_id: String::new(),
        },
    }
}

/// The call cycle behind `e`, if one caused it (possibly several handlers down the chain).
fn root_cycle(e: &Error) -> Option<&[warren_core::AgentId]> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(Error::CallCycle { chain }) = cur.downcast_ref::<Error>() {
            return Some(chain);
        }
        cur = cur.source()?;
    }
}

/// A runtime error as the guest sees it. A failure caused by a call cycle further down is
/// reported as that cycle, so a guest can react to it whatever depth it happened at.
pub(crate) fn to_wit_error(e: &Error) -> wit::Error {
    if let Some(chain) = root_cycle(e) {
        return wit::Error::CallCycle(chain.iter().map(Into::into).collect());
    }
    match e {
        Error::UnknownAgentType { .. } | Error::UnknownAgent { .. } => {
            wit::Error::UnknownAgent(e.to_string())
        }
        Error::CantHandle { message_type, .. } => wit::Error::CannotHandle(message_type.clone()),
        Error::CallCycle { chain } => wit::Error::CallCycle(chain.iter().map(Into::into).collect()),
        Error::AccessDenied { .. } => wit::Error::AccessDenied(e.to_string()),
        Error::MessageTooLarge { size, limit, .. } => wit::Error::MessageTooLarge(wit::SizeLimit {
            size: *size as u64,
            limit: *limit as u64,
        }),
        Error::DeadlineExceeded { .. } => wit::Error::DeadlineExceeded(e.to_string()),
        Error::Stopped { .. } | Error::NotStarted => wit::Error::Stopped(e.to_string()),
        Error::HandlerFailed { .. } | Error::HandlerPanicked { .. } | Error::Trapped { .. } => {
            wit::Error::HandlerFailed(e.to_string())
        }
        other => wit::Error::Other(other.to_string()),
    }
}

/// An error a guest returned, kept as the source of [`Error::HandlerFailed`].
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct GuestError {
    /// The WIT error case (`unknown-agent`, `access-denied`, ...).
    pub kind: &'static str,
    /// Its text.
    pub message: String,
}

/// Converts a guest's error for `message_type` into the runtime's error.
pub(crate) fn from_wit_error(
    agent: &warren_core::AgentId,
    message_type: String,
    e: wit::Error,
) -> Error {
    let guest = |kind: &'static str, message: String| -> warren_core::BoxError {
        Box::new(GuestError { kind, message })
    };
    let source: warren_core::BoxError = match e {
        wit::Error::CannotHandle(t) => {
            return Error::CantHandle {
                agent: agent.clone(),
                message_type: t,
            };
        }
        wit::Error::CallCycle(chain) => Box::new(Error::CallCycle {
            chain: chain
                .into_iter()
                .filter_map(|a| warren_core::AgentId::new(a.agent_type, a.key).ok())
                .collect(),
        }),
        wit::Error::UnknownAgent(m) => guest("unknown-agent", m),
        wit::Error::AccessDenied(m) => guest("access-denied", m),
        wit::Error::MessageTooLarge(l) => guest(
            "message-too-large",
            format!("{} bytes exceeds {}", l.size, l.limit),
        ),
        wit::Error::DeadlineExceeded(m) => guest("deadline-exceeded", m),
        wit::Error::Stopped(m) => guest("stopped", m),
        wit::Error::HandlerFailed(m) => guest("handler-failed", m),
        wit::Error::Other(m) => guest("other", m),
    };
    Error::HandlerFailed {
        agent: agent.clone(),
        message_type,
        source,
    }
}

fn parse_agent(a: wit::AgentId) -> Result<warren_core::AgentId, wit::Error> {
    warren_core::AgentId::new(&a.agent_type, &a.key)
        .map_err(|e| wit::Error::UnknownAgent(format!("{}/{}: {e}", a.agent_type, a.key)))
}

impl wit::Host for StoreState {}

/// The most recipient handles one instance may hold (`resolve`): each is an entry in the
/// instance's table for as long as the instance lives, so a plugin resolving ever new ids would
/// otherwise grow host memory without bound.
pub(crate) const MAX_RECIPIENTS: usize = 256;

/// The recipients an instance resolved (`resolve`), by handle, and the handle of each id.
#[derive(Default)]
pub(crate) struct Recipients {
    refs: Vec<warren_core::AgentRef>,
    handles: std::collections::HashMap<warren_core::AgentId, u32>,
}

/// The most responses one instance may hold at a time (`send-to-held`).
pub(crate) const MAX_HELD: usize = 256;

/// The responses an instance holds (`send-to-held`) for the `handle` call in progress, by
/// handle. Emptied when that call returns; handles are not reused, so a stale one is refused
/// rather than taken for a newer response.
#[derive(Default)]
pub(crate) struct Held {
    responses: Vec<(u32, Message)>,
    next: u32,
}

impl Held {
    /// Refuses a new held response when the instance holds as many as it may.
    fn room(&self) -> Result<(), wit::Error> {
        if self.responses.len() >= MAX_HELD {
            return Err(wit::Error::Other(format!(
                "this instance holds {MAX_HELD} responses, the most it may (answer with or drop \
                 one first)"
            )));
        }
        Ok(())
    }

    fn hold(&mut self, response: Message) -> u32 {
        let handle = self.next;
        self.next = self.next.wrapping_add(1);
        self.responses.push((handle, response));
        handle
    }

    fn get(&self, handle: u32) -> Result<&Message, wit::Error> {
        self.responses
            .iter()
            .find(|(h, _)| *h == handle)
            .map(|(_, m)| m)
            .ok_or_else(|| not_held(handle))
    }

    /// Removes and returns held response `handle`.
    pub(crate) fn take(&mut self, handle: u32) -> Option<Message> {
        let i = self.responses.iter().position(|(h, _)| *h == handle)?;
        Some(self.responses.swap_remove(i).1)
    }

    /// Releases every held response (the `handle` call that held them returned).
    pub(crate) fn clear(&mut self) {
        self.responses.clear();
    }
}

/// The error for a handle that names no held response.
pub(crate) fn not_held(handle: u32) -> wit::Error {
    wit::Error::Other(format!(
        "held response {handle} is not held by this instance (dropped, already answered with, or \
         held during an earlier call)"
    ))
}

impl StoreState {
    /// Refuses an outgoing message bigger than the plugin's limit (`target` names where it was
    /// going, built only for the error).
    fn check_size(&self, target: impl FnOnce() -> Target, size: usize) -> Result<(), wit::Error> {
        let limit = self.plugin.limits.message_bytes;
        if size > limit {
            return Err(to_wit_error(&Error::MessageTooLarge {
                target: target(),
                size,
                limit,
            }));
        }
        Ok(())
    }

    /// Refuses a send to an agent type outside the plugin's `capabilities.send`. A refused send
    /// is logged; a refused `resolve` is not (nothing was sent, and the guest SDK then sends by
    /// id, which is refused and logged once).
    fn check_send_to(&self, to: &warren_core::AgentId, log: bool) -> Result<(), wit::Error> {
        if !allowed(&self.plugin.caps.send, to.agent_type().as_str()) {
            let action = format!(
                "send to `{to}` (agent type `{}` is not in capabilities.send)",
                to.agent_type()
            );
            return Err(match log {
                true => self.denied(action),
                false => to_wit_error(&Error::AccessDenied {
                    agent: self.whom.id(),
                    action,
                }),
            });
        }
        Ok(())
    }

    /// The runtime, unless it is gone (then a call bound for `target` is `stopped`; the target
    /// is built only for the error).
    fn running(
        &self,
        target: impl FnOnce() -> Target,
    ) -> Result<warren_core::AgentRuntime, wit::Error> {
        self.runtime
            .upgrade()
            .ok_or_else(|| to_wit_error(&Error::Stopped { target: target() }))
    }

    /// A send as the agent this instance is running.
    fn send_options(&self) -> SendOptions {
        SendOptions {
            sender: Some(self.whom.id()),
            ..Default::default()
        }
    }

    /// `send-to`: the send to resolved recipient `recipient`, and the runtime it went through.
    async fn send_to_handle(
        &mut self,
        recipient: u32,
        message: wit::Message,
    ) -> Result<(warren_core::AgentRuntime, Message), wit::Error> {
        let Some(to) = self.recipients.refs.get(recipient as usize) else {
            return Err(wit::Error::UnknownAgent(format!(
                "recipient handle {recipient} was not given to this instance by `resolve` \
                 (it holds {})",
                self.recipients.refs.len()
            )));
        };
        self.check_size(|| Target::Agent(to.id().clone()), message.data.len())?;
        let message = from_wit_message(message, self.plugin.types())?;
        let rt = self.running(|| Target::Agent(to.id().clone()))?;
        let response = rt
            .send_message_to(message, to, self.send_options())
            .await
            .map_err(|e| to_wit_error(&e))?;
        Ok((rt, response))
    }

    /// A send's response as the guest receives it.
    fn response(
        &self,
        rt: &warren_core::AgentRuntime,
        response: &Message,
    ) -> Result<wit::Message, wit::Error> {
        encoding(|buf| {
            let response = rt.encode(response, buf).map_err(|e| to_wit_error(&e))?;
            Ok(to_wit_message(response, self.plugin.types()))
        })
    }

    fn denied(&self, action: String) -> wit::Error {
        let agent = self.whom.id();
        let e = Error::AccessDenied {
            agent: agent.clone(),
            action,
        };
        tracing::warn!(%agent, error = %e, "capability check refused a call");
        to_wit_error(&e)
    }
}

impl warren::agent::host::Host for StoreState {
    async fn send(
        &mut self,
        recipient: wit::AgentId,
        message: wit::Message,
    ) -> Result<wit::Message, wit::Error> {
        let recipient = match &self.last_recipient {
            Some(last)
                if last.agent_type().as_str() == recipient.agent_type
                    && *last.key() == *recipient.key =>
            {
                last.clone()
            }
            _ => {
                let id = parse_agent(recipient)?;
                self.last_recipient = Some(id.clone());
                id
            }
        };
        self.check_send_to(&recipient, true)?;
        self.check_size(|| Target::Agent(recipient.clone()), message.data.len())?;
        let message = from_wit_message(message, self.plugin.types())?;
        let rt = self.running(|| Target::Agent(recipient.clone()))?;
        let response = rt
            .send_message(message, recipient, self.send_options())
            .await
            .map_err(|e| to_wit_error(&e))?;
        self.response(&rt, &response)
    }

    fn resolve(&mut self, recipient: wit::AgentId) -> Result<u32, wit::Error> {
        let id = parse_agent(recipient)?;
        if let Some(&handle) = self.recipients.handles.get(&id) {
            return Ok(handle);
        }
        self.check_send_to(&id, false)?;
        if self.recipients.refs.len() >= MAX_RECIPIENTS {
            return Err(wit::Error::Other(format!(
                "cannot resolve `{id}`: this instance holds {MAX_RECIPIENTS} recipient handles, \
                 the most it may (send by id instead)"
            )));
        }
        let to = self
            .running(|| Target::Agent(id.clone()))?
            .resolve(&id)
            .map_err(|e| to_wit_error(&e))?;
        let handle = u32::try_from(self.recipients.refs.len()).expect("at most MAX_RECIPIENTS");
        self.recipients.refs.push(to);
        self.recipients.handles.insert(id, handle);
        Ok(handle)
    }

    async fn send_to(
        &mut self,
        recipient: u32,
        message: wit::Message,
    ) -> Result<wit::Message, wit::Error> {
        let (rt, response) = self.send_to_handle(recipient, message).await?;
        self.response(&rt, &response)
    }

    async fn send_to_held(
        &mut self,
        recipient: u32,
        message: wit::Message,
    ) -> Result<u32, wit::Error> {
        self.held.room()?;
        let (rt, response) = self.send_to_handle(recipient, message).await?;
        // Held as bytes (or as no value), as the guest would have received it: an answer made of
        // it is then checked against this plugin's size limit like any other.
        let response = match response.bytes() {
            Some(_) => response,
            None if response.is_empty() => response,
            None => encoding(|buf| {
                let e = rt.encode(&response, buf).map_err(|e| to_wit_error(&e))?;
                Ok(Message::from_payload(warren_core::Payload {
                    type_name: e.type_name.into_owned(),
                    content_type: owned_content_type(e.content_type),
                    data: e.data.into_owned(),
                }))
            })?,
        };
        Ok(self.held.hold(response))
    }

    fn held_response(&mut self, held: u32) -> Result<wit::Message, wit::Error> {
        let response = self.held.get(held)?;
        let rt = self.running(|| Target::Agent(self.whom.id()))?;
        self.response(&rt, response)
    }

    fn drop_held(&mut self, held: u32) {
        self.held.take(held);
    }

    async fn publish(
        &mut self,
        topic: wit::TopicId,
        message: wit::Message,
    ) -> Result<(), wit::Error> {
        let topic = warren_core::TopicId::new(&topic.topic_type, &topic.source)
            .map_err(|e| wit::Error::Other(e.to_string()))?;
        if !allowed(&self.plugin.caps.publish, topic.topic_type()) {
            return Err(self.denied(format!(
                "publish to `{topic}` (topic type `{}` is not in capabilities.publish)",
                topic.topic_type()
            )));
        }
        self.check_size(|| Target::Topic(topic.clone()), message.data.len())?;
        let message = from_wit_message(message, self.plugin.types())?;
        let rt = self.running(|| Target::Topic(topic.clone()))?;
        rt.publish_message(
            message,
            topic,
            PublishOptions {
                sender: Some(self.whom.id()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| to_wit_error(&e))
    }

    fn context(&mut self) -> wit::MessageContext {
        context(self.handling.as_ref())
    }

    fn self_id(&mut self) -> wit::AgentId {
        (&self.whom.id()).into()
    }

    fn log(&mut self, level: Level, message: String) {
        let agent = self.whom.id();
        match level {
            Level::Trace => tracing::trace!(%agent, "{message}"),
            Level::Debug => tracing::debug!(%agent, "{message}"),
            Level::Info => tracing::info!(%agent, "{message}"),
            Level::Warn => tracing::warn!(%agent, "{message}"),
            Level::Error => tracing::error!(%agent, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Warren builds wasmtime 48.0.8 with upstream's PR #14189 backported (runtime/vendor): a
    /// component function keeps its core function reference instead of looking its export up and
    /// rebuilding the reference on every call. The pointer it adds to `component::Func` is the
    /// one sign of it from outside, so this fails if a build picks up the registry's wasmtime.
    #[test]
    fn the_wasmtime_built_caches_an_exports_function_reference() {
        assert_eq!(
            std::mem::size_of::<wasmtime::component::Func>(),
            32,
            "wasmtime::component::Func has no cached function reference: is the \
             [patch.crates-io] entry for runtime/vendor/wasmtime gone? See runtime/vendor/README.md"
        );
    }

    #[test]
    fn the_encoding_buffer_is_reused_nested_safely_and_not_kept_large() {
        let cap = |n: usize| {
            encoding(|buf| {
                buf.clear();
                buf.resize(n, 1);
            });
            SCRATCH.with_borrow(|b| b.capacity())
        };
        assert!(cap(100) >= 100, "kept for the next message");
        assert_eq!(cap(SCRATCH_KEEP + 1), 0, "a large one is let go");
        // In use further up the stack: the inner call gets its own buffer.
        encoding(|outer| {
            outer.extend_from_slice(b"outer");
            encoding(|inner| {
                assert!(inner.is_empty());
                inner.extend_from_slice(b"inner");
            });
            assert_eq!(outer, b"outer");
        });
    }

    #[test]
    fn declared_types_cross_as_indices_and_others_by_name() {
        let types: Vec<Arc<str>> = vec!["Ping".into(), "Pong".into()];
        let pong = warren_core::Payload::json("Pong", b"{}".to_vec());
        let m = to_wit_message((&pong).into(), &types);
        assert!(matches!(m.message_type, wit::MessageType::Declared(1)));
        assert_eq!(type_name_of(&m, &types), "Pong");
        assert!(matches!(m.content_type, wit::ContentType::Json));
        let back = from_wit_message(m, &types).unwrap();
        // Short JSON of a declared type stays inside the message, sharing the table's name.
        assert!(back.payload().is_none());
        assert_eq!(back.bytes(), Some(("Pong", warren_core::JSON, &b"{}"[..])));
        assert_eq!(back.to_payload(None).unwrap(), pong);

        // MessagePack travels as its case, and stays inline the same way, as MessagePack.
        let packed = warren_core::Payload {
            type_name: "Pong".into(),
            content_type: warren_core::MSGPACK.into(),
            data: vec![0x81, 0xa1, b'i', 0x07],
        };
        let m = to_wit_message((&packed).into(), &types);
        assert!(matches!(m.content_type, wit::ContentType::Msgpack));
        let back = from_wit_message(m, &types).unwrap();
        assert!(back.payload().is_none());
        assert_eq!(
            back.bytes(),
            Some(("Pong", warren_core::MSGPACK, &packed.data[..]))
        );
        assert_eq!(back.to_payload(None).unwrap(), packed);
        // Named as a string, it is the same content type (and borrowed, not allocated).
        let named = content_type_from_wit(wit::ContentType::Other(warren_core::MSGPACK.into()));
        assert!(matches!(
            named,
            std::borrow::Cow::Borrowed(warren_core::MSGPACK)
        ));

        let custom = warren_core::Payload {
            type_name: "Blob".into(),
            content_type: "application/x-protobuf".into(),
            data: vec![1, 2],
        };
        let m = to_wit_message((&custom).into(), &types);
        assert!(matches!(m.message_type, wit::MessageType::Named(ref n) if n == "Blob"));
        assert_eq!(type_name_of(&m, &types), "Blob");
        assert!(
            matches!(m.content_type, wit::ContentType::Other(ref c) if c == "application/x-protobuf")
        );
        let back = from_wit_message(m, &types).unwrap();
        assert_eq!(back.payload(), Some(&custom));

        // Short data travels inline, longer data as a list; both come back unchanged.
        for n in [0, 11, 32, 33, 4096] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let ping = warren_core::Payload::json("Ping", data.clone());
            let m = to_wit_message((&ping).into(), &types);
            match &m.data {
                wit::MessageData::Inline(b) => assert!(n <= 32 && usize::from(b.len) == n),
                wit::MessageData::Bytes(b) => assert!(n > 32 && *b == data),
            }
            let back = from_wit_message(m, &types).unwrap();
            assert_eq!(back.bytes(), Some(("Ping", warren_core::JSON, &data[..])));
            assert_eq!(back.payload().is_some(), n > 32, "longer data is a payload");
        }
        // An inline length beyond the capacity is the guest's typed error.
        let too_long = wit::Message {
            message_type: wit::MessageType::Declared(0),
            content_type: wit::ContentType::Json,
            data: wit::MessageData::Inline(wit::InlineBytes {
                len: 33,
                word0: 0,
                word1: 0,
                word2: 0,
                word3: 0,
            }),
        };
        let e = from_wit_message(too_long, &types).unwrap_err();
        assert!(
            matches!(e, wit::Error::Other(ref m) if m.contains("33 bytes")),
            "{e:?}"
        );

        // A component answering with an index it never declared gets a typed error naming it.
        let bad = wit::Message {
            message_type: wit::MessageType::Declared(7),
            content_type: wit::ContentType::Json,
            data: wit::MessageData::Bytes(vec![]),
        };
        let e = from_wit_message(bad, &types).unwrap_err();
        assert!(
            matches!(e, wit::Error::Other(ref m) if m.contains("index 7")),
            "{e:?}"
        );
    }

    #[test]
    fn context_import_reports_the_message_being_handled_or_nothing() {
        let sender = warren_core::AgentId::new("relay", "a").unwrap();
        let topic = warren_core::TopicId::new("news", "s").unwrap();
        let id = warren_core::MessageId::new("m-1");
        let h = Handling {
            sender: Some(sender),
            topic: Some(topic),
            is_rpc: false,
            message_id: id,
        };
        let c = context(Some(&h));
        let s = c.sender.expect("sender");
        assert_eq!((s.agent_type.as_str(), s.key.as_str()), ("relay", "a"));
        let t = c.topic.expect("topic");
        assert_eq!((t.topic_type.as_str(), t.source.as_str()), ("news", "s"));
        assert!(!c.is_rpc);
        assert_eq!(c.message_id, "m-1");

        let none = context(None);
        assert!(none.sender.is_none() && none.topic.is_none() && !none.is_rpc);
        assert!(none.message_id.is_empty());
    }
}
