//! # warren-guest
//!
//! Write a Warren agent in Rust and compile it to a wasm32-wasip2 component. This crate is all a
//! plugin depends on (plus `serde` for its message types): it hides the generated WIT bindings,
//! routes each incoming message to a typed handler, encodes responses, saves and loads the agent's
//! state through serde, and exports everything with one macro.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use warren_guest::{Agent, Context, Error, Handlers};
//!
//! #[derive(Serialize, Deserialize)] pub struct Inc { pub by: i64 }
//! #[derive(Serialize, Deserialize)] pub struct Count { pub value: i64 }
//!
//! /// The agent struct is its state: it is saved and loaded with serde.
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Counter { value: i64 }
//!
//! impl Agent for Counter {
//!     fn description() -> String { "counts".into() }
//!     fn handlers(h: &mut Handlers<Self>) {
//!         h.rpc(|me: &mut Counter, m: Inc, _ctx: &Context| -> Result<Count, Error> {
//!             me.value += m.by;
//!             Ok(Count { value: me.value })
//!         });
//!     }
//! }
//!
//! warren_guest::export_agent!(Counter);
//! # fn main() {}
//! ```
//!
//! Handlers are tried in declaration order: the first whose message type, kind (`rpc` for direct
//! sends, `event` for publishes, `message` for both) and optional `.when(...)` predicate match
//! runs. A message no handler takes is answered with `Error::CannotHandle`.
//!
//! One instance of the component may host several agents (when the plugin's manifest sets
//! `agents_per_instance` above 1): the crate keeps one agent struct per agent, created with
//! `Default` and [`Agent::init`] on its first message, and `self_id()` names the agent whose
//! message is running. Keep every agent's state in its struct: statics and thread-locals are
//! shared by all the agents of an instance.
//!
//! The crate also compiles for the host target, where the host imports are stubs that must not be
//! called; that lets workspace-wide `clippy` and unit tests cover plugin code.

extern crate self as warren_guest;

use std::any::Any;
use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "warren_guest::bindings",
        runtime_path: "warren_guest::__private::wit_bindgen::rt",
    });
}

use bindings::exports::warren::agent::agent::Description;
use bindings::warren::agent::host;
pub use bindings::warren::agent::host::Level;
pub use bindings::warren::agent::types::{AgentId, Error, SizeLimit, TopicId};
use bindings::warren::agent::types::{
    Answer as WitAnswer, ContentType, InlineBytes, Message, MessageContext, MessageData,
    MessageType,
};
use warren_typename::{Codec, inline, msgpack};

/// A serialized message with its type by name, as AutoGen puts it on the wire: what a fallback
/// handler gets and answers with, and what [`encode`] and [`decode`] work on. (Across the
/// component boundary a message travels as the WIT `message`: its type interned, short data
/// inline; the SDK converts.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The message type name, e.g. `WorkRequest` (a bare type name, no module path).
    pub type_name: String,
    /// The encoding of `data`: `None` for JSON, [`MSGPACK`] for MessagePack (what this SDK
    /// encodes), or another content type, which the SDK cannot decode.
    pub content_type: Option<String>,
    /// The encoded message.
    pub data: Vec<u8>,
}

/// JSON's content type. A payload says it with `content_type: None` (`Some(JSON)` is accepted
/// too). The SDK decodes JSON (what the host sends native agents' messages in) and writes agent
/// state as JSON.
pub const JSON: &str = Codec::Json.content_type();

/// MessagePack's content type: what the SDK encodes every message in, with struct fields keyed by
/// name, so that, as with JSON, a sender's and a receiver's types match field by field by name,
/// not by position (the format is defined once for the host and the SDK, in
/// `warren_typename::msgpack`). It takes a wasm agent half the instructions JSON does. The host
/// decodes it for native agents and turns it into JSON for whatever needs JSON text.
pub const MSGPACK: &str = Codec::Msgpack.content_type();

/// The codec of a content type as the WIT carries it; another content type is returned.
#[inline]
fn codec_of(ct: &ContentType) -> Result<Codec, &str> {
    match ct {
        ContentType::Json => Ok(Codec::Json),
        ContentType::Msgpack => Ok(Codec::Msgpack),
        ContentType::Other(name) => codec_named(Some(name)),
    }
}

/// The codec of a payload's content type (`None` is JSON).
fn codec_named(ct: Option<&str>) -> Result<Codec, &str> {
    ct.map_or(Ok(Codec::Json), |name| Codec::of(name).ok_or(name))
}

/// A payload's content type as the WIT carries it.
fn content_type_to_wit(ct: Option<String>) -> ContentType {
    match codec_named(ct.as_deref()) {
        Ok(Codec::Json) => ContentType::Json,
        Ok(Codec::Msgpack) => ContentType::Msgpack,
        Err(_) => ContentType::Other(ct.unwrap_or_default()),
    }
}

/// A WIT content type as a payload's.
fn content_type_from_wit(ct: ContentType) -> Option<String> {
    match ct {
        ContentType::Json => None,
        ContentType::Msgpack => Some(MSGPACK.to_owned()),
        ContentType::Other(name) => Some(name),
    }
}

/// The bare name of a Rust type (`my::mod::WorkRequest` → `WorkRequest`), which is the message
/// type name on the wire; the host names messages with the same function.
pub use warren_typename::bare_type_name;
use warren_typename::static_bare_name;

/// The message type name of `T`.
pub fn type_name_of<T: ?Sized>() -> String {
    type_name_ref::<T>().to_owned()
}

/// The message type name of `T`, computed once per type (see `static_bare_name`): naming the
/// messages a handler sends and the responses it decodes needs no scan and no allocation.
fn type_name_ref<T: ?Sized>() -> &'static str {
    static_bare_name(std::any::type_name::<T>())
}

impl AgentId {
    /// An agent id from its type and key.
    pub fn new(agent_type: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            agent_type: agent_type.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.agent_type, self.key)
    }
}

impl TopicId {
    /// A topic id from its type and source.
    pub fn new(topic_type: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            topic_type: topic_type.into(),
            source: source.into(),
        }
    }
}

impl Error {
    /// A handler failure with a message.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Error::HandlerFailed(message.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Other(format!("JSON: {e}"))
    }
}

impl From<msgpack::EncodeError> for Error {
    fn from(e: msgpack::EncodeError) -> Self {
        Error::Other(format!("MessagePack: {e}"))
    }
}

/// Encodes `value` as a MessagePack payload named after its type (as the SDK sends messages).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, Error> {
    Ok(Payload {
        type_name: type_name_of::<T>(),
        content_type: Some(MSGPACK.to_owned()),
        data: msgpack::to_vec(value)?,
    })
}

/// Decodes a JSON or MessagePack payload into `T`. The payload's type name must be `T`'s (or `T`
/// must be `serde_json::Value`, which accepts anything).
pub fn decode<T: DeserializeOwned + 'static>(p: &Payload) -> Result<T, Error> {
    decode_as(
        &p.type_name,
        codec_named(p.content_type.as_deref()),
        &p.data,
    )
}

