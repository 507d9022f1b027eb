//! # warren-typename
//!
//! A message's type name on the wire is the bare name of its Rust type: `my_crate::msgs::WorkRequest`
//! is `WorkRequest`, `Vec<my::Item>` is `Vec<Item>`. The host (`warren-core`) and the guest SDK
//! (`warren-guest`, compiled to wasm, which cannot depend on the host's crates) both name messages
//! with this crate, so the two sides always agree. No dependencies.

use std::borrow::Cow;

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

/// Whether the bare name of the Rust type `full` is `name` (no allocation for a plain path).
pub fn bare_name_is(full: &str, name: &str) -> bool {
    bare_name(full) == name
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
    fn bare_name_is_compares_the_bare_name() {
        assert!(bare_name_is("a::b::Ping", "Ping"));
        assert!(!bare_name_is("a::b::Ping", "b::Ping"));
        assert!(bare_name_is("alloc::vec::Vec<a::Ping>", "Vec<Ping>"));
    }
}
