//! Messages in flight: [`Message`], the wire form [`Payload`], and the serializer registry.
//!
//! A message is either a **native** Rust value or a serialized **payload** (type name, content type,
//! bytes: the shape of AutoGen's wire payload and of Warren's WIT `payload` record). Native agents
//! talking to native agents never serialize: the value is shared behind an `Arc`, the way AutoGen
//! passes object references. A message crosses into bytes only when its consumer needs bytes (a
//! wasm agent, a typed caller of a wasm agent, a state file), and is decoded lazily by the consumer,
//! which knows the Rust type it wants.
//!
//! Type names follow AutoGen: the bare type name without its module path (`WorkRequest`), so a
//! Rust struct, a guest struct and a Python dataclass of the same name interoperate.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, Error};

/// The default content type, as in AutoGen.
pub const JSON: &str = Codec::Json.content_type();

/// MessagePack with struct fields keyed by name and types in their human-readable form (an IP
/// address as its text, as JSON has it): what Warren's guest SDK sends, and what the host gives a
/// wasm agent a native value in ([`Message::encode`]), since a wasm agent decodes and encodes it
/// in half the instructions JSON takes. Fields are matched by name, as in JSON, so a sender and a
/// receiver whose types drift apart (fields reordered, added, missing) behave as they would with
/// JSON. Every consumer in Warren reads it: typed decoding ([`Message::decode`], native
/// handlers), the serializer registry (through JSON, see [`SerializerRegistry::deserialize`]),
/// and [`Payload::to_json`] for whatever needs JSON text. Nesting is limited to 128 levels, as
/// serde_json limits JSON.
pub const MSGPACK: &str = Codec::Msgpack.content_type();

/// A serialized message: AutoGen's wire payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// The message type name (`WorkRequest`).
    pub type_name: String,
    /// The encoding (`application/json`, borrowed: the common case allocates nothing).
    pub content_type: Cow<'static, str>,
    /// The encoded bytes.
    pub data: Vec<u8>,
}

impl Payload {
    /// The data as JSON text: JSON as it is, MessagePack ([`MSGPACK`]) transcoded. Any other
    /// content type is [`Error::UnknownSerializer`], and data that is not what its content type
    /// says is [`Error::Codec`].
    pub fn to_json(&self) -> Result<Cow<'_, [u8]>, Error> {
        to_json(&self.type_name, &self.content_type, &self.data)
    }

    /// A JSON payload.
    pub fn json(type_name: impl Into<String>, data: Vec<u8>) -> Self {
        Self {
            type_name: type_name.into(),
            content_type: Cow::Borrowed(JSON),
            data,
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Payload");
        d.field("type_name", &self.type_name)
            .field("content_type", &self.content_type);
        match readable(&self.content_type, &self.data) {
            Some(s) if s.len() <= 256 => d.field("data", &s),
            _ => d.field("data_len", &self.data.len()),
        };
        d.finish()
    }
}

/// Appends a native value's encoding in a format to a buffer.
/// ([`Codec::Json`] for its payload, AutoGen's wire shape; [`Codec::Msgpack`] for a wasm agent.)
type EncodeFn = fn(&(dyn Any + Send + Sync), Codec, &mut Vec<u8>) -> Result<(), BoxError>;

/// A message's wire form, borrowed where it can be: the type name of a native value, the bytes of
/// a payload, or a caller's buffer the value was encoded into. For a consumer that copies the
/// bytes elsewhere anyway (the wasm host writes them into a guest call), so no [`Payload`] is
/// built and dropped per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded<'a> {
    /// The message type name.
    pub type_name: Cow<'a, str>,
    /// The encoding.
    pub content_type: Cow<'a, str>,
    /// The encoded bytes.
    pub data: Cow<'a, [u8]>,
}

impl<'a> From<&'a Payload> for Encoded<'a> {
    fn from(p: &'a Payload) -> Self {
        Self {
            type_name: Cow::Borrowed(&p.type_name),
            content_type: Cow::Borrowed(&p.content_type),
            data: Cow::Borrowed(&p.data),
        }
    }
}

/// A message: a native value or a payload. Cloning is cheap (reference counted).
#[derive(Clone)]
pub struct Message {
    repr: Repr,
}

/// The most bytes of JSON or MessagePack a message keeps inside itself (see
/// [`Message::from_short`]).
pub const INLINE_JSON: usize = 32;

#[derive(Clone)]
enum Repr {
    /// No value (a handler that returns nothing, AutoGen's `None`).
    Empty,
    /// Short data kept in the message: what a wasm agent answers or sends most of the time.
    Inline {
        type_name: Arc<str>,
        /// [`JSON`] or [`MSGPACK`] (one byte: the message stays as small as a JSON-only one).
        format: Codec,
        len: u8,
        bytes: [u8; INLINE_JSON],
    },
    Native {
        value: Arc<dyn Any + Send + Sync>,
        rust_name: &'static str,
        encode: Option<EncodeFn>,
        /// The JSON encoding, shared by every clone: set up for a message bound for several
        /// recipients ([`Message::share_encoding`]), filled by the first that needs bytes.
        packed: Option<Arc<OnceLock<Box<[u8]>>>>,
    },
    Payload(Arc<Payload>),
}

