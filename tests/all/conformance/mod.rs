//! AutoGen conformance: one test per numbered case of `autogen-semantics.md` §2 (the test name
//! carries the number). `docs/conformance.md` says, per case, whether Warren behaves the same,
//! deliberately differently (and why), or whether the case does not apply to Rust.

mod identity;
mod intervention;
mod lifecycle;
mod publish;
mod registration;
mod send;
