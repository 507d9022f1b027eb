//! Saved state: one agent's [`AgentState`] and a whole runtime's [`SavedState`] document.
//!
//! An agent's state is a JSON value (AutoGen: a mapping), held as its JSON text: an agent
//! serializes it once when it is saved, a document embeds it as-is, and a load hands the agent
//! the text to read into its own types. Nothing on the way builds a tree of `Value`s, so saving
//! and restoring many agents costs about what writing and reading their JSON costs.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::Error;

/// One agent's saved state: a JSON value, kept as its (compact) JSON text.
///
/// ```
/// use warren_core::AgentState;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct Counter { counter: i64 }
///
/// let state = AgentState::new(&Counter { counter: 3 })?;
/// assert_eq!(state.json(), r#"{"counter":3}"#);
/// assert_eq!(state.decode::<Counter>()?, Counter { counter: 3 });
/// assert_eq!(state.to_value(), serde_json::json!({ "counter": 3 }));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentState(Box<RawValue>);

impl AgentState {
    /// The state of anything serializable as JSON. Fails only where serde_json does (a map with
    /// non-string keys, a failing `Serialize` impl).
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// A state from JSON text, which is checked to be one JSON value (kept as written inside;
    /// whitespace around it is dropped).
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.into()).map(Self)
    }

    /// The state's JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Reads the state into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.json())
    }

    /// The state as a JSON [`Value`].
    pub fn to_value(&self) -> Value {
        // The text was checked (or written) as JSON with the same parser and nesting limit, and
        // every JSON value is a `Value`.
        self.decode()
            .expect("an AgentState always holds one JSON value")
    }
}

/// `{}`: the state of an agent that keeps none.
impl Default for AgentState {
    fn default() -> Self {
        Self::from_json("{}").expect("`{}` is JSON")
    }
}

impl From<&Value> for AgentState {
    fn from(value: &Value) -> Self {
        // A `Value`'s maps have string keys, so it always serializes.
        Self::new(value).expect("a serde_json::Value always serializes")
    }
}

impl From<Value> for AgentState {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

/// Equal when the JSON text is equal (`{"a":1}` and `{ "a": 1 }` differ; compare
/// [`AgentState::to_value`]s to ignore formatting).
impl PartialEq for AgentState {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Eq for AgentState {}

impl fmt::Debug for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AgentState").field(&self.json()).finish()
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

/// A runtime's saved state (AutoGen's `save_state` mapping): `"type/key"` to that agent's
/// [`AgentState`], in the order the agents were created. It serializes as one JSON object, the
/// document AutoGen's `json.dumps(await runtime.save_state())` writes, and reads one back.
///
/// Entries keep their order and are not hashed. A key that appears twice (possible in a JSON
/// document) is loaded twice, in order, so the later entry wins, as it does for a JSON object
/// read by serde_json or Python.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    entries: Vec<(String, AgentState)>,
}

impl SavedState {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty document with room for `n` agents.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends an agent's state under its `"type/key"`.
    pub fn push(&mut self, key: impl Into<String>, state: AgentState) {
        self.entries.push((key.into(), state));
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state stored under `key` (the last one, if it appears twice). A linear search.
    pub fn get(&self, key: &str) -> Option<&AgentState> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s)
    }

    /// The keys in document order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The entries in document order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &AgentState)> {
        self.entries.iter().map(|(k, s)| (k.as_str(), s))
    }

    /// The document as compact JSON (what `serde_json::to_string` writes), into a buffer sized
    /// for it up front: a document of many agents is megabytes, and growing the buffer by
    /// doubling would copy it and touch fresh memory twice over.
    pub fn to_json(&self) -> String {
        // `{}` plus, per entry, `"key":state,` (keys that need escaping grow the buffer).
        let size = 2 + self
            .entries
            .iter()
            .map(|(k, s)| k.len() + s.json().len() + 4)
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        serde_json::to_writer(&mut out, self)
            .expect("string keys and checked JSON always serialize into a Vec");
        // One pass over (mostly ASCII) bytes; serde_json writes only UTF-8.
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// The whole document as a JSON [`Value`] (an object).
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, s)| (k.to_owned(), s.to_value()))
                .collect(),
        )
    }

    /// A document from a JSON value, which must be an object; each member is one agent's state.
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let doc = value.as_object().ok_or_else(|| Error::InvalidState {
            key: "<document>".to_owned(),
            reason: format!(
                "expected a JSON object keyed \"type/key\", got {}",
                json_kind(value)
            ),
        })?;
        Ok(doc
            .iter()
            .map(|(k, v)| (k.clone(), AgentState::from(v)))
            .collect())
    }
}

impl FromIterator<(String, AgentState)> for SavedState {
    fn from_iter<I: IntoIterator<Item = (String, AgentState)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for SavedState {
    type Item = (String, AgentState);
    type IntoIter = std::vec::IntoIter<(String, AgentState)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Serialize for SavedState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, s) in &self.entries {
            map.serialize_entry(k, s)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SavedState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = SavedState;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed \"type/key\" (a saved runtime state)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SavedState, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, AgentState>()? {
                    entries.push(entry);
                }
                Ok(SavedState { entries })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A state document for [`AgentRuntime::load_state`](crate::AgentRuntime::load_state): a
/// [`SavedState`], whose states are moved into the agents, or a `&SavedState`, which is kept and
/// copied from; or a JSON [`Value`] (or `&Value`) object, converted first.
pub trait StateDocument<'v> {
    /// The document, owned or borrowed; an error if a `Value` is not an object.
    fn into_document(self) -> Result<Cow<'v, SavedState>, Error>;
}