/// See [`Message::name_later`].
pub(crate) enum NameLater {
    Native(&'static str),
    Kept(Message),
}

impl NameLater {
    /// The type name, as [`Message::type_name`] gives it.
    pub(crate) fn get(&self) -> String {
        match self {
            NameLater::Native(rust_name) => static_bare_name(rust_name).to_owned(),
            NameLater::Kept(m) => m.type_name(),
        }
    }
}

fn encode_value<T: Serialize + 'static>(
    v: &(dyn Any + Send + Sync),
    format: Codec,
    out: &mut Vec<u8>,
) -> Result<(), BoxError> {
    let v = v
        .downcast_ref::<T>()
        .expect("encoder is stored next to a value of its own type");
    match format {
        Codec::Json => serde_json::to_writer(out, v)?,
        Codec::Msgpack => msgpack::write(v, out)?,
    }
    Ok(())
}

/// The encodings Warren reads everywhere ([`JSON`], [`MSGPACK`]), shared with the guest SDK.
pub use warren_typename::Codec;
/// The bare name of a Rust type: `my_crate::msgs::WorkRequest` becomes `WorkRequest`, and
/// `Vec<my::Item>` becomes `Vec<Item>` (shared with the guest SDK, so both sides name alike).
pub use warren_typename::bare_type_name;
use warren_typename::{msgpack, static_bare_name};

/// The message type name Warren uses for `T` (see [`bare_type_name`]).
pub fn type_name_of<T: ?Sized>() -> String {
    static_bare_name(std::any::type_name::<T>()).to_owned()
}

impl Message {
    /// How many messages share this native value (`None` for a payload or no value).
    #[cfg(test)]
    pub(crate) fn native_refs(&self) -> Option<usize> {
        match &self.repr {
            Repr::Native { value, .. } => Some(Arc::strong_count(value)),
            _ => None,
        }
    }

