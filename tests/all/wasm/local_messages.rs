//! The messages of the `local` fixture (`tests/fixtures/local`), as the tests send them.

use serde::{Deserialize, Serialize};

/// Adds to the agent's total; answered with [`Total`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Add {
    pub n: i64,
}
/// The agent's total.
#[derive(Debug, Serialize, Deserialize)]
pub struct Total {
    pub n: i64,
}
/// Prints `line` to stdout and stderr, then panics with `message`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Crash {
    pub line: String,
    pub message: String,
}
/// Loops forever.
#[derive(Debug, Serialize, Deserialize)]
pub struct Loop {}
/// Allocates `megabytes` MiB and keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grab {
    pub megabytes: u64,
}
/// Asks the agent who it is; answered with [`Iam`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {}
/// The agent's key from `self_id` during the call, and the key `init` saw.
#[derive(Debug, Serialize, Deserialize)]
pub struct Iam {
    pub key: String,
    pub created_as: String,
}
