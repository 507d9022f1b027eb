//! # warren-typename
//!
//! A message's type name on the wire is the bare name of its Rust type: `my_crate::msgs::WorkRequest`
//! is `WorkRequest`, `Vec<my::Item>` is `Vec<Item>`. The host (`warren-core`) and the guest SDK
//! (`warren-guest`, compiled to wasm, which cannot depend on the host's crates) both name messages
//! with this crate, so the two sides always agree.
//!
//! It also holds the other things both sides must do alike: packing short message data into the
//! words of the WIT `inline-bytes` record ([`inline`]), and Warren's MessagePack ([`msgpack`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The bare name of a Rust type: `my_crate::msgs::WorkRequest` becomes `WorkRequest`, and
/// `Vec<my::Item>` becomes `Vec<Item>`.
pub fn bare_type_name(full: &str) -> String {
    bare_name(full).into_owned()
}

/// [`bare_type_name`], borrowed from `full` for a plain path (the common case, on every message).
pub fn bare_name(full: &str) -> Cow<'_, str> {
    if !full.bytes().any(is_separator) {
        return Cow::Borrowed(full.rsplit(':').next().unwrap_or(full));
    }
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, c) in full.char_indices() {
        if c == ':' {
            segment_start = i + 1;
        } else if SEPARATORS.contains(&c) {
            out.push_str(&full[segment_start..i]);
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    out.push_str(&full[segment_start..]);
    Cow::Owned(out)
}

/// [`bare_name`] of a `'static` type name (what `std::any::type_name` returns), remembered: the
/// name is scanned once per type and thread, then found in a small per-thread cache keyed by the
/// name's address and length. Every message crossing into or out of a wasm agent is named, and
/// the scan (with `rsplit`) was 4% of a wasm publish delivery. The bare name of a generic, tuple
/// or reference type is built once and kept for the life of the process (one per distinct type).
pub fn static_bare_name(full: &'static str) -> &'static str {
    const SLOTS: usize = 32;
    // All-zero when empty (`None` is a null pointer), so in a wasm guest the cache sits in
    // `.bss`, not in the data image every instance maps (and would copy on its first write).
    thread_local! {
        static CACHE: [Cell<(usize, usize, Option<&'static str>)>; SLOTS] =
            const { [const { Cell::new((0, 0, None)) }; SLOTS] };
    }
    let key = (full.as_ptr() as usize, full.len());
    let slot = ((key.0 >> 3) ^ key.1) % SLOTS;
    if let Ok(Some(hit)) = CACHE.try_with(|c| match c[slot].get() {
        (ptr, len, Some(bare)) if (ptr, len) == key => Some(bare),
        _ => None,
    }) {
        return hit;
    }
    let bare = match bare_name(full) {
        Cow::Borrowed(b) => b,
        Cow::Owned(o) => intern(o),
    };
    // A thread being torn down has no cache; the name is still right.
    let _ = CACHE.try_with(|c| c[slot].set((key.0, key.1, Some(bare))));
    bare
}

/// One `'static` copy per distinct built name (bounded by the program's message types).
fn intern(name: String) -> &'static str {
    static NAMES: Mutex<Option<HashMap<String, &'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashMap::new);
    if let Some(known) = names.get(&name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
    names.insert(name, leaked);
    leaked
}

/// Characters that end a path segment inside a type name (generics, tuples, slices, references).
const SEPARATORS: [char; 10] = ['<', '>', ',', ' ', '(', ')', '[', ']', ';', '&'];

/// The lowest byte [`SEPARATORS`] holds (`' '`); every separator is below `FIRST + 64`.
const FIRST: u8 = b' ';

/// [`SEPARATORS`] as a 64-bit set over the bytes `FIRST..FIRST + 64`. 64 bits, not 128: on
/// wasm32 (the guest SDK) a 128-bit shift is a call into compiler-rt (`__lshrti3`), which was 3%
/// of a wasm relay chain.
const SEPARATOR_BITS: u64 = {
    let mut bits = 0u64;
    let mut i = 0;
    while i < SEPARATORS.len() {
        let b = SEPARATORS[i] as u32 - FIRST as u32;
        assert!(b < 64, "separators fit the 64-bit set");
        bits |= 1 << b;
        i += 1;
    }
    bits
};

/// Whether a byte of a type name is one of the [`SEPARATORS`] (all ASCII, so a byte scan finds
/// them; several times faster than a `char` pattern, and this runs on every message).
fn is_separator(b: u8) -> bool {
    let i = b.wrapping_sub(FIRST);
    i < 64 && SEPARATOR_BITS & (1 << i) != 0
}

/// Message data of at most [`inline::CAPACITY`] bytes packed into the four `u64` words of the WIT
/// `inline-bytes` record (little-endian, `word0` holds bytes 0-7), and back.
pub mod inline {
    /// The most bytes a message carries inline.
    pub const CAPACITY: usize = 32;

    /// `data` as `(len, words)`, or `None` when it is longer than [`CAPACITY`].
    #[inline]
    pub fn pack(data: &[u8]) -> Option<(u8, [u64; 4])> {
        if data.len() > CAPACITY {
            return None;
        }
        let mut bytes = [0u8; CAPACITY];
        bytes[..data.len()].copy_from_slice(data);
        let word =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some((data.len() as u8, [word(0), word(1), word(2), word(3)]))
    }

    /// An inline length above [`CAPACITY`]: the sender's error, worded alike on both sides.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TooLong(pub u8);

    impl std::fmt::Display for TooLong {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "inline message data of {} bytes; at most {CAPACITY} fit",
                self.0
            )
        }
    }

    impl std::error::Error for TooLong {}

    /// The `len` bytes packed in `words`, unpacked into `buf` (a buffer on the caller's stack:
    /// nothing is returned by value or copied twice).
    #[inline]
    pub fn unpack_into(
        len: u8,
        words: [u64; 4],
        buf: &mut [u8; CAPACITY],
    ) -> Result<&[u8], TooLong> {
        let n = usize::from(len);
        if n > CAPACITY {
            return Err(TooLong(len));
        }
        for (chunk, w) in buf.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        Ok(&buf[..n])
    }
}

/// The encodings both sides read, named once: the content type of each and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// `application/json`, AutoGen's default.
    Json,
    /// `application/msgpack`: Warren's MessagePack ([`msgpack`]).
    Msgpack,
}

impl Codec {
    /// The content type.
    pub const fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Msgpack => "application/msgpack",
        }
    }

    /// The codec of a content type; `None` for any other.
    #[inline]
    pub fn of(content_type: &str) -> Option<Codec> {
        [Codec::Json, Codec::Msgpack]
            .into_iter()
            .find(|c| c.content_type() == content_type)
    }
}