    /// A native message that can also be encoded as JSON when a consumer needs bytes.
    pub fn new<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        Self {
            repr: Repr::Native {
                value: Arc::new(value),
                rust_name: std::any::type_name::<T>(),
                encode: Some(encode_value::<T>),
                packed: None,
            },
        }
    }

    /// A native message with no built-in encoding. It can reach native agents; a consumer that needs
    /// bytes must find a serializer registered for its type.
    pub fn opaque<T: Any + Send + Sync>(value: T) -> Self {
        Self {
            repr: Repr::Native {
                value: Arc::new(value),
                rust_name: std::any::type_name::<T>(),
                encode: None,
                packed: None,
            },
        }
    }

    /// A message carried as bytes.
    pub fn from_payload(payload: Payload) -> Self {
        Self {
            repr: Repr::Payload(Arc::new(payload)),
        }
    }

    /// A JSON message from its type name and encoded bytes: [`Message::from_short`] with
    /// [`JSON`].
    pub fn from_json(type_name: Arc<str>, data: &[u8]) -> Self {
        Self::from_short(type_name, Codec::Json, data)
    }

    /// A message from its type name, codec and encoded bytes. Data of up to [`INLINE_JSON`]
    /// bytes is kept inside the message (no allocation; the type name is shared), longer data
    /// becomes a payload. Either way it behaves as [`Message::from_payload`] with that payload.
    pub fn from_short(type_name: Arc<str>, format: Codec, data: &[u8]) -> Self {
        if data.len() > INLINE_JSON {
            return Self::from_payload(Payload {
                type_name: type_name.to_string(),
                content_type: Cow::Borrowed(format.content_type()),
                data: data.to_vec(),
            });
        }
        let mut bytes = [0; INLINE_JSON];
        bytes[..data.len()].copy_from_slice(data);
        Self {
            repr: Repr::Inline {
                type_name,
                format,
                len: data.len() as u8,
                bytes,
            },
        }
    }

    /// No value: what an event handler or a handler returning nothing produces.
    pub fn empty() -> Self {
        Self { repr: Repr::Empty }
    }

    /// Prepares a native message for several recipients: its wire form for wasm agents
    /// ([`Message::encode`]), if one of them needs bytes, is then made once and shared by all of
    /// them instead of once each. Messages carried as bytes, and native values without a
    /// built-in encoding, are unchanged.
    pub(crate) fn share_encoding(&mut self) {
        if let Repr::Native {
            encode: Some(_),
            packed: packed @ None,
            ..
        } = &mut self.repr
        {
            *packed = Some(Arc::default());
        }
    }

    /// True for [`Message::empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self.repr, Repr::Empty)
    }

    /// The message type name: the bare Rust type name, or the payload's type name.
    pub fn type_name(&self) -> String {
        match &self.repr {
            Repr::Empty => "()".to_owned(),
            Repr::Native { rust_name, .. } => static_bare_name(rust_name).to_owned(),
            Repr::Payload(p) => p.type_name.clone(),
            Repr::Inline { type_name, .. } => type_name.to_string(),
        }
    }

    /// What names this message's type after the message itself has been handed over (to a
    /// handler that may panic): a native type's static name costs nothing to keep; any other
    /// message is kept by one reference.
    pub(crate) fn name_later(&self) -> NameLater {
        match &self.repr {
            Repr::Native { rust_name, .. } => NameLater::Native(rust_name),
            _ => NameLater::Kept(self.clone()),
        }
    }

    /// Whether the type name equals `name`, without allocating for native messages when possible.
    pub fn has_type_name(&self, name: &str) -> bool {
        match &self.repr {
            Repr::Empty => name == "()",
            Repr::Native { rust_name, .. } => static_bare_name(rust_name) == name,
            Repr::Payload(p) => p.type_name == name,
            Repr::Inline { type_name, .. } => **type_name == *name,
        }
    }

    /// The native value's `TypeId`, if this is a native message.
    pub fn native_type_id(&self) -> Option<TypeId> {
        match &self.repr {
            Repr::Native { value, .. } => Some((**value).type_id()),
            _ => None,
        }
    }

    /// The payload, if this message is carried as a [`Payload`] (`None` for short data kept
    /// inside the message, see [`Message::from_short`]; [`Message::bytes`] covers both).
    pub fn payload(&self) -> Option<&Payload> {
        match &self.repr {
            Repr::Payload(p) => Some(p),
            _ => None,
        }
    }

    /// The type name, content type and encoded bytes, if this message is carried as bytes (a
    /// payload or short inline data).
    pub fn bytes(&self) -> Option<(&str, &str, &[u8])> {
        match &self.repr {
            Repr::Payload(p) => Some((&p.type_name, &p.content_type, &p.data)),
            Repr::Inline {
                type_name,
                format,
                len,
                bytes,
            } => Some((
                type_name,
                format.content_type(),
                &bytes[..usize::from(*len)],
            )),
            _ => None,
        }
    }

    /// A reference to the native value, if this is a native `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match &self.repr {
            Repr::Native { value, .. } => value.downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The native value as `&dyn Any`, if this is a native message.
    pub fn as_any(&self) -> Option<&(dyn Any + Send + Sync)> {
        match &self.repr {
            Repr::Native { value, .. } => Some(&**value),
            _ => None,
        }
    }

    /// Decodes a `T`: a native `T` is taken (or cloned through JSON if it is shared), a JSON or
    /// MessagePack payload whose type name matches is deserialized. Anything else is a typed error.
    pub fn decode<T: DeserializeOwned + Any + Send + Sync>(self) -> Result<T, Error> {
        let expected = || type_name_of::<T>();
        // Carried as bytes (a payload or inline JSON): its type name must match.
        if let Some((name, content_type, data)) = self.bytes() {
            if static_bare_name(std::any::type_name::<T>()) != name {
                return Err(Error::UnexpectedResponse {
                    expected: expected(),
                    actual: name.to_owned(),
                });
            }
            return decode_bytes(name, content_type, data);
        }
        match self.repr {
            Repr::Native {
                value,
                rust_name,
                encode,
                ..
            } => match value.downcast::<T>() {
                Ok(arc) => match Arc::try_unwrap(arc) {
                    Ok(v) => Ok(v),
                    Err(shared) => {
                        // Shared with other recipients: copy through the type's own encoding
                        // (MessagePack with fields by name: as faithful as JSON, and faster).
                        let expected = expected();
                        let enc = encode.ok_or_else(|| Error::UnexpectedResponse {
                            expected: expected.clone(),
                            actual: format!(
                                "{} (shared and not serializable)",
                                bare_type_name(rust_name)
                            ),
                        })?;
                        let mut bytes = Vec::new();
                        enc(&*shared, Codec::Msgpack, &mut bytes)
                            .map_err(|e| codec_ct(&expected, MSGPACK, e))?;
                        msgpack::from_slice(&bytes).map_err(|e| codec_ct(&expected, MSGPACK, e))
                    }
                },
                Err(_) => Err(Error::UnexpectedResponse {
                    expected: expected(),
                    actual: bare_type_name(rust_name),
                }),
            },
            Repr::Payload(_) | Repr::Inline { .. } => unreachable!("decoded as bytes above"),
            // No value decodes as whatever JSON `null` decodes as: `()` or `Option<_>`.
            Repr::Empty => serde_json::from_slice(b"null").map_err(|_| Error::UnexpectedResponse {
                expected: expected(),
                actual: "()".to_owned(),
            }),
        }
    }

    /// Like [`Message::to_payload`], but takes the payload out of the message without copying it
    /// when nobody else holds it (the usual case for a message crossing into a wasm agent).
    pub fn into_payload(self, registry: Option<&SerializerRegistry>) -> Result<Payload, Error> {
        match self.repr {
            Repr::Payload(p) => Ok(Arc::try_unwrap(p).unwrap_or_else(|shared| (*shared).clone())),
            repr => Message { repr }.to_payload(registry),
        }
    }

    /// The message as a JSON payload: payloads are returned as they are, native values use their
    /// built-in JSON encoding or a serializer from `registry`.
    pub fn to_payload(&self, registry: Option<&SerializerRegistry>) -> Result<Payload, Error> {
        match &self.repr {
            Repr::Payload(p) => Ok((**p).clone()),
            Repr::Inline {
                type_name, format, ..
            } => Ok(Payload {
                type_name: type_name.to_string(),
                content_type: Cow::Borrowed(format.content_type()),
                data: self.bytes().expect("inline data is bytes").2.to_vec(),
            }),
            Repr::Empty => Ok(Payload::json("()", b"null".to_vec())),
            Repr::Native {
                value,
                rust_name,
                encode,
                packed: _,
            } => {
                let type_name = static_bare_name(rust_name).to_owned();
                if let Some(reg) = registry
                    && let Some(s) = reg.by_rust_type(&**value)
                {
                    let data = s
                        .serialize(&**value)
                        .map_err(|e| codec_ct(&type_name, s.content_type(), e))?;
                    return Ok(Payload {
                        type_name: s.type_name().to_owned(),
                        content_type: Cow::Owned(s.content_type().to_owned()),
                        data,
                    });
                }
                match encode {
                    Some(enc) => {
                        let mut data = Vec::new();
                        enc(&**value, Codec::Json, &mut data).map_err(|e| codec(&type_name, e))?;
                        Ok(Payload::json(type_name, data))
                    }
                    None => Err(Error::UnknownSerializer {
                        type_name,
                        content_type: JSON.to_owned(),
                    }),
                }
            }
        }
    }

    /// A message that is bytes already, as its wire form.
    fn bytes_encoded(&self) -> Option<Encoded<'_>> {
        let (name, content_type, data) = self.bytes()?;
        Some(Encoded {
            type_name: Cow::Borrowed(name),
            content_type: Cow::Borrowed(content_type),
            data: Cow::Borrowed(data),
        })
    }

    /// The wire form when no serializer needs consulting: a message that is bytes already, or
    /// a native value whose shared encoding an earlier recipient made (with the registry).
    pub(crate) fn encoded(&self) -> Option<Encoded<'_>> {
        if let Some(e) = self.bytes_encoded() {
            return Some(e);
        }
        match &self.repr {
            Repr::Native {
                rust_name,
                packed: Some(cell),
                ..
            } => cell.get().map(|data| Encoded {
                type_name: Cow::Borrowed(static_bare_name(rust_name)),
                content_type: Cow::Borrowed(MSGPACK),
                data: Cow::Borrowed(data),
            }),
            _ => None,
        }
    }

    /// The message's wire form for a wasm agent, borrowed where it can be: a payload's own
    /// fields; a native value's static type name and its MessagePack ([`MSGPACK`], what the guest
    /// SDK reads fastest) written into `buf` (cleared first); for anything else, what
    /// [`Message::to_payload`] gives (a serializer from `registry` makes its own bytes).
    pub fn encode<'a>(
        &'a self,
        registry: Option<&SerializerRegistry>,
        buf: &'a mut Vec<u8>,
    ) -> Result<Encoded<'a>, Error> {
        if let Some(e) = self.bytes_encoded() {
            return Ok(e);
        }
        match &self.repr {
            Repr::Native {
                value,
                rust_name,
                encode: Some(enc),
                packed,
            } if registry.is_none_or(|r| r.by_rust_type(&**value).is_none()) => {
                let type_name = static_bare_name(rust_name);
                let failed = |e| codec_ct(type_name, MSGPACK, e);
                let data: &[u8] = match packed.as_deref() {
                    // Bound for several recipients: encoded once, by the first that needs it.
                    Some(cell) => match cell.get() {
                        Some(data) => data,
                        None => {
                            let mut data = Vec::new();
                            enc(&**value, Codec::Msgpack, &mut data).map_err(failed)?;
                            cell.get_or_init(|| data.into_boxed_slice())
                        }
                    },
                    None => {
                        buf.clear();
                        enc(&**value, Codec::Msgpack, buf).map_err(failed)?;
                        buf
                    }
                };
                Ok(Encoded {
                    type_name: Cow::Borrowed(type_name),
                    content_type: Cow::Borrowed(MSGPACK),
                    data: Cow::Borrowed(data),
                })
            }
            // No value, a registered serializer, or no encoding at all: as `to_payload` does.
            _ => {
                let p = self.to_payload(registry)?;
                Ok(Encoded {
                    type_name: Cow::Owned(p.type_name),
                    content_type: p.content_type,
                    data: Cow::Owned(p.data),
                })
            }
        }
    }
}