/// Decodes data of type `type_name` into `T`, which must be that type (or `serde_json::Value`).
fn decode_as<T: DeserializeOwned + 'static>(
    type_name: &str,
    content_type: Result<Codec, &str>,
    data: &[u8],
) -> Result<T, Error> {
    let expected = type_name_ref::<T>();
    if type_name != expected && expected != "Value" {
        return Err(Error::Other(format!(
            "expected a `{expected}`, got a `{type_name}`"
        )));
    }
    decode_data(type_name, content_type, data)
}

/// Decodes the `data` of a message of type `type_name` (already matched) into `T`.
fn decode_data<T: DeserializeOwned>(
    type_name: &str,
    content_type: Result<Codec, &str>,
    data: &[u8],
) -> Result<T, Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Other(format!("cannot decode `{type_name}`: {e}"));
    match content_type {
        Ok(Codec::Json) => serde_json::from_slice(data).map_err(|e| failed(&e)),
        Ok(Codec::Msgpack) => msgpack::from_slice(data).map_err(|e| failed(&e)),
        Err(ct) => Err(Error::Other(format!(
            "cannot decode `{type_name}` from {ct}: only {JSON} and {MSGPACK} are supported"
        ))),
    }
}

/// The bytes of a message's data: borrowed when a list, unpacked into `buf` when inline. An
/// inline length beyond the capacity is the sender's error.
#[inline]
fn data_in<'a>(d: &'a MessageData, buf: &'a mut [u8; inline::CAPACITY]) -> Result<&'a [u8], Error> {
    match d {
        MessageData::Bytes(b) => Ok(b),
        MessageData::Inline(b) => {
            inline::unpack_into(b.len, [b.word0, b.word1, b.word2, b.word3], buf)
                .map_err(|e| Error::Other(e.to_string()))
        }
    }
}

/// The data of `d`, owned.
fn data_into_vec(d: MessageData) -> Result<Vec<u8>, Error> {
    match d {
        MessageData::Bytes(b) => Ok(b),
        inline => Ok(data_in(&inline, &mut [0; inline::CAPACITY])?.to_vec()),
    }
}

/// `data` as a message's data: inline when it fits.
#[inline]
fn data_of(data: &[u8]) -> Option<MessageData> {
    let (len, [word0, word1, word2, word3]) = inline::pack(data)?;
    Some(MessageData::Inline(InlineBytes {
        len,
        word0,
        word1,
        word2,
        word3,
    }))
}

thread_local! {
    /// Where answers are encoded: one buffer reused, so a short answer (inline) allocates nothing.
    /// (Boxed, for the same reason as `TYPES`: the `Box` is what makes `None` all zeros.)
    #[allow(clippy::box_collection)]
    static SCRATCH: RefCell<Option<Box<Vec<u8>>>> = const { RefCell::new(None) };
}

/// `value` as MessagePack message data (fields by name), inline when it fits.
fn encode_data<T: Serialize + ?Sized>(value: &T) -> Result<MessageData, Error> {
    SCRATCH.with(|scratch| {
        // A `Serialize` impl that encodes a message itself finds the buffer taken: it gets its own.
        let Ok(mut slot) = scratch.try_borrow_mut() else {
            return Ok(MessageData::Bytes(msgpack::to_vec(value)?));
        };
        let buf: &mut Vec<u8> = slot.get_or_insert_default();
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve(128);
        }
        msgpack::write(value, buf)?;
        Ok(data_of(buf).unwrap_or_else(|| MessageData::Bytes(std::mem::take(buf))))
    })
}

thread_local! {
    /// The component's declared type table (`description.types`), once the agent is built: the
    /// messages it sends and the answers it gets name a type in it by index.
    /// (Boxed: `None` is then a null pointer, so the static is all zeros and sits in the
    /// component's `.bss`. An unboxed `Option<Vec<_>>` is not: its `None` is a capacity niche
    /// with the high bit set, which put the static in `.data`, and an instance's first call then
    /// copied one more page of the data image.)
    static TYPES: RefCell<Option<Box<[String]>>> = const { RefCell::new(None) };
}

thread_local! {
    /// The last type `outgoing` found in `TYPES`, by the address and length of its full name
    /// (`std::any::type_name`, a constant per type), with its index: a sender sends the same type
    /// again and again, and then neither shortens its name nor compares strings. (Two types whose
    /// full names are the same text have the same short name too, so they share an index.)
    static LAST_OUTGOING: std::cell::Cell<(usize, usize, u32)> =
        const { std::cell::Cell::new((0, 0, 0)) };
}

/// Sets the declared type table (once, when the agent's handlers are built; tests reset it).
fn set_types(types: Option<Box<[String]>>) {
    TYPES.with(|t| *t.borrow_mut() = types);
    LAST_OUTGOING.with(|c| c.set((0, 0, 0)));
}

/// The index of `T`'s name in the declared type table, if it is there.
fn declared_index<T: ?Sized>() -> Option<u32> {
    let full = std::any::type_name::<T>();
    let key = (full.as_ptr() as usize, full.len());
    let (ptr, len, index) = LAST_OUTGOING.with(std::cell::Cell::get);
    if (ptr, len) == key {
        return Some(index);
    }
    let name = type_name_ref::<T>();
    let index = TYPES.with(|t| t.borrow().as_ref()?.iter().position(|n| n == name))?;
    let index = u32::try_from(index).expect("fewer than 2^32 types");
    // Only a found type is kept: the table is set once and never changes after.
    LAST_OUTGOING.with(|c| c.set((key.0, key.1, index)));
    Some(index)
}

/// `value` as a message to send: its type by index when declared, its data inline when short.
fn outgoing<T: Serialize + ?Sized>(value: &T) -> Result<Message, Error> {
    Ok(Message {
        message_type: match declared_index::<T>() {
            Some(i) => MessageType::Declared(i),
            None => MessageType::Named(type_name_ref::<T>().to_owned()),
        },
        content_type: ContentType::Msgpack,
        data: encode_data(value)?,
    })
}

/// Decodes an answer into `R`, which must be the answer's type (or `serde_json::Value`).
fn decode_answer<R: DeserializeOwned + 'static>(m: &Message) -> Result<R, Error> {
    TYPES.with(|t| {
        let t = t.borrow();
        let name = name_in(t.as_deref().unwrap_or_default(), &m.message_type)?;
        decode_as(
            name,
            codec_of(&m.content_type),
            data_in(&m.data, &mut [0; inline::CAPACITY])?,
        )
    })
}

