//! Typed identities: [`AgentType`], [`AgentId`], [`TopicId`], [`MessageId`], [`SubscriptionId`].
//!
//! Every id is validated when it is built, exactly as AutoGen validates it, so a value that exists is
//! always addressable. Agent types follow `^[\w\-\.]+$` and topic types `^[\w\-\.\:\=]+$`, where `\w`
//! is Python's Unicode word class (letters and digits of any script, plus `_`). Agent keys and topic
//! sources are free-form, as in AutoGen. The printed form is `type/key` (or `type/source`) and
//! parsing splits on the **first** `/`, so `a/b/c` is type `a` with key `b/c`.
//!
//! Strings are held as `Arc<str>`: ids are cloned into every message context, and a clone must cost
//! two reference-count increments, not two allocations.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an id could not be built. Names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The agent type is empty or contains a character outside `[\w\-\.]`.
    #[error("invalid agent type {value:?}: use only letters, digits, `_`, `-` and `.`")]
    InvalidAgentType {
        /// The rejected value.
        value: String,
    },
    /// The topic type is empty or contains a character outside `[\w\-\.\:\=]`.
    #[error("invalid topic type {value:?}: use only letters, digits, `_`, `-`, `.`, `:` and `=`")]
    InvalidTopicType {
        /// The rejected value.
        value: String,
    },
    /// The text has no `/` separating type and key (or type and source).
    #[error("invalid {what} {value:?}: expected `type/{part}`")]
    MissingSeparator {
        /// `"agent id"` or `"topic id"`.
        what: &'static str,
        /// `"key"` or `"source"`.
        part: &'static str,
        /// The rejected value.
        value: String,
    },
}

/// Python's `\w` in Unicode mode: alphanumeric in any script, or `_`.
fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn valid_agent_type(s: &str) -> bool {
    // ASCII first: every id a state document or a message names is checked here, and a
    // byte test is a few instructions where decoding `char`s and Unicode classes is dozens.
    !s.is_empty()
        && (s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            || s.chars().all(|c| is_word(c) || c == '-' || c == '.'))
}

fn valid_topic_type(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| is_word(c) || matches!(c, '-' | '.' | ':' | '='))
}

/// The name under which agents are registered (`worker`, `sub7`, `日本`). Validated on construction.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentType(Arc<str>);

impl AgentType {
    /// Validates `value` against `^[\w\-\.]+$`.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        if valid_agent_type(value) {
            Ok(Self(Arc::from(value)))
        } else {
            Err(IdError::InvalidAgentType {
                value: value.to_owned(),
            })
        }
    }

    /// The type name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentType({:?})", &*self.0)
    }
}

impl FromStr for AgentType {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for AgentType {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for AgentType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One agent: a registered [`AgentType`] plus a free-form key. Printed as `type/key`.
///
/// Both parts sit behind one shared pointer: an id is cloned into every message context, wait
/// edge and frame, and a clone is then one reference count (an atomic operation) instead of two,
/// and two clones of one id compare equal without comparing strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(Arc<AgentIdParts>);

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct AgentIdParts {
    agent_type: AgentType,
    key: Box<str>,
}

impl AgentId {
    /// Whether both are the same shared id (not only equal ones): a pointer compare.
    pub(crate) fn same(&self, other: &AgentId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Builds an id, validating the type. The key is not validated (AutoGen accepts `""`, `/`, spaces).
    pub fn new(agent_type: impl AsRef<str>, key: impl AsRef<str>) -> Result<Self, IdError> {
        Ok(Self::from_parts(AgentType::new(agent_type)?, key))
    }

    /// Builds an id from an already-validated type.
    pub fn from_parts(agent_type: AgentType, key: impl AsRef<str>) -> Self {
        Self(Arc::new(AgentIdParts {
            agent_type,
            key: Box::from(key.as_ref()),
        }))
    }

    /// The agent's type.
    pub fn agent_type(&self) -> &AgentType {
        &self.0.agent_type
    }

    /// The agent's key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// `type/key` in one allocation of the right size (`to_string` goes through the formatter
    /// and grows its buffer).
    pub(crate) fn joined(&self) -> String {
        let (t, k) = (self.0.agent_type.as_str(), &*self.0.key);
        let mut s = String::with_capacity(t.len() + 1 + k.len());
        s.push_str(t);
        s.push('/');
        s.push_str(k);
        s
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_none() && f.precision().is_none() {
            // Plain `type/key` (state documents print one per agent): no padding machinery.
            f.write_str(self.0.agent_type.as_str())?;
            f.write_str("/")?;
            f.write_str(&self.0.key)
        } else {
            f.pad(&format!("{}/{}", self.0.agent_type.as_str(), self.0.key))
        }
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({:?})", self.to_string())
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    /// Splits on the first `/`: `a/b/c` is `(a, "b/c")`, `a/` is `(a, "")`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, k) = s.split_once('/').ok_or_else(|| IdError::MissingSeparator {
            what: "agent id",
            part: "key",
            value: s.to_owned(),
        })?;
        Self::new(t, k)
    }
}

/// A topic: a validated type plus a free-form source. Printed as `type/source`. (One shared
/// pointer, like [`AgentId`]: a publish clones its topic into every recipient's context.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(Arc<TopicIdParts>);

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TopicIdParts {
    topic_type: Box<str>,
    source: Box<str>,
}

/// The topic type used by [`TopicId::default_topic`] and default subscriptions.
pub const DEFAULT_TOPIC_TYPE: &str = "default";

impl TopicId {
    /// Builds a topic id, validating the type against `^[\w\-\.\:\=]+$`.
    pub fn new(topic_type: impl AsRef<str>, source: impl AsRef<str>) -> Result<Self, IdError> {
        let t = topic_type.as_ref();
        if !valid_topic_type(t) {
            return Err(IdError::InvalidTopicType {
                value: t.to_owned(),
            });
        }
        Ok(Self(Arc::new(TopicIdParts {
            topic_type: Box::from(t),
            source: Box::from(source.as_ref()),
        })))
    }