/// Deserializes a JSON or MessagePack payload into `T`.
pub fn decode_payload<T: DeserializeOwned>(p: &Payload) -> Result<T, Error> {
    decode_bytes(&p.type_name, &p.content_type, &p.data)
}

/// Deserializes JSON or MessagePack bytes of message type `type_name` into `T`.
pub(crate) fn decode_bytes<T: DeserializeOwned>(
    type_name: &str,
    content_type: &str,
    data: &[u8],
) -> Result<T, Error> {
    match Codec::of(content_type) {
        Some(Codec::Json) => serde_json::from_slice(data).map_err(|e| codec(type_name, e)),
        Some(Codec::Msgpack) => {
            msgpack::from_slice(data).map_err(|e| codec_ct(type_name, MSGPACK, e))
        }
        None => Err(Error::UnknownSerializer {
            type_name: type_name.to_owned(),
            content_type: content_type.to_owned(),
        }),
    }
}

/// `data` of type `type_name` as JSON text (see [`Payload::to_json`]).
pub fn to_json<'a>(
    type_name: &str,
    content_type: &str,
    data: &'a [u8],
) -> Result<Cow<'a, [u8]>, Error> {
    match Codec::of(content_type) {
        Some(Codec::Json) => Ok(Cow::Borrowed(data)),
        Some(Codec::Msgpack) => {
            let mut out = Vec::with_capacity(data.len() * 2);
            let mut de = msgpack::deserializer(data);
            serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut out))
                .map_err(|e| codec_ct(type_name, MSGPACK, e))?;
            msgpack::end(&mut de).map_err(|e| codec_ct(type_name, MSGPACK, e))?;
            Ok(Cow::Owned(out))
        }
        None => Err(Error::UnknownSerializer {
            type_name: type_name.to_owned(),
            content_type: content_type.to_owned(),
        }),
    }
}

/// Data as text for a debug print: JSON as it is, MessagePack as JSON; `None` if neither works.
fn readable(content_type: &str, data: &[u8]) -> Option<String> {
    let json = to_json("", content_type, data).ok()?;
    String::from_utf8(json.into_owned()).ok()
}