/// The name of message type `t` in the type table `types`; an index outside it is the sender's
/// error.
fn name_in<'a>(types: &'a [String], t: &'a MessageType) -> Result<&'a str, Error> {
    match t {
        MessageType::Declared(i) => types.get(*i as usize).map(String::as_str).ok_or_else(|| {
            Error::Other(format!(
                "message type index {i} is not in this agent's table of {} types",
                types.len()
            ))
        }),
        MessageType::Named(name) => Ok(name),
    }
}

/// The most recipients an instance resolves (the host's limit per instance).
const MAX_RECIPIENTS: usize = 256;

/// The recipients this instance resolved with the host (with their handles), the index of each
/// by type and key, and the last one sent to (a relay sends to one agent again and again: then
/// two string compares find it).
#[derive(Default)]
struct Recipients {
    known: Vec<(AgentId, u32)>,
    by_type: std::collections::HashMap<
        String,
        std::collections::HashMap<String, usize, FixedHash>,
        FixedHash,
    >,
    last: usize,
}

/// A hasher with fixed keys: recipients are this instance's own ids, and std's randomly keyed
/// one would import `wasi:random` into every plugin.
type FixedHash = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

thread_local! {
    static RECIPIENTS: RefCell<Option<Box<Recipients>>> = const { RefCell::new(None) };
}

/// The host's handle for `recipient` (resolved on the first send to it), or `None` to send by
/// id: past the instance's limit of handles, or when the host refuses to resolve it (the send by
/// id then reports the same error, with its full context).
fn recipient_handle(recipient: &AgentId) -> Option<u32> {
    RECIPIENTS.with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        let r = r.get_or_insert_default();
        if let Some((id, h)) = r.known.get(r.last)
            && id.key == recipient.key
            && id.agent_type == recipient.agent_type
        {
            return Some(*h);
        }
        let known = r
            .by_type
            .get(&recipient.agent_type)
            .and_then(|keys| keys.get(&recipient.key))
            .copied();
        let i = match known {
            Some(i) => i,
            None if r.known.len() >= MAX_RECIPIENTS => return None,
            None => {
                let h = host::resolve(recipient).ok()?;
                r.known.push((recipient.clone(), h));
                r.by_type
                    .entry(recipient.agent_type.clone())
                    .or_default()
                    .insert(recipient.key.clone(), r.known.len() - 1);
                r.known.len() - 1
            }
        };
        r.last = i;
        Some(r.known[i].1)
    })
}

/// Sends `message` as this agent: by the recipient's handle when it has one.
fn send_message(recipient: &AgentId, message: &Message) -> Result<Message, Error> {
    match recipient_handle(recipient) {
        Some(h) => host::send_to(h, message),
        None => host::send(recipient, message),
    }
}

/// Sends `message` to `recipient` as this agent and decodes its response as `R`.
pub fn send<R: DeserializeOwned + 'static>(
    message: &(impl Serialize + ?Sized),
    recipient: &AgentId,
) -> Result<R, Error> {
    let response = send_message(recipient, &outgoing(message)?)?;
    decode_answer(&response)
}

/// Sends `message` to `recipient` as this agent and keeps its response as it arrived (see
/// [`Reply`]): held by the host when the recipient has a handle, so the response is not copied
/// into this instance unless [`Reply::decode`] reads it.
pub fn send_raw<R: 'static>(
    message: &(impl Serialize + ?Sized),
    recipient: &AgentId,
) -> Result<Reply<R>, Error> {
    let message = outgoing(message)?;
    Ok(match recipient_handle(recipient) {
        Some(h) => Reply::held(host::send_to_held(h, &message)?),
        None => Reply::wrap(host::send(recipient, &message)?),
    })
}

/// Another agent's answer as it arrived: its message type and encoded data, unread. A handler
/// that answers with it passes it on unchanged, without decoding and re-encoding it (what a relay
/// or a router wants); [`Reply::decode`] reads it. `R` is the type the answer is expected to have:
/// it is declared in the agent's type table like any answer type, so it crosses the component
/// boundary as an index.
///
/// A reply from [`send_raw`] stays in the host (`send-to-held`) until it is answered with, read or
/// dropped: answering with it passes it on without copying it into this instance and back. It
/// belongs to the message being handled: answered with from a later message, it is an error.
pub struct Reply<R> {
    /// The answer as `handle` passes it on: a message in this instance, or a response the host
    /// holds. `None` once answered with.
    answer: Option<WitAnswer>,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<R> Reply<R> {
    fn wrap(message: Message) -> Self {
        Reply {
            answer: Some(WitAnswer::Message(message)),
            _r: std::marker::PhantomData,
        }
    }

    fn held(handle: u32) -> Self {
        Reply {
            answer: Some(WitAnswer::Held(handle)),
            _r: std::marker::PhantomData,
        }
    }
}

impl<R> Drop for Reply<R> {
    fn drop(&mut self) {
        if let Some(WitAnswer::Held(h)) = self.answer {
            host::drop_held(h);
        }
    }
}

impl<R: DeserializeOwned + 'static> Reply<R> {
    /// The answer as an `R` (an error if it is another type).
    pub fn decode(&self) -> Result<R, Error> {
        match &self.answer {
            Some(WitAnswer::Message(m)) => decode_answer(m),
            Some(WitAnswer::Held(h)) => decode_answer(&host::held_response(*h)?),
            None => unreachable!("a reply is used up only by answering with it"),
        }
    }
}

impl<R: Serialize + 'static> Reply<R> {
    /// An answer made here, for a handler that sometimes passes a reply on and sometimes answers
    /// itself.
    pub fn new(value: &R) -> Result<Self, Error> {
        Ok(Reply::wrap(outgoing(value)?))
    }
}

impl<R> std::fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply<{}>", type_name_ref::<R>())
    }
}

/// What a handler answers with: any serializable value (encoded as JSON and named after its type;
/// `()` answers with no message), or a [`Reply`] (passed on as it came).
pub trait Answer: 'static {
    /// The type name declared for this answer, `None` for no message.
    #[doc(hidden)]
    fn declared_type() -> Option<&'static str>;
    /// The answer as the host receives it; `declared` is the index of
    /// [`Answer::declared_type`].
    #[doc(hidden)]
    fn into_message(self, declared: Option<u32>) -> Result<Option<WitAnswer>, Error>;
}

impl<S: Serialize + 'static> Answer for S {
    fn declared_type() -> Option<&'static str> {
        (std::any::TypeId::of::<S>() != std::any::TypeId::of::<()>()).then(type_name_ref::<S>)
    }

    fn into_message(self, declared: Option<u32>) -> Result<Option<WitAnswer>, Error> {
        let Some(t) = declared else {
            return Ok(None);
        };
        Ok(Some(WitAnswer::Message(Message {
            message_type: MessageType::Declared(t),
            content_type: ContentType::Msgpack,
            data: encode_data(&self)?,
        })))
    }
}

