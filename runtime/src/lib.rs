//! # warren-runtime
//!
//! Warren's wasm host on top of [`warren_core`]: each agent type is a WIT component
//! (`wit/`, world `warren:agent/plugin@0.1.0`) compiled once and instantiated once per live agent
//! (or once per `agents_per_instance` agents, for a plugin whose manifest lets them share),
//! side by side with native Rust agents in the same [`AgentRuntime`].
//!
//! ```no_run
//! use warren_runtime::{AgentRuntime, WasmHost};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let host = WasmHost::new()?;
//! let runtime = AgentRuntime::new();
//! let echo = host.load("plugins/echo/plugin.toml".as_ref()).await?;
//! host.register(&runtime, &echo).await?;
//! runtime.start()?;
//! # Ok(()) }
//! ```
//!
//! Everything of `warren-core` is re-exported, so embedders depend on this crate alone.

#[cfg(feature = "mimalloc")]
pub mod allocator;
mod bindings;
pub mod discover;
pub mod host;
mod logpipe;
pub mod manifest;
mod roster;
mod sync_io;
pub mod tenant;
mod wasm_agent;

pub use bindings::GuestError;
pub use host::{
    Allocation, Ceilings, HostConfig, Limits, LoadedPlugin, MemoryChecks, PluginError, WasmHost,
};
pub use manifest::{Manifest, ManifestError};
pub use tenant::{Tenant, TenantConfig};
pub use warren_core::*;