/// Warren's MessagePack (`application/msgpack`), the encoding of messages to and from wasm agents,
/// defined once for the host and the guest SDK: struct fields keyed by name (so a sender and a
/// receiver whose types drift apart behave as with JSON), types in their human-readable form (an
/// IP address or a UUID as its text, as JSON has it, so the data transcodes to what JSON would
/// have been), nesting limited to [`msgpack::MAX_DEPTH`] levels and nothing allowed after the
/// value (both as `serde_json` has it for JSON).
pub mod msgpack {
    use serde::de::{DeserializeOwned, IgnoredAny};
    use serde::{Deserialize, Serialize};

    pub use rmp_serde::decode::Error as DecodeError;
    pub use rmp_serde::encode::Error as EncodeError;

    /// How deep data may nest, as serde_json limits JSON: decoding recurses on the stack, and
    /// `rmp_serde`'s own default (1,024) is more than a host thread's stack should give a
    /// hostile message.
    pub const MAX_DEPTH: usize = 128;

    /// A deserializer over one message's data.
    pub type Deserializer<'a> = rmp_serde::Deserializer<
        rmp_serde::decode::ReadRefReader<'a, [u8]>,
        rmp_serde::config::HumanReadableConfig<rmp_serde::config::DefaultConfig>,
    >;