impl<R: 'static> Answer for Reply<R> {
    fn declared_type() -> Option<&'static str> {
        Some(type_name_ref::<R>())
    }

    fn into_message(mut self, _: Option<u32>) -> Result<Option<WitAnswer>, Error> {
        // Taken, so dropping the reply releases nothing.
        Ok(self.answer.take())
    }
}

/// Publishes `message` to `topic` as this agent.
pub fn publish(message: &(impl Serialize + ?Sized), topic: &TopicId) -> Result<(), Error> {
    host::publish(topic, &outgoing(message)?)
}

/// This instance's agent id.
pub fn self_id() -> AgentId {
    host::self_id()
}

/// Writes a line into the host's log, tagged with this agent's id.
pub fn log(level: Level, message: &str) {
    host::log(level, message)
}

/// What a handler knows about the message it is handling. Whether it is a direct send comes with
/// the call; the sender, topic and message id are fetched from the host the first time a handler
/// asks for one of them (a handler that never asks costs the call nothing).
#[derive(Debug, Clone)]
pub struct Context {
    is_rpc: bool,
    full: std::cell::OnceCell<MessageContext>,
}

impl Context {
    pub(crate) fn new(is_rpc: bool) -> Self {
        Self {
            is_rpc,
            full: std::cell::OnceCell::new(),
        }
    }

    /// A context with every field given, for calling handlers outside a host (unit tests).
    pub fn with(
        sender: Option<AgentId>,
        topic: Option<TopicId>,
        is_rpc: bool,
        message_id: impl Into<String>,
    ) -> Self {
        Self {
            is_rpc,
            full: std::cell::OnceCell::from(MessageContext {
                sender,
                topic,
                is_rpc,
                message_id: message_id.into(),
            }),
        }
    }

    fn full(&self) -> &MessageContext {
        self.full.get_or_init(host::context)
    }

    /// True for a direct send (which expects a response), false for a published message.
    pub fn is_rpc(&self) -> bool {
        self.is_rpc
    }

    /// The sending agent; `None` for a message from outside any agent.
    pub fn sender(&self) -> Option<&AgentId> {
        self.full().sender.as_ref()
    }

    /// The topic, for a published message.
    pub fn topic(&self) -> Option<&TopicId> {
        self.full().topic.as_ref()
    }

    /// The message id; every recipient of one publish sees the same id.
    pub fn message_id(&self) -> &str {
        &self.full().message_id
    }
}

impl Context {
    /// This agent's id.
    pub fn self_id(&self) -> AgentId {
        self_id()
    }

    /// AutoGen's `DefaultTopicId()` inside a handler: `default/<this agent's key>`.
    pub fn default_topic(&self) -> TopicId {
        TopicId::new("default", self_id().key)
    }

    /// Sends as this agent; see [`send`].
    pub fn send<R: DeserializeOwned + 'static>(
        &self,
        message: &(impl Serialize + ?Sized),
        recipient: &AgentId,
    ) -> Result<R, Error> {
        send(message, recipient)
    }

    /// Sends as this agent and keeps the answer as it arrived; see [`send_raw`].
    pub fn send_raw<R: 'static>(
        &self,
        message: &(impl Serialize + ?Sized),
        recipient: &AgentId,
    ) -> Result<Reply<R>, Error> {
        send_raw(message, recipient)
    }

    /// Publishes as this agent; see [`publish`].
    pub fn publish(
        &self,
        message: &(impl Serialize + ?Sized),
        topic: &TopicId,
    ) -> Result<(), Error> {
        publish(message, topic)
    }
}

/// An agent type. The struct is the agent's state: it is created with `Default` for a new agent
/// id, saved with `Serialize` and restored with `Deserialize` (mark fields that are not state
/// `#[serde(skip)]`). Export it with [`export_agent!`].
pub trait Agent: Default + Serialize + DeserializeOwned + 'static {
    /// Declares the handlers, once per instance. Every instance must declare the same ones, in
    /// the same order: the host learns the component's message types from one instance.
    fn handlers(h: &mut Handlers<Self>);

    /// The description reported by `agent_metadata`.
    fn description() -> String {
        String::new()
    }

    /// Sets up what the agent derives from its id rather than keeps as state (fields marked
    /// `#[serde(skip)]`). Called for every new value of the agent: after `Default`, before the
    /// agent's first message, and after `load_state`, which builds the value from the saved
    /// state alone (so skipped fields start from `Default` there too). A state field set here
    /// would overwrite the restored one: give state its initial value only where it is still
    /// unset. The default does nothing.
    fn init(&mut self, id: &AgentId) {
        let _ = id;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rpc,
    Event,
    Any,
}

enum Outcome {
    /// The predicate declined; try the next handler.
    Declined,
    /// The handler ran: its response (none for no value), or its error.
    Done(Result<Option<WitAnswer>, Error>),
}

/// A typed handler: decodes the message's data, checks the predicate, runs, encodes the response.
type Call<A> = Box<dyn Fn(&mut A, Result<Codec, &str>, &[u8], &Context) -> Outcome>;
type Fallback<A> = Box<dyn Fn(&mut A, Payload, &Context) -> Result<Option<Payload>, Error>>;
type Pred = Box<dyn Fn(&dyn Any, &Context) -> bool>;

struct Route<A> {
    /// The handled message type, an index into [`Handlers::types`].
    message_type: u32,
    kind: Kind,
    call: Call<A>,
}

/// The handler table of an [`Agent`].
pub struct Handlers<A> {
    routes: Vec<Route<A>>,
    fallback: Option<Fallback<A>>,
    /// Every type name a handler takes or answers with, each once: the table `describe` gives
    /// the host, so messages of these types cross the boundary as an index instead of a name.
    types: Vec<String>,
}

impl<A> std::fmt::Debug for Handlers<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.routes
                    .iter()
                    .map(|r| (&self.types[r.message_type as usize], r.kind)),
            )
            .finish()
    }
}

/// Returned by the [`Handlers`] methods to add a predicate to the handler just declared.
pub struct When<T> {
    slot: std::rc::Rc<RefCell<Option<Pred>>>,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for When<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "When<{}>", type_name_of::<T>())
    }
}

impl<T: 'static> When<T> {
    /// Runs the handler only when `pred` accepts the message.
    pub fn when(self, pred: impl Fn(&T, &Context) -> bool + 'static) {
        *self.slot.borrow_mut() = Some(Box::new(move |v, ctx| {
            v.downcast_ref::<T>().is_some_and(|t| pred(t, ctx))
        }));
    }
}