fn codec(type_name: &str, e: impl Into<BoxError>) -> Error {
    codec_ct(type_name, JSON, e)
}

fn codec_ct(type_name: &str, content_type: &str, e: impl Into<BoxError>) -> Error {
    Error::Codec {
        type_name: type_name.to_owned(),
        content_type: content_type.to_owned(),
        source: e.into(),
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Empty => f.write_str("Message(())"),
            Repr::Native { rust_name, .. } => {
                write!(f, "Message(native {})", bare_type_name(rust_name))
            }
            Repr::Payload(p) => write!(f, "Message({p:?})"),
            Repr::Inline {
                type_name,
                format,
                len,
                bytes,
            } => match readable(format.content_type(), &bytes[..usize::from(*len)]) {
                Some(s) => write!(f, "Message({type_name} {s})"),
                None => write!(f, "Message({type_name}, {len} bytes)"),
            },
        }
    }
}

/// Converts messages of one type to and from bytes in one content type (AutoGen's
/// `MessageSerializer`).
pub trait MessageSerializer: Send + Sync + 'static {
    /// The type name written into payloads.
    fn type_name(&self) -> &str;
    /// The content type, e.g. `application/json`.
    fn content_type(&self) -> &str;
    /// The Rust type this serializer encodes.
    fn rust_type(&self) -> TypeId;
    /// Encodes a value of [`MessageSerializer::rust_type`].
    fn serialize(&self, value: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, BoxError>;
    /// Decodes bytes into a native message.
    fn deserialize(&self, data: &[u8]) -> Result<Message, BoxError>;
}

/// The JSON serializer for any serde type; what registration adds for each handled type.
pub struct JsonSerializer<T>(PhantomData<fn() -> T>);