    /// AutoGen's `DefaultTopicId()` outside a handler: `default/default`. Inside a handler use
    /// [`crate::MessageContext::default_topic`], whose source is the handling agent's key.
    pub fn default_topic() -> Self {
        Self(Arc::new(TopicIdParts {
            topic_type: Box::from(DEFAULT_TOPIC_TYPE),
            source: Box::from("default"),
        }))
    }

    /// The topic type.
    pub fn topic_type(&self) -> &str {
        &self.0.topic_type
    }

    /// The topic source.
    pub fn source(&self) -> &str {
        &self.0.source
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.topic_type, self.0.source)
    }
}

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicId({:?})", self.to_string())
    }
}

impl FromStr for TopicId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, src) = s.split_once('/').ok_or_else(|| IdError::MissingSeparator {
            what: "topic id",
            part: "source",
            value: s.to_owned(),
        })?;
        Self::new(t, src)
    }
}

/// Identifies one message. Either given by the caller or generated by the runtime.
///
/// AutoGen generates a uuid4 string per message; Warren generates a process-unique sequence
/// number instead (no random source, no allocation on the hot path) and formats it only when it is
/// printed. A caller-supplied id is kept verbatim.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId(MessageIdRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum MessageIdRepr {
    Generated(u64),
    Given(Arc<str>),
}

/// The next block of message ids not handed to a thread yet.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);
/// How many ids a thread takes from [`NEXT_MESSAGE_ID`] at a time.
const MESSAGE_ID_BLOCK: u64 = 1024;