impl<A: 'static> Handlers<A> {
    fn push<T, R>(
        &mut self,
        kind: Kind,
        f: impl Fn(&mut A, T, &Context) -> Result<R, Error> + 'static,
    ) -> When<T>
    where
        T: DeserializeOwned + 'static,
        R: Answer,
    {
        let pred: std::rc::Rc<RefCell<Option<Pred>>> = Default::default();
        let p = pred.clone();
        let type_name = type_name_ref::<T>();
        let message_type = self.declare(type_name);
        // A handler answering `()` answers with no message, so `()` is not declared.
        let response_type = R::declared_type().map(|name| self.declare(name));
        let call: Call<A> = Box::new(move |agent, content_type, data, ctx| {
            let value: T = match decode_data(type_name, content_type, data) {
                Ok(v) => v,
                Err(e) => return Outcome::Done(Err(e)),
            };
            if let Some(pred) = &*p.borrow()
                && !pred(&value, ctx)
            {
                return Outcome::Declined;
            }
            Outcome::Done(f(agent, value, ctx).and_then(|r| r.into_message(response_type)))
        });
        self.routes.push(Route {
            message_type,
            kind,
            call,
        });
        When {
            slot: pred,
            _t: std::marker::PhantomData,
        }
    }

    /// A handler for direct sends of `T`; its `R` is the response (see [`Answer`]).
    pub fn rpc<T, R>(
        &mut self,
        f: impl Fn(&mut A, T, &Context) -> Result<R, Error> + 'static,
    ) -> When<T>
    where
        T: DeserializeOwned + 'static,
        R: Answer,
    {
        self.push(Kind::Rpc, f)
    }

    /// A handler for published `T`s.
    pub fn event<T>(
        &mut self,
        f: impl Fn(&mut A, T, &Context) -> Result<(), Error> + 'static,
    ) -> When<T>
    where
        T: DeserializeOwned + 'static,
    {
        self.push(Kind::Event, f)
    }

    /// A handler for both sends and publishes of `T`.
    pub fn message<T, R>(
        &mut self,
        f: impl Fn(&mut A, T, &Context) -> Result<R, Error> + 'static,
    ) -> When<T>
    where
        T: DeserializeOwned + 'static,
        R: Answer,
    {
        self.push(Kind::Any, f)
    }

    /// A handler for any message no typed handler takes, as a raw payload (for agents that
    /// forward or echo messages whatever their type). Without one, such messages are answered
    /// with `Error::CannotHandle`.
    pub fn fallback(
        &mut self,
        f: impl Fn(&mut A, Payload, &Context) -> Result<Option<Payload>, Error> + 'static,
    ) {
        self.fallback = Some(Box::new(f));
    }

    /// The handled message type names, in declaration order.
    pub fn handled_types(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.routes {
            let name = &self.types[r.message_type as usize];
            if !v.contains(name) {
                v.push(name.clone());
            }
        }
        v
    }

    fn new() -> Self {
        Self {
            routes: Vec::new(),
            fallback: None,
            types: Vec::new(),
        }
    }

    /// The index of `name` in the type table, if it is there.
    fn index_of(&self, name: &str) -> Option<u32> {
        let i = self.types.iter().position(|t| t == name)?;
        Some(u32::try_from(i).expect("fewer than 2^32 message types"))
    }

    /// The index of `name` in the type table, added if new.
    fn declare(&mut self, name: &str) -> u32 {
        self.index_of(name).unwrap_or_else(|| {
            self.types.push(name.to_owned());
            u32::try_from(self.types.len() - 1).expect("fewer than 2^32 message types")
        })
    }

    /// The type's name; an index outside the table is the caller's error.
    fn type_name<'a>(&'a self, t: &'a MessageType) -> Result<&'a str, Error> {
        name_in(&self.types, t)
    }

    /// A payload as `handle` receives it (the type interned if it is in the table).
    fn to_message(&self, p: Payload) -> Message {
        Message {
            message_type: match self.index_of(&p.type_name) {
                Some(i) => MessageType::Declared(i),
                None => MessageType::Named(p.type_name),
            },
            content_type: content_type_to_wit(p.content_type),
            data: data_of(&p.data).unwrap_or(MessageData::Bytes(p.data)),
        }
    }

    /// A message as a payload, its type by name.
    fn to_payload(&self, m: Message) -> Result<Payload, Error> {
        Ok(Payload {
            type_name: match m.message_type {
                MessageType::Named(name) => name,
                declared => self.type_name(&declared)?.to_owned(),
            },
            content_type: content_type_from_wit(m.content_type),
            data: data_into_vec(m.data)?,
        })
    }

    /// Runs the first handler that takes `message` (by type, kind and predicate), else the
    /// fallback. Typed handlers match by index, so no type name is compared or copied.
    fn dispatch(
        &self,
        agent: &mut A,
        message: Message,
        ctx: &Context,
    ) -> Result<Option<WitAnswer>, Error> {
        let index = match &message.message_type {
            MessageType::Declared(i) => Some(*i),
            MessageType::Named(name) => self.index_of(name),
        };
        if let Some(index) = index {
            let mut buf = [0; inline::CAPACITY];
            let data = data_in(&message.data, &mut buf)?;
            for r in &self.routes {
                match r.kind {
                    Kind::Rpc if !ctx.is_rpc => continue,
                    Kind::Event if ctx.is_rpc => continue,
                    _ => {}
                }
                if r.message_type != index {
                    continue;
                }
                let ct = codec_of(&message.content_type);
                if let Outcome::Done(result) = (r.call)(agent, ct, data, ctx) {
                    return result;
                }
            }
        }
        let payload = self.to_payload(message)?;
        match &self.fallback {
            Some(f) => Ok(f(agent, payload, ctx)?.map(|p| WitAnswer::Message(self.to_message(p)))),
            None => Err(Error::CannotHandle(payload.type_name)),
        }
    }
}