impl<T> JsonSerializer<T> {
    /// A serializer for `T`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for JsonSerializer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JsonSerializer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonSerializer<{}>", type_name_of::<T>())
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> MessageSerializer
    for JsonSerializer<T>
{
    fn type_name(&self) -> &str {
        // Leaked once per registered type; bounded by the number of message types.
        static NAMES: parking_lot::Mutex<Option<HashMap<TypeId, &'static str>>> =
            parking_lot::Mutex::new(None);
        let mut names = NAMES.lock();
        names
            .get_or_insert_with(HashMap::new)
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::leak(type_name_of::<T>().into_boxed_str()))
    }
    fn content_type(&self) -> &str {
        JSON
    }
    fn rust_type(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn serialize(&self, value: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, BoxError> {
        let v = value
            .downcast_ref::<T>()
            .ok_or("value is not of the serializer's type")?;
        Ok(serde_json::to_vec(v)?)
    }
    fn deserialize(&self, data: &[u8]) -> Result<Message, BoxError> {
        Ok(Message::new(serde_json::from_slice::<T>(data)?))
    }
}

/// Serializers keyed by (type name, content type); a later registration replaces an earlier one.
#[derive(Default)]
pub struct SerializerRegistry {
    by_key: HashMap<(String, String), Arc<dyn MessageSerializer>>,
    by_type: HashMap<TypeId, Arc<dyn MessageSerializer>>,
}

impl fmt::Debug for SerializerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerializerRegistry")
            .field("keys", &self.by_key.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SerializerRegistry {
    /// Registers a serializer.
    pub fn add(&mut self, s: Arc<dyn MessageSerializer>) {
        self.by_type.insert(s.rust_type(), s.clone());
        self.by_key
            .insert((s.type_name().to_owned(), s.content_type().to_owned()), s);
    }

    /// Whether a serializer exists for the key.
    pub fn contains(&self, type_name: &str, content_type: &str) -> bool {
        self.by_key
            .contains_key(&(type_name.to_owned(), content_type.to_owned()))
    }

    fn by_rust_type(&self, v: &(dyn Any + Send + Sync)) -> Option<&Arc<dyn MessageSerializer>> {
        if self.by_type.is_empty() {
            return None;
        }
        self.by_type.get(&v.type_id())
    }

    /// Encodes a native value with the serializer registered for its Rust type.
    pub fn serialize(&self, message: &Message) -> Result<Payload, Error> {
        message.to_payload(Some(self))
    }

    /// Decodes a payload with the serializer for its key. A MessagePack payload (what wasm
    /// agents send) with no serializer of its own goes to the type's JSON serializer, transcoded.
    /// An unknown key is [`Error::UnknownSerializer`] (AutoGen returns an `UnknownPayload` here).
    pub fn deserialize(&self, payload: &Payload) -> Result<Message, Error> {
        let key = |ct: &str| (payload.type_name.clone(), ct.to_owned());
        if let Some(s) = self.by_key.get(&key(&payload.content_type)) {
            return s
                .deserialize(&payload.data)
                .map_err(|e| codec_ct(&payload.type_name, &payload.content_type, e));
        }
        if payload.content_type == MSGPACK
            && let Some(s) = self.by_key.get(&key(JSON))
        {
            let json = payload.to_json()?;
            return s
                .deserialize(&json)
                .map_err(|e| codec_ct(&payload.type_name, JSON, e));
        }
        Err(Error::UnknownSerializer {
            type_name: payload.type_name.clone(),
            content_type: payload.content_type.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
    struct DataclassMessage {
        message: String,
    }

    #[test]
    fn bare_names_strip_module_paths() {
        assert_eq!(bare_type_name("a::b::Work"), "Work");
        assert_eq!(bare_type_name("alloc::vec::Vec<my::Item>"), "Vec<Item>");
        assert_eq!(bare_type_name("Work"), "Work");
        assert_eq!(bare_type_name("(a::B, c::D)"), "(B, D)");
        assert_eq!(bare_type_name("&[a::B]"), "&[B]");
        assert_eq!(type_name_of::<DataclassMessage>(), "DataclassMessage");
    }

    #[test]
    fn native_round_trips_through_json_payload() {
        let m = Message::new(DataclassMessage {
            message: "hello".into(),
        });
        assert!(m.has_type_name("DataclassMessage"));
        assert!(!m.has_type_name("classMessage"));
        let p = m.to_payload(None).unwrap();
        assert_eq!(p.type_name, "DataclassMessage");
        assert_eq!(p.data, br#"{"message":"hello"}"#);
        let back: DataclassMessage = Message::from_payload(p).decode().unwrap();
        assert_eq!(back.message, "hello");
    }

    #[test]
    fn shared_native_values_decode_by_copy() {
        let m = Message::new(DataclassMessage {
            message: "x".into(),
        });
        let keep = m.clone();
        let v: DataclassMessage = m.decode().unwrap();
        assert_eq!(v.message, "x");
        assert!(keep.downcast_ref::<DataclassMessage>().is_some());
    }

    /// Counts its own encodings.
    struct Counted(&'static std::sync::atomic::AtomicUsize);

    impl Serialize for Counted {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            s.serialize_u8(7)
        }
    }

    #[test]
    fn a_shared_encoding_is_made_once_for_every_clone() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static ENCODED: AtomicUsize = AtomicUsize::new(0);
        let mut m = Message::new(Counted(&ENCODED));
        m.share_encoding();
        let clones = [m.clone(), m.clone(), m];
        // Until a first consumer encodes it, the registry must be asked (it may hold a
        // serializer for the type); afterwards every clone has its bytes without asking.
        assert!(clones[1].encoded().is_none());
        for c in &clones {
            let mut buf = vec![b'x'; 4];
            let e = c.encode(None, &mut buf).unwrap();
            // MessagePack's 7 is the byte 7.
            assert_eq!((&*e.type_name, &*e.data), ("Counted", &[7][..]));
        }
        assert_eq!(ENCODED.load(Ordering::SeqCst), 1);
        let e = clones[2].encoded().expect("encoded by the first clone");
        assert_eq!(
            (&*e.type_name, &*e.content_type, &*e.data),
            ("Counted", MSGPACK, &[7][..])
        );
        // The JSON payload is AutoGen's wire shape, made apart from the shared wire form.
        assert_eq!(clones[0].to_payload(None).unwrap().data, b"7");
        assert_eq!(ENCODED.load(Ordering::SeqCst), 2);
        // Without it, every consumer encodes for itself (into its own buffer).
        static APART: AtomicUsize = AtomicUsize::new(0);
        let m = Message::new(Counted(&APART));
        for c in [m.clone(), m] {
            let mut buf = Vec::new();
            assert_eq!(&*c.encode(None, &mut buf).unwrap().data, [7]);
            assert!(c.encoded().is_none(), "nothing kept to share");
        }
        assert_eq!(APART.load(Ordering::SeqCst), 2);
        // Bytes are their own wire form.
        let b = Message::from_json(Arc::from("Ping"), br#"{"i":1}"#);
        assert_eq!(&*b.encoded().unwrap().data, br#"{"i":1}"#);
    }

    #[test]
    fn wrong_type_and_unknown_serializer_are_typed() {
        let m = Message::new(1u32);
        assert!(matches!(
            m.decode::<String>(),
            Err(Error::UnexpectedResponse { .. })
        ));
        struct NoSerde;
        let err = Message::opaque(NoSerde).to_payload(None).unwrap_err();
        assert!(matches!(err, Error::UnknownSerializer { .. }), "{err}");
        let reg = SerializerRegistry::default();
        let err = reg
            .deserialize(&Payload {
                type_name: "Nope".into(),
                content_type: "application/x-custom".into(),
                data: vec![],
            })
            .unwrap_err();
        assert!(err.to_string().contains("Nope"));
    }

    #[test]
    fn registry_serializer_takes_precedence() {
        struct Upper;
        impl MessageSerializer for Upper {
            fn type_name(&self) -> &str {
                "Shout"
            }
            fn content_type(&self) -> &str {
                "str"
            }
            fn rust_type(&self) -> TypeId {
                TypeId::of::<String>()
            }
            fn serialize(&self, v: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, BoxError> {
                Ok(v.downcast_ref::<String>()
                    .unwrap()
                    .to_uppercase()
                    .into_bytes())
            }
            fn deserialize(&self, d: &[u8]) -> Result<Message, BoxError> {
                Ok(Message::new(String::from_utf8(d.to_vec())?.to_lowercase()))
            }
        }
        let mut reg = SerializerRegistry::default();
        reg.add(Arc::new(Upper));
        let p = reg.serialize(&Message::new("hi".to_owned())).unwrap();
        assert_eq!((p.type_name.as_str(), &*p.content_type), ("Shout", "str"));
        assert_eq!(p.data, b"HI");
        let back = reg.deserialize(&p).unwrap();
        assert_eq!(back.downcast_ref::<String>().unwrap(), "hi");
        // The borrowed wire form agrees with the payload, and the serializer's bytes are its own.
        let mut buf = b"stale".to_vec();
        let m = Message::new("hi".to_owned());
        let e = m.encode(Some(&reg), &mut buf).unwrap();
        assert_eq!(e, Encoded::from(&p));
        assert!(matches!(e.data, Cow::Owned(_)));
    }

    #[test]
    fn short_json_stays_inside_the_message_and_behaves_as_a_payload() {
        let name: Arc<str> = Arc::from("DataclassMessage");
        let m = Message::from_json(name.clone(), br#"{"message":"hi"}"#);
        assert!(m.payload().is_none(), "kept inline");
        assert_eq!(
            Arc::strong_count(&name),
            2,
            "the name is shared, not copied"
        );
        assert_eq!(m.type_name(), "DataclassMessage");
        assert!(m.has_type_name("DataclassMessage") && !m.has_type_name("Other"));
        assert_eq!(
            m.bytes(),
            Some(("DataclassMessage", JSON, &br#"{"message":"hi"}"#[..]))
        );
        let as_payload = Payload::json("DataclassMessage", br#"{"message":"hi"}"#.to_vec());
        assert_eq!(m.to_payload(None).unwrap(), as_payload);
        assert_eq!(
            m.encode(None, &mut Vec::new()).unwrap(),
            Encoded::from(&as_payload)
        );
        assert_eq!(
            format!("{m:?}"),
            r#"Message(DataclassMessage {"message":"hi"})"#
        );
        let v: DataclassMessage = m.clone().decode().unwrap();
        assert_eq!(v.message, "hi");
        match m.clone().decode::<String>().unwrap_err() {
            Error::UnexpectedResponse { expected, actual } => {
                assert_eq!(
                    (expected.as_str(), actual.as_str()),
                    ("String", "DataclassMessage")
                );
            }
            other => panic!("{other}"),
        }
        assert_eq!(m.into_payload(None).unwrap(), as_payload);

        // Exactly the capacity stays inline; one byte more is a payload.
        let fits = vec![b' '; INLINE_JSON];
        assert!(Message::from_json(name.clone(), &fits).payload().is_none());
        let long = vec![b' '; INLINE_JSON + 1];
        let m = Message::from_json(name, &long);
        assert_eq!(m.payload().map(|p| p.data.len()), Some(INLINE_JSON + 1));
    }

    #[tokio::test]
    async fn a_typed_handler_takes_short_json_from_the_wire() {
        #[derive(Serialize, Deserialize)]
        struct Ping {
            i: i64,
        }
        struct Echo;
        impl crate::RoutedAgent for Echo {
            fn routes(r: &mut crate::Routes<Self>) {
                r.rpc_sync(|_: &mut Echo, m: &Ping, _| Ok::<_, BoxError>(m.i + 1));
            }
        }
        let rt = crate::AgentRuntime::new();
        rt.register_routed("echo", |_| Echo).await.unwrap();
        rt.start().unwrap();
        let to = crate::AgentId::new("echo", "k").unwrap();
        let r = rt
            .send_message(
                Message::from_json(Arc::from("Ping"), br#"{"i":41}"#),
                to.clone(),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.decode::<i64>().unwrap(), 42);
        // MessagePack, as a wasm agent sends it (`{"i": 9}`), is decoded the same way.
        let packed =
            Message::from_short(Arc::from("Ping"), Codec::Msgpack, &[0x81, 0xa1, b'i', 0x09]);
        let r = rt
            .send_message(packed, to.clone(), Default::default())
            .await
            .unwrap();
        assert_eq!(r.decode::<i64>().unwrap(), 10);
        // A name no handler takes is still the typed CantHandle.
        let e = rt
            .send_message(
                Message::from_json(Arc::from("Pong"), br#"{"i":1}"#),
                to,
                Default::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::CantHandle { .. }), "{e}");
        rt.stop_when_idle().await.unwrap();
    }

    /// `DataclassMessage` as a newer sender might have it: another field, another order.
    #[derive(Serialize)]
    struct NewerMessage {
        note: &'static str,
        message: &'static str,
    }

    fn packed(type_name: &str, value: &impl Serialize) -> Payload {
        Payload {
            type_name: type_name.into(),
            content_type: Cow::Borrowed(MSGPACK),
            data: {
                let mut data = Vec::new();
                msgpack::write(value, &mut data).unwrap();
                data
            },
        }
    }

    #[test]
    fn a_message_is_no_larger_for_knowing_its_format() {
        // Inline data (a shared name, a length, a format byte and 32 bytes) sets the size.
        assert_eq!(std::mem::size_of::<Message>(), 56);
        // A short message of either codec is kept inline and says its content type.
        let m = Message::from_short(Arc::from("Blob"), Codec::Msgpack, &[1, 2]);
        assert_eq!(m.bytes().map(|(_, ct, _)| ct), Some(MSGPACK));
    }

    #[test]
    fn msgpack_decodes_by_field_name_and_reads_as_json() {
        let newer = NewerMessage {
            note: "x",
            message: "hi",
        };
        let p = packed("DataclassMessage", &newer);
        // Short data stays inside the message, as JSON does; either way it decodes by name.
        let inline = Message::from_short(Arc::from("DataclassMessage"), Codec::Msgpack, &p.data);
        assert!(inline.payload().is_none());
        assert_eq!(inline.bytes().unwrap().1, MSGPACK);
        assert_eq!(inline.to_payload(None).unwrap(), p);
        for m in [inline, Message::from_payload(p.clone())] {
            let v: DataclassMessage = m.decode().unwrap();
            assert_eq!(v.message, "hi");
        }
        // As JSON text, fields in the sender's order; a debug print shows that text.
        assert_eq!(&*p.to_json().unwrap(), br#"{"note":"x","message":"hi"}"#);
        assert!(format!("{p:?}").contains(r#"{\"note\":\"x\",\"message\":\"hi\"}"#));
        // Integer map keys become strings, as serde_json writes them.
        let keyed = packed("Map", &std::collections::BTreeMap::from([(1u32, "a")]));
        assert_eq!(&*keyed.to_json().unwrap(), br#"{"1":"a"}"#);
        // JSON is JSON already.
        let json = Payload::json("DataclassMessage", br#"{"message":"hi"}"#.to_vec());
        assert!(matches!(json.to_json().unwrap(), Cow::Borrowed(_)));

        // Broken data is a typed codec error naming the type and MessagePack: data after the
        // value, data cut short, nesting deeper than JSON allows (not a stack overflow).
        let mut trailing = p.clone();
        trailing.data.push(0xc0);
        let mut short = p.clone();
        short.data.truncate(5);
        let mut deep = p.clone();
        deep.data = [vec![0x91; 200], vec![0x00]].concat();
        for bad in [trailing, short, deep] {
            for e in [
                Message::from_payload(bad.clone())
                    .decode::<DataclassMessage>()
                    .unwrap_err(),
                bad.to_json().unwrap_err(),
            ] {
                assert!(
                    matches!(e, Error::Codec { ref type_name, ref content_type, .. }
                        if type_name == "DataclassMessage" && content_type == MSGPACK),
                    "{e}"
                );
            }
        }
        // The nesting limit is JSON's: 100 levels decode, 200 are refused (not a stack overflow
        // on a host thread, whatever type decodes them).
        let nested = |depth| [vec![0x91; depth], vec![0x00]].concat();
        decode_bytes::<serde_json::Value>("Deep", MSGPACK, &nested(100)).unwrap();
        let e = decode_bytes::<serde_json::Value>("Deep", MSGPACK, &nested(200)).unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
        // Content types other than JSON and MessagePack are still for serializers.
        let mut other = p;
        other.content_type = Cow::Borrowed("application/x-protobuf");
        assert!(matches!(
            other.to_json().unwrap_err(),
            Error::UnknownSerializer { .. }
        ));
    }

    #[test]
    fn the_registry_reads_msgpack_through_the_types_json_serializer() {
        let p = packed(
            "DataclassMessage",
            &NewerMessage {
                note: "x",
                message: "hi",
            },
        );
        let mut reg = SerializerRegistry::default();
        let e = reg.deserialize(&p).unwrap_err();
        assert!(
            matches!(e, Error::UnknownSerializer { ref content_type, .. } if content_type == MSGPACK),
            "{e}"
        );
        reg.add(Arc::new(JsonSerializer::<DataclassMessage>::new()));
        let m = reg.deserialize(&p).unwrap();
        assert_eq!(m.downcast_ref::<DataclassMessage>().unwrap().message, "hi");
    }

    #[test]
    fn encode_borrows_what_it_can_and_agrees_with_to_payload() {
        let mut buf = b"left over from an earlier message".to_vec();
        let native = Message::new(DataclassMessage {
            message: "hi".into(),
        });
        let e = native.encode(None, &mut buf).unwrap();
        // The static type name and the caller's buffer, cleared first: nothing allocated.
        assert!(matches!(e.type_name, Cow::Borrowed("DataclassMessage")));
        assert!(matches!(e.data, Cow::Borrowed(_)));
        // MessagePack with the field by name, in the human-readable form; as JSON, the payload.
        assert_eq!(e.content_type, MSGPACK);
        let mut expected = vec![0x81, 0xa7];
        expected.extend_from_slice(b"message");
        expected.extend_from_slice(&[0xa2, b'h', b'i']);
        assert_eq!(&*e.data, expected);
        let as_payload = Payload {
            type_name: e.type_name.to_string(),
            content_type: Cow::Borrowed(MSGPACK),
            data: e.data.to_vec(),
        };
        assert_eq!(
            &*as_payload.to_json().unwrap(),
            native.to_payload(None).unwrap().data
        );
        // Types with a human-readable form are written in it, as JSON writes them.
        let addr = Message::new(std::net::Ipv4Addr::LOCALHOST);
        let e = addr.encode(None, &mut buf).unwrap();
        let mut text = vec![0xa9];
        text.extend_from_slice(b"127.0.0.1");
        assert_eq!(&*e.data, text);

        let payload = Message::from_payload(Payload {
            type_name: "Blob".into(),
            content_type: "application/x-protobuf".into(),
            data: vec![1, 2, 3],
        });
        let e = payload.encode(None, &mut buf).unwrap();
        assert!(matches!(e.data, Cow::Borrowed(&[1, 2, 3])));
        assert_eq!(e.content_type, "application/x-protobuf");

        let empty = Message::empty();
        let e = empty.encode(None, &mut buf).unwrap();
        assert_eq!((&*e.type_name, &*e.data), ("()", &b"null"[..]));

        // No encoding and no serializer: the same typed error as `to_payload`.
        struct NoSerde;
        match Message::opaque(NoSerde).encode(None, &mut buf) {
            Err(Error::UnknownSerializer { type_name, .. }) => assert_eq!(type_name, "NoSerde"),
            other => panic!("{other:?}"),
        }
    }
}