std::thread_local! {
    /// This thread's ids: the next one and the end of its block (empty at first).
    static MESSAGE_IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl MessageId {
    /// A new process-unique id. Each thread numbers from a block of its own (one atomic operation
    /// per 1,024 ids instead of one per message), so ids are unique but increase only within a
    /// thread.
    pub fn generate() -> Self {
        let n = MESSAGE_IDS.with(|ids| {
            let (mut next, mut end) = ids.get();
            if next == end {
                next = NEXT_MESSAGE_ID.fetch_add(MESSAGE_ID_BLOCK, Ordering::Relaxed);
                end = next + MESSAGE_ID_BLOCK;
            }
            ids.set((next + 1, end));
            next
        });
        Self(MessageIdRepr::Generated(n))
    }

    /// Wraps a caller-supplied id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(MessageIdRepr::Given(Arc::from(id.as_ref())))
    }

    /// True when the runtime generated this id.
    pub fn is_generated(&self) -> bool {
        matches!(self.0, MessageIdRepr::Generated(_))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            MessageIdRepr::Generated(n) => {
                // `warren-{n:016x}` without the formatting machinery: this runs for every
                // message handed to a wasm agent.
                let mut buf = *b"warren-0000000000000000";
                for (i, b) in buf[7..].iter_mut().enumerate() {
                    let nibble = (n >> (60 - 4 * i)) & 0xf;
                    *b = b"0123456789abcdef"[nibble as usize];
                }
                f.write_str(std::str::from_utf8(&buf).expect("ASCII"))
            }
            MessageIdRepr::Given(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({:?})", self.to_string())
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// Identifies a subscription, for [`crate::AgentRuntime::remove_subscription`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(Arc<str>);

static NEXT_SUBSCRIPTION_ID: AtomicU64 = AtomicU64::new(1);

impl SubscriptionId {
    /// A new process-unique id.
    pub fn generate() -> Self {
        let n = NEXT_SUBSCRIPTION_ID.fetch_add(1, Ordering::Relaxed);
        Self(Arc::from(format!("sub-{n}")))
    }

    /// Wraps a caller-chosen id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({:?})", &*self.0)
    }
}

impl From<&str> for SubscriptionId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_print_as_type_slash_key_and_honour_padding() {
        let id = AgentId::new("worker", "a/b").unwrap();
        assert_eq!(id.to_string(), "worker/a/b");
        assert_eq!(format!("[{id:>12}]"), "[  worker/a/b]");
        assert_eq!(format!("[{id:<12}]"), "[worker/a/b  ]");
        assert_eq!(format!("{id:.6}"), "worker");
        for (t, k) in [("worker", "a/b"), ("日本", ""), ("t", "key with spaces")] {
            let id = AgentId::new(t, k).unwrap();
            assert_eq!(id.joined(), id.to_string());
        }
    }

    #[test]
    fn generated_message_ids_print_as_sixteen_hex_digits() {
        for n in [0u64, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let id = MessageId(MessageIdRepr::Generated(n));
            assert_eq!(id.to_string(), format!("warren-{n:016x}"));
        }
        assert_eq!(MessageId::new("given").to_string(), "given");
    }

    #[test]
    fn agent_type_follows_python_word_class() {
        for ok in [
            "a",
            "a.b-c_d",
            "1",
            "é",
            "日本",
            "Ünïcode_9",
            "ascii-then-é",
        ] {
            AgentType::new(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "", "a b", "a/b", "a:b", "a\n", "a=b", "tab\t", "é b", "日本/x", "a\u{a0}",
        ] {
            let err = AgentType::new(bad).unwrap_err();
            assert_eq!(
                err,
                IdError::InvalidAgentType {
                    value: bad.to_owned()
                }
            );
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn topic_type_allows_colon_and_equals() {
        for ok in ["a:b=c", "a.b-c", "rec:", "日本:x"] {
            TopicId::new(ok, "any source / with spaces").unwrap();
        }
        for bad in ["a/b", "", "a b"] {
            assert!(matches!(
                TopicId::new(bad, "s"),
                Err(IdError::InvalidTopicType { .. })
            ));
        }
    }

    #[test]
    fn agent_id_parses_on_first_slash() {
        let id: AgentId = "a/b/c".parse().unwrap();
        assert_eq!((id.agent_type().as_str(), id.key()), ("a", "b/c"));
        let id: AgentId = "a/".parse().unwrap();
        assert_eq!(id.key(), "");
        assert!(matches!(
            "ab".parse::<AgentId>(),
            Err(IdError::MissingSeparator { .. })
        ));
        assert!(matches!(
            "/k".parse::<AgentId>(),
            Err(IdError::InvalidAgentType { .. })
        ));
        for key in ["", "a/b", " x ", "line\nbreak"] {
            let id = AgentId::new("t", key).unwrap();
            assert_eq!(id.to_string(), format!("t/{key}"));
            assert_eq!(id.to_string().parse::<AgentId>().unwrap(), id);
        }
    }

    #[test]
    fn message_ids_are_unique_and_keep_given_text() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert_ne!(a, b);
        assert!(a.is_generated());
        assert_eq!(MessageId::new("abc").to_string(), "abc");
    }

    #[test]
    fn generated_ids_are_unique_across_threads_and_blocks() {
        // Several blocks per thread, threads taking blocks at the same time.
        let per_thread = 3 * MESSAGE_ID_BLOCK as usize + 7;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| MessageId::generate())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(id.is_generated());
                assert!(seen.insert(id.to_string()), "{id} generated twice");
            }
        }
        assert_eq!(seen.len(), 4 * per_thread);
    }
}