/// Everything `export_agent!` expands to calls into. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use wit_bindgen;

    pub use crate::bindings::warren::agent::types::{Answer, Message};

    /// The agents a component instance hosts (one, or several of one type in a shared instance),
    /// with the handler table they share.
    pub struct Live<A> {
        handlers: Handlers<A>,
        /// By slot (the host's `agent` argument); `None` until the slot's first call.
        agents: Vec<Option<A>>,
    }

    /// Where `export_agent!` keeps the live agents: a thread-local of the agent's own type (no
    /// downcast per call), empty until the first call builds it. (`None` is a null pointer, so
    /// the slot sits in the component's `.bss`, not in the data image every instance maps.)
    pub type Slot<A> = RefCell<Option<Box<Live<A>>>>;

    impl<A> std::fmt::Debug for Live<A> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Live")
                .field("agent", &type_name_of::<A>())
                .field("agents", &self.agents.len())
                .finish_non_exhaustive()
        }
    }

    /// The thread-local `export_agent!` declares for the agent type.
    pub type LiveKey<A> = &'static std::thread::LocalKey<Slot<A>>;

    /// Slots a shared instance may use past the highest one seen so far. The host gives them out
    /// in order, so a larger jump is a broken host, refused rather than allocated.
    const MAX_SLOT_JUMP: usize = 1 << 16;

    fn with_instance<A: Agent, R>(key: LiveKey<A>, f: impl FnOnce(&mut Live<A>) -> R) -> R {
        key.with(|cell| {
            let mut slot = cell.borrow_mut();
            let live = slot.get_or_insert_with(|| {
                let mut handlers = Handlers::new();
                A::handlers(&mut handlers);
                // Messages sent from here on name declared types by index. (Not during `init`:
                // the host learns the table from this instance's `describe`, which may be
                // what is building it.)
                set_types(Some(handlers.types.clone().into()));
                Box::new(Live {
                    handlers,
                    agents: Vec::new(),
                })
            });
            f(live)
        })
    }

    /// Grows `agents` to hold slot `agent` (empty), unless the jump is implausibly far.
    #[cold]
    fn grow<A>(agents: &mut Vec<Option<A>>, agent: u32) -> Result<(), String> {
        let i = agent as usize;
        if i - agents.len() > MAX_SLOT_JUMP {
            return Err(format!(
                "agent slot {i} is far past the {} slots in use",
                agents.len()
            ));
        }
        agents.resize_with(i + 1, || None);
        Ok(())
    }

    /// Slot `agent`, grown into (empty) if the host gave it out since the last call.
    fn slot<A>(agents: &mut Vec<Option<A>>, agent: u32) -> Result<&mut Option<A>, String> {
        let i = agent as usize;
        if i >= agents.len() {
            grow(agents, agent)?;
        }
        Ok(&mut agents[i])
    }

    /// The agent in slot `agent`, created (`Default`, then `init`) on its first call.
    fn agent_in<A: Agent>(agents: &mut Vec<Option<A>>, agent: u32) -> Result<&mut A, String> {
        Ok(slot(agents, agent)?.get_or_insert_with(new_agent))
    }

    #[cold]
    fn new_agent<A: Agent>() -> A {
        let mut a = A::default();
        a.init(&self_id());
        a
    }

    pub fn handle<A: Agent>(
        key: LiveKey<A>,
        agent: u32,
        is_rpc: bool,
        message: Message,
    ) -> Result<Option<WitAnswer>, Error> {
        let ctx = Context::new(is_rpc);
        with_instance(key, |live| {
            let a = agent_in(&mut live.agents, agent).map_err(Error::HandlerFailed)?;
            live.handlers.dispatch(a, message, &ctx)
        })
    }

    pub fn save_state<A: Agent>(key: LiveKey<A>, agent: u32) -> Result<String, String> {
        with_instance(key, |live| {
            serde_json::to_string(agent_in(&mut live.agents, agent)?).map_err(|e| e.to_string())
        })
    }

    pub fn load_state<A: Agent>(key: LiveKey<A>, agent: u32, state: String) -> Result<(), String> {
        let mut loaded: A = serde_json::from_str(&state).map_err(|e| e.to_string())?;
        // Replaces the agent without building a default one first; what it derives from its id
        // (skipped by serde) is set up again.
        loaded.init(&self_id());
        with_instance(key, |live| {
            *slot(&mut live.agents, agent)? = Some(loaded);
            Ok(())
        })
    }

    pub fn describe<A: Agent>(key: LiveKey<A>) -> Description {
        let (handles, types) = with_instance(key, |live| {
            (live.handlers.handled_types(), live.handlers.types.clone())
        });
        Description {
            text: A::description(),
            handles,
            types,
            multi_agent: true,
        }
    }
}