impl<'v> StateDocument<'v> for SavedState {
    fn into_document(self) -> Result<Cow<'v, SavedState>, Error> {
        Ok(Cow::Owned(self))
    }
}

impl<'v> StateDocument<'v> for &'v SavedState {
    fn into_document(self) -> Result<Cow<'v, SavedState>, Error> {
        Ok(Cow::Borrowed(self))
    }
}

impl<'v> StateDocument<'v> for &Value {
    fn into_document(self) -> Result<Cow<'v, SavedState>, Error> {
        SavedState::from_value(self).map(Cow::Owned)
    }
}

impl<'v> StateDocument<'v> for Value {
    fn into_document(self) -> Result<Cow<'v, SavedState>, Error> {
        (&self).into_document()
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn agent_state_holds_json_text_checked_once() {
        let s = AgentState::from_json(r#" {"a": [1, 2]} "#).unwrap();
        // Kept as written inside, trimmed around; read back as a value.
        assert_eq!(s.json(), r#"{"a": [1, 2]}"#);
        assert_eq!(s.to_value(), json!({ "a": [1, 2] }));
        for bad in ["", "{", "{} {}", "nope", "[1,]"] {
            assert!(AgentState::from_json(bad).is_err(), "{bad:?}");
        }
        assert_eq!(AgentState::default().json(), "{}");
        assert_eq!(
            AgentState::from(json!({ "b": null })).json(),
            r#"{"b":null}"#
        );
        // Equality is by text.
        assert_ne!(
            AgentState::from_json("{\"a\":1}").unwrap(),
            AgentState::from_json("{ \"a\": 1 }").unwrap()
        );
        let mut with_int_keys = std::collections::BTreeMap::new();
        with_int_keys.insert(vec![1u8], 1);
        assert!(AgentState::new(&with_int_keys).is_err(), "non-string keys");
    }

    #[test]
    fn saved_state_is_one_json_object_in_document_order() {
        let mut doc = SavedState::new();
        doc.push("t/2", AgentState::from(json!({ "n": 2 })));
        doc.push("t/10", AgentState::from(json!({ "n": 10 })));
        doc.push("t/1", AgentState::from(json!("s")));
        let text = serde_json::to_string(&doc).unwrap();
        // Not sorted, not re-encoded: the states as they were written.
        assert_eq!(text, r#"{"t/2":{"n":2},"t/10":{"n":10},"t/1":"s"}"#);
        let back: SavedState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["t/2", "t/10", "t/1"]);
        assert_eq!(back.get("t/10").unwrap().json(), r#"{"n":10}"#);
        assert!(back.get("t/3").is_none());
        assert_eq!(
            back.to_value(),
            json!({ "t/2": { "n": 2 }, "t/10": { "n": 10 }, "t/1": "s" })
        );
        // Through a Value and back.
        assert_eq!(SavedState::from_value(&back.to_value()).unwrap(), doc);
        assert_eq!(doc.to_json(), text);
        let escaped: SavedState = [("t/\"q\"".to_owned(), AgentState::default())]
            .into_iter()
            .collect();
        assert_eq!(
            escaped.to_json(),
            serde_json::to_string(&escaped).unwrap(),
            "keys that need escaping"
        );
        assert_eq!(SavedState::new().to_json(), "{}");
        // Pretty output still reads back.
        let pretty = serde_json::to_string_pretty(&doc).unwrap();
        assert_eq!(serde_json::from_str::<SavedState>(&pretty).unwrap(), doc);
    }

    #[test]
    fn states_also_read_from_a_value() {
        // serde_json's own `Value` deserializer hands a raw value its text.
        let doc: SavedState =
            serde_json::from_value(json!({ "t/1": { "n": [1, 2] }, "t/2": null })).unwrap();
        assert_eq!(doc.get("t/1").unwrap().to_value(), json!({ "n": [1, 2] }));
        assert_eq!(doc.get("t/2").unwrap().json(), "null");
        let one: AgentState = serde_json::from_value(json!({ "a": "b" })).unwrap();
        assert_eq!(one.json(), r#"{"a":"b"}"#);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_refused_by_name() {
        for text in ["[1, 2]", "3", "\"t/1\"", "null"] {
            let e = serde_json::from_str::<SavedState>(text).unwrap_err();
            assert!(e.to_string().contains("keyed \"type/key\""), "{text}: {e}");
        }
        match SavedState::from_value(&json!([1, 2])).unwrap_err() {
            Error::InvalidState { key, reason } => {
                assert_eq!(key, "<document>");
                assert!(reason.contains("got an array"), "{reason}");
            }
            other => panic!("{other}"),
        }
        // A member that is not JSON cannot get in.
        assert!(serde_json::from_str::<SavedState>(r#"{"t/1": }"#).is_err());
    }
}