    /// A deserializer for `data`, human-readable and depth-limited.
    pub fn deserializer(data: &[u8]) -> Deserializer<'_> {
        let mut de = rmp_serde::Deserializer::from_read_ref(data).with_human_readable();
        de.set_max_depth(MAX_DEPTH);
        de
    }

    /// Checks that `de` has read all of its data: one value, nothing after it. (`rmp_serde` does
    /// not say where it stopped, so this reads on: only the end of the data fails with an
    /// end-of-data marker read.)
    pub fn end(de: &mut Deserializer<'_>) -> Result<(), DecodeError> {
        match IgnoredAny::deserialize(de) {
            Err(DecodeError::InvalidMarkerRead(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Ok(())
            }
            _ => Err(DecodeError::Syntax("data after the message".into())),
        }
    }

    /// Decodes `data` holding one `T` and nothing after it.
    pub fn from_slice<T: DeserializeOwned>(data: &[u8]) -> Result<T, DecodeError> {
        let mut de = deserializer(data);
        let value = T::deserialize(&mut de)?;
        end(&mut de)?;
        Ok(value)
    }

    /// `value` encoded.
    pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        write(value, &mut out)?;
        Ok(out)
    }

    /// Appends `value` to `out`.
    pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut ser = rmp_serde::Serializer::new(out)
            .with_struct_map()
            .with_human_readable();
        value.serialize(&mut ser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_lose_their_modules_and_borrow() {
        assert_eq!(bare_type_name("a::b::Work"), "Work");
        assert!(matches!(bare_name("a::b::Work"), Cow::Borrowed("Work")));
        assert!(matches!(bare_name("i64"), Cow::Borrowed("i64")));
    }

    #[test]
    fn generics_tuples_slices_and_references_keep_their_shape() {
        assert_eq!(bare_type_name("alloc::vec::Vec<my::Item>"), "Vec<Item>");
        assert_eq!(
            bare_type_name("core::option::Option<(a::X, b::Y)>"),
            "Option<(X, Y)>"
        );
        assert_eq!(bare_type_name("&[my::Item; 3]"), "&[Item; 3]");
    }

    #[test]
    fn every_separator_is_found_and_nothing_else() {
        for c in SEPARATORS {
            assert!(is_separator(c as u8), "{c:?}");
        }
        for b in 0..=255u8 {
            assert_eq!(is_separator(b), SEPARATORS.contains(&(b as char)), "{b}");
        }
    }

    #[test]
    fn static_names_are_cached_per_type_and_agree_with_the_scan() {
        fn name_of<T: ?Sized>() -> &'static str {
            static_bare_name(std::any::type_name::<T>())
        }
        struct Ping;
        for _ in 0..2 {
            // The second round is answered from the cache.
            assert_eq!(name_of::<Ping>(), "Ping");
            assert_eq!(name_of::<Vec<Ping>>(), "Vec<Ping>");
            assert_eq!(name_of::<(Ping, i64)>(), "(Ping, i64)");
            assert_eq!(name_of::<&str>(), "&str");
        }
        // Built names are interned: one copy per type, the same pointer every time.
        assert!(std::ptr::eq(name_of::<Vec<Ping>>(), name_of::<Vec<Ping>>()));
        // Names that collide in the cache (same slot) still get their own bare names: more
        // distinct names than slots, asked twice each.
        let names: Vec<&'static str> = (0..200)
            .map(|i| &*Box::leak(format!("m{i}::T{i}").into_boxed_str()))
            .collect();
        for round in 0..2 {
            for (i, full) in names.iter().enumerate() {
                assert_eq!(static_bare_name(full), format!("T{i}"), "round {round}");
            }
        }
        // A prefix of a longer name at the same address is a different key.
        let long: &'static str = "a::B<c::D>";
        assert_eq!(static_bare_name(long), "B<D>");
        assert_eq!(static_bare_name(&long[..4]), "B");
        assert_eq!(static_bare_name(long), "B<D>");
    }

    #[test]
    fn bare_names_compare_without_their_module_paths() {
        assert!(bare_name("a::b::Ping") == "Ping");
        assert!(bare_name("a::b::Ping") != "b::Ping");
        assert!(bare_name("alloc::vec::Vec<a::Ping>") == "Vec<Ping>");
    }

    #[test]
    fn inline_data_round_trips_at_every_length_and_refuses_more() {
        let data: Vec<u8> = (1..=40).collect();
        for n in 0..=inline::CAPACITY {
            let (len, words) = inline::pack(&data[..n]).unwrap();
            assert_eq!(usize::from(len), n);
            let mut buf = [0xAA; inline::CAPACITY];
            assert_eq!(
                inline::unpack_into(len, words, &mut buf).unwrap(),
                &data[..n]
            );
        }
        // Little-endian words, byte 0 lowest: what a guest in another language must produce.
        assert_eq!(
            inline::pack(b"{\"i\":1}").unwrap().1[0],
            u64::from_le_bytes(*b"{\"i\":1}\0")
        );
        assert!(inline::pack(&data[..33]).is_none());
        let mut buf = [0; inline::CAPACITY];
        assert_eq!(
            inline::unpack_into(33, [0; 4], &mut buf).unwrap_err(),
            inline::TooLong(33)
        );
        assert_eq!(
            inline::unpack_into(255, [0; 4], &mut buf)
                .unwrap_err()
                .to_string(),
            "inline message data of 255 bytes; at most 32 fit"
        );
    }
}
