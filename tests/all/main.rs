//! Warren's integration tests, compiled into one binary so the link step happens once.

mod common;
mod conformance;
