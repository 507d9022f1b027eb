//! Warren's integration tests, compiled into one binary so the link step happens once.

mod answer_now;
mod common;
mod complete_example;
mod conformance;
mod departures;
mod hostile;
mod wasm;