/// Exports an [`Agent`] type as this component's agent. Use once per plugin crate.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct __WarrenAgent;
            ::std::thread_local! {
                static __WARREN_LIVE: $crate::__private::Slot<$agent> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            impl $crate::bindings::exports::warren::agent::agent::Guest for __WarrenAgent {
                fn handle(
                    agent: u32,
                    is_rpc: bool,
                    message: $crate::__private::Message,
                ) -> ::core::result::Result<
                    ::core::option::Option<$crate::__private::Answer>,
                    $crate::Error,
                > {
                    $crate::__private::handle::<$agent>(&__WARREN_LIVE, agent, is_rpc, message)
                }
                fn save_state(
                    agent: u32,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::save_state::<$agent>(&__WARREN_LIVE, agent)
                }
                fn load_state(
                    agent: u32,
                    state: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::load_state::<$agent>(&__WARREN_LIVE, agent, state)
                }
                fn describe() -> $crate::bindings::exports::warren::agent::agent::Description {
                    $crate::__private::describe::<$agent>(&__WARREN_LIVE)
                }
            }
            // Only a wasm build exports the symbols; a host build (clippy, unit tests) type-checks
            // the glue without them, since export names like `warren:agent/agent@0.1.0#handle`
            // are not valid symbol names in a native shared library.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_plugin!(__WarrenAgent with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Ping {
        i: i64,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Tester {
        seen: Vec<String>,
    }

    impl Agent for Tester {
        fn handlers(h: &mut Handlers<Self>) {
            h.rpc(|me: &mut Tester, m: Ping, _| {
                me.seen.push(format!("big {}", m.i));
                Ok(m.i * 10)
            })
            .when(|m: &Ping, _| m.i > 100);
            h.rpc(|me: &mut Tester, m: Ping, _| {
                me.seen.push(format!("rpc {}", m.i));
                Ok(m.i + 1)
            });
            h.event(|me: &mut Tester, m: Ping, _| {
                me.seen.push(format!("event {}", m.i));
                Ok(())
            });
        }
    }

    fn ctx(is_rpc: bool) -> Context {
        Context::with(None, None, is_rpc, "m")
    }

    #[test]
    fn messages_go_as_msgpack_by_name_and_json_and_msgpack_are_read() {
        let p = encode(&Ping { i: 3 }).unwrap();
        assert_eq!(p.content_type.as_deref(), Some(MSGPACK));
        // A map keyed by field name (`{"i": 3}`), not a positional array (`[3]`).
        assert_eq!(p.data, [0x81, 0xa1, b'i', 0x03]);
        assert_eq!(decode::<Ping>(&p).unwrap(), Ping { i: 3 });
        // JSON, as `None` (how the host sends it) or by name.
        for ct in [None, Some(JSON.to_owned())] {
            let json = Payload {
                type_name: "Ping".into(),
                content_type: ct,
                data: br#"{"i":4}"#.to_vec(),
            };
            assert_eq!(decode::<Ping>(&json).unwrap(), Ping { i: 4 });
        }
        // Fields match by name, as in JSON: another order and a field the receiver does not
        // know decode the same.
        #[derive(Serialize)]
        struct NewerPing {
            note: &'static str,
            i: i64,
        }
        let mut newer = encode(&NewerPing { note: "x", i: 9 }).unwrap();
        newer.type_name = "Ping".into();
        assert_eq!(decode::<Ping>(&newer).unwrap(), Ping { i: 9 });
        // Types with a human-readable form travel in it, as in JSON.
        let addr = encode(&std::net::Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(addr.data[1..], *b"127.0.0.1");
        let text: String = decode_data("Ipv4Addr", Ok(Codec::Msgpack), &addr.data).unwrap();
        assert_eq!(text, "127.0.0.1");
        // Data after the message is refused, as in JSON.
        let mut trailing = p.clone();
        trailing.data.push(0x00);
        let e = decode::<Ping>(&trailing).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("data after the message")),
            "{e:?}"
        );
        // Other content types are refused, by name.
        let mut other = p;
        other.content_type = Some("text/plain".into());
        let e = decode::<Ping>(&other).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("text/plain")),
            "{e:?}"
        );
    }

    #[test]
    fn type_names_are_bare_and_borrowed_for_plain_paths() {
        assert_eq!(type_name_ref::<Ping>(), "Ping");
        assert_eq!(type_name_ref::<i64>(), "i64");
        assert_eq!(type_name_ref::<str>(), "str");
        for (name, expected) in [
            (type_name_of::<Vec<Ping>>(), "Vec<Ping>"),
            (type_name_of::<(Ping, i64)>(), "(Ping, i64)"),
            (type_name_of::<[u8]>(), "[u8]"),
            (type_name_of::<&str>(), "&str"),
            (
                type_name_of::<std::collections::HashMap<String, Vec<Ping>>>(),
                "HashMap<String, Vec<Ping>>",
            ),
        ] {
            assert_eq!(name, expected);
        }
    }

    /// Runs a payload through the table as `handle` would get it (interned when declared).
    fn run(
        h: &Handlers<Tester>,
        a: &mut Tester,
        p: Payload,
        rpc: bool,
    ) -> Result<Option<Payload>, Error> {
        let m = h.to_message(p);
        h.dispatch(a, m, &ctx(rpc))
            .map(|r| r.map(|m| h.to_payload(made(m)).unwrap()))
    }

    /// The message of an answer the handler made (not a held response).
    fn made(a: WitAnswer) -> Message {
        match a {
            WitAnswer::Message(m) => m,
            WitAnswer::Held(h) => panic!("answered with held response {h}"),
        }
    }

    #[test]
    fn routes_by_type_kind_and_predicate_in_declaration_order() {
        let mut h = Handlers::new();
        Tester::handlers(&mut h);
        let mut a = Tester::default();
        let r = run(&h, &mut a, encode(&Ping { i: 1 }).unwrap(), true)
            .unwrap()
            .unwrap();
        assert_eq!(decode::<i64>(&r).unwrap(), 2);
        let r = run(&h, &mut a, encode(&Ping { i: 500 }).unwrap(), true)
            .unwrap()
            .unwrap();
        assert_eq!(decode::<i64>(&r).unwrap(), 5000);
        let r = run(&h, &mut a, encode(&Ping { i: 2 }).unwrap(), false).unwrap();
        assert!(r.is_none(), "an event handler returns no payload");
        assert_eq!(a.seen, ["rpc 1", "big 500", "event 2"]);
        assert_eq!(h.handled_types(), ["Ping"]);
    }

    #[test]
    fn declared_types_travel_as_indices_both_ways() {
        let mut h = Handlers::new();
        Tester::handlers(&mut h);
        // What the handlers take and answer with, each once, in declaration order.
        assert_eq!(h.types, ["Ping", "i64"]);
        let mut a = Tester::default();
        let m = h.to_message(encode(&Ping { i: 4 }).unwrap());
        assert!(matches!(m.message_type, MessageType::Declared(0)));
        let r = made(h.dispatch(&mut a, m, &ctx(true)).unwrap().unwrap());
        assert!(
            matches!(r.message_type, MessageType::Declared(1)),
            "the answer is interned too"
        );
        assert!(
            matches!(r.data, MessageData::Inline(_)),
            "a short answer is inline"
        );
        // MessagePack's 5 is the one byte 5 (JSON's would be `b"5"`, 53).
        assert!(matches!(r.content_type, ContentType::Msgpack));
        assert_eq!(data_in(&r.data, &mut [0; 32]).unwrap(), [5]);
        // A declared type sent by name (a host that does not intern) reaches the same handler,
        // in JSON too.
        let named = Message {
            message_type: MessageType::Named("Ping".into()),
            content_type: ContentType::Json,
            data: MessageData::Bytes(b"{\"i\":6}".to_vec()),
        };
        let r = made(h.dispatch(&mut a, named, &ctx(true)).unwrap().unwrap());
        assert_eq!(data_in(&r.data, &mut [0; 32]).unwrap(), [7]);
        // An index outside the table is a typed error naming it, not a panic.
        let bad = Message {
            message_type: MessageType::Declared(9),
            content_type: ContentType::Json,
            data: data_of(b"{}").unwrap(),
        };
        let e = h.dispatch(&mut a, bad, &ctx(true)).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("index 9")),
            "{e:?}"
        );
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pong {
        i: i64,
    }

    /// Answers `Ping{i}` the way a relay does, with a reply it got: for `i` = 41, held response
    /// 41 (as if `ctx.send_raw::<Pong>(..)` had got it held by the host); otherwise one it got as
    /// bytes (JSON no encoder would write, and a type given by name).
    #[derive(Default, Serialize, Deserialize)]
    struct Relay;
    impl Agent for Relay {
        fn handlers(h: &mut Handlers<Self>) {
            h.rpc(|_: &mut Relay, m: Ping, _| {
                Ok(match m.i {
                    41 => Reply::<Pong>::held(41),
                    _ => Reply::<Pong>::wrap(Message {
                        message_type: MessageType::Named("Pong".into()),
                        content_type: ContentType::Json,
                        data: MessageData::Bytes(b"{ \"i\" : 7 }".to_vec()),
                    }),
                })
            });
        }
    }

    #[test]
    fn a_reply_is_passed_on_as_it_came_and_its_type_is_declared() {
        let mut h = Handlers::new();
        Relay::handlers(&mut h);
        assert_eq!(h.types, ["Ping", "Pong"], "the reply's type is declared");
        let m = h.to_message(encode(&Ping { i: 1 }).unwrap());
        let r = made(h.dispatch(&mut Relay, m, &ctx(true)).unwrap().unwrap());
        assert!(matches!(r.message_type, MessageType::Named(ref n) if n == "Pong"));
        let MessageData::Bytes(data) = &r.data else {
            panic!("bytes in, bytes out");
        };
        assert_eq!(data, b"{ \"i\" : 7 }", "not decoded and encoded again");
        let reply = Reply::<Pong>::wrap(r.clone());
        assert_eq!(reply.decode().unwrap(), Pong { i: 7 });
        assert!(Reply::<String>::wrap(r).decode().is_err());
    }

    #[test]
    fn answering_with_a_held_reply_hands_its_handle_back_without_releasing_it() {
        let mut h = Handlers::new();
        Relay::handlers(&mut h);
        let m = h.to_message(encode(&Ping { i: 41 }).unwrap());
        // Releasing it would call the host's `drop-held`, which a native test build cannot
        // reach (it would panic): the answer moves the handle out instead.
        let r = h.dispatch(&mut Relay, m, &ctx(true)).unwrap();
        assert!(matches!(r, Some(WitAnswer::Held(41))), "{r:?}");
    }

    #[test]
    fn the_fallback_sees_names_and_its_answers_are_interned_when_declared() {
        #[derive(Default, Serialize, Deserialize)]
        struct Fwd;
        impl Agent for Fwd {
            fn handlers(h: &mut Handlers<Self>) {
                h.rpc(|_: &mut Fwd, m: Ping, _| Ok::<_, Error>(m.i));
                h.fallback(|_: &mut Fwd, p: Payload, _| Ok(Some(p)));
            }
        }
        let mut h = Handlers::new();
        Fwd::handlers(&mut h);
        let mut a = Fwd;
        // An undeclared type reaches the fallback by name and goes back by name.
        let p = encode("text").unwrap();
        let r = made(
            h.dispatch(&mut a, h.to_message(p.clone()), &ctx(true))
                .unwrap()
                .unwrap(),
        );
        assert!(matches!(r.message_type, MessageType::Named(ref n) if n == "str"));
        assert_eq!(format!("{:?}", h.to_payload(r).unwrap()), format!("{p:?}"));
        // An event of a declared type (the route is rpc-only) falls back with its name restored.
        let p = encode(&Ping { i: 1 }).unwrap();
        let r = made(
            h.dispatch(&mut a, h.to_message(p.clone()), &ctx(false))
                .unwrap()
                .unwrap(),
        );
        assert!(matches!(r.message_type, MessageType::Declared(0)));
        assert_eq!(format!("{:?}", h.to_payload(r).unwrap()), format!("{p:?}"));
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_typed_errors() {
        let mut h = Handlers::new();
        Tester::handlers(&mut h);
        let mut a = Tester::default();
        let e = run(&h, &mut a, encode("text").unwrap(), true).unwrap_err();
        assert!(
            matches!(e, Error::CannotHandle(ref t) if t == "str"),
            "{e:?}"
        );
        let bad = Payload {
            type_name: "Ping".into(),
            content_type: None,
            data: b"{}".to_vec(),
        };
        let e = run(&h, &mut a, bad, true).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("missing field `i`")),
            "{e:?}"
        );
    }

    #[test]
    fn message_data_is_inline_up_to_32_bytes_both_ways() {
        #[derive(Default, Serialize, Deserialize)]
        struct Echo;
        impl Agent for Echo {
            fn handlers(h: &mut Handlers<Self>) {
                h.rpc(|_: &mut Echo, s: String, _| Ok::<_, Error>(s));
            }
        }
        let mut h = Handlers::new();
        Echo::handlers(&mut h);
        let mut a = Echo;
        // 31 characters encode to 32 bytes of MessagePack (a one-byte header: inline); 32 to 34
        // (a two-byte header: a list).
        for n in [0, 31, 32, 500] {
            let text = "x".repeat(n);
            let m = h.to_message(encode(&text).unwrap());
            assert_eq!(matches!(m.data, MessageData::Inline(_)), n < 32, "{n}");
            let r = made(h.dispatch(&mut a, m, &ctx(true)).unwrap().unwrap());
            assert_eq!(matches!(r.data, MessageData::Inline(_)), n < 32, "{n}");
            assert_eq!(decode::<String>(&h.to_payload(r).unwrap()).unwrap(), text);
        }
        // A long answer right after a short one, and the other way round (one reused buffer).
        for n in [500, 3, 700, 1] {
            let m = h.to_message(encode(&"y".repeat(n)).unwrap());
            let r = made(h.dispatch(&mut a, m, &ctx(true)).unwrap().unwrap());
            assert_eq!(
                decode::<String>(&h.to_payload(r).unwrap()).unwrap().len(),
                n
            );
        }
        // An inline length beyond the capacity is a typed error, not a panic.
        let bad = Message {
            message_type: MessageType::Declared(0),
            content_type: ContentType::Json,
            data: MessageData::Inline(InlineBytes {
                len: 40,
                word0: 0,
                word1: 0,
                word2: 0,
                word3: 0,
            }),
        };
        let e = h.dispatch(&mut a, bad, &ctx(true)).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("40 bytes")),
            "{e:?}"
        );
    }

    #[test]
    fn sent_messages_and_answers_name_declared_types_by_index() {
        set_types(None);
        // Before the agent is built (or in a component that declares nothing): by name.
        let m = outgoing(&Ping { i: 1 }).unwrap();
        assert!(matches!(m.message_type, MessageType::Named(ref n) if n == "Ping"));
        set_types(Some(vec!["Ping".into(), "i64".into()].into()));
        let m = outgoing(&Ping { i: 1 }).unwrap();
        assert!(matches!(m.message_type, MessageType::Declared(0)));
        assert!(matches!(m.data, MessageData::Inline(_)));
        let m = outgoing("not declared").unwrap();
        assert!(matches!(m.message_type, MessageType::Named(ref n) if n == "str"));
        // The last type found is remembered (the last one here is `Ping`, so the lookup after
        // the table is cleared below would find a stale index if clearing did not forget it).
        for (i, expected) in [(0, 1), (1, 0), (2, 0), (3, 1), (4, 0)] {
            let m = match expected {
                0 => outgoing(&Ping { i }).unwrap(),
                _ => outgoing(&i).unwrap(),
            };
            assert!(
                matches!(m.message_type, MessageType::Declared(d) if d == expected),
                "send {i}"
            );
        }
        set_types(None);
        let m = outgoing(&Ping { i: 1 }).unwrap();
        assert!(matches!(m.message_type, MessageType::Named(ref n) if n == "Ping"));
        set_types(Some(vec!["Ping".into(), "i64".into()].into()));

        let answer = |t: MessageType, data: &[u8]| Message {
            message_type: t,
            content_type: ContentType::Json,
            data: data_of(data).unwrap(),
        };
        assert_eq!(
            decode_answer::<i64>(&answer(MessageType::Declared(1), b"5")).unwrap(),
            5
        );
        let named = answer(MessageType::Named("i64".into()), b"6");
        assert_eq!(decode_answer::<i64>(&named).unwrap(), 6);
        let any = decode_answer::<serde_json::Value>(&answer(MessageType::Declared(0), b"{}"));
        assert_eq!(any.unwrap(), serde_json::json!({}));
        let e = decode_answer::<i64>(&answer(MessageType::Declared(0), b"{}")).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("got a `Ping`")),
            "{e:?}"
        );
        let e = decode_answer::<i64>(&answer(MessageType::Declared(5), b"1")).unwrap_err();
        assert!(
            matches!(e, Error::Other(ref m) if m.contains("index 5")),
            "{e:?}"
        );
        set_types(None);
    }
}
