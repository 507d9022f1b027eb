//! The messages of the `local` fixture (`tests/fixtures/local`): the fixture crate's own types.

pub use warren_fixture_local::{Add, Crash, Grab, Iam, Loop, Say, Total, WhoAmI};
