//! Tenants: isolated runtimes on one shared host, for platforms that run other people's agents.
//!
//! Each tenant has its **own** [`AgentRuntime`]: its own agent types, subscriptions, topics,
//! mailboxes and state. Nothing routes between runtimes, so a tenant's plugin cannot reach
//! another tenant's agent even by guessing its type and key (the type does not exist in its
//! runtime), a publish never crosses tenants, and `save_state` of one tenant holds only its own
//! agents. What tenants share is the host: one engine, the compile cache and the instance pool.
//! Quotas keep that fair: each tenant has a ceiling on live instances, on waiting messages and on
//! every per-agent limit, so one tenant cannot exhaust the pool or the queue for the others.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use warren_core::{AgentRuntime, AgentType};

use crate::host::{Ceilings, LoadedPlugin, PluginError, WasmHost};
use crate::manifest::Manifest;

/// A tenant's settings. [`TenantConfig::new`] gives safe defaults.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// A name for logs.
    pub name: String,
    /// Ceilings over every manifest's limits, and the tenant's instance quota.
    pub ceilings: Ceilings,
    /// Mailbox capacity of each agent.
    pub mailbox_capacity: usize,
    /// Most messages waiting in the tenant's runtime at once.
    pub max_queued: usize,
    /// See `RuntimeBuilder::ignore_unhandled_exceptions`.
    pub ignore_unhandled_exceptions: bool,
}

impl TenantConfig {
    /// Defaults for an untrusted tenant: 64 MiB and 5 s per message per instance, 1 MiB messages,
    /// 10,000 live agents, 1,024 waiting messages per agent, 100,000 in all, no filesystem.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ceilings: Ceilings {
                memory: 64 << 20,
                time: Duration::from_secs(5),
                message_bytes: 1 << 20,
                instances_per_type: 10_000,
                instances: 10_000,
                allow_filesystem: false,
            },
            mailbox_capacity: 1024,
            max_queued: 100_000,
            ignore_unhandled_exceptions: true,
        }
    }
}

/// One tenant: a runtime of its own, loading plugins under its ceilings.
#[derive(Clone)]
pub struct Tenant {
    name: String,
    host: WasmHost,
    runtime: AgentRuntime,
    ceilings: Ceilings,
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("live_instances", &self.live_instances())
            .finish()
    }
}

impl WasmHost {
    /// Creates an isolated tenant on this host.
    pub fn tenant(&self, config: TenantConfig) -> Tenant {
        let runtime = AgentRuntime::builder()
            .mailbox_capacity(config.mailbox_capacity)
            .max_queued(config.max_queued)
            .ignore_unhandled_exceptions(config.ignore_unhandled_exceptions)
            .build();
        Tenant {
            name: config.name,
            host: self.clone(),
            runtime,
            ceilings: config.ceilings,
            live: Arc::default(),
        }
    }
}

impl Tenant {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's runtime: start it, send to it, save its state.
    pub fn runtime(&self) -> &AgentRuntime {
        &self.runtime
    }

    /// Live wasm agents of this tenant.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Loads a plugin under this tenant's ceilings (it still has to be registered).
    pub async fn load_with_component(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
        component_path: &Path,
    ) -> Result<LoadedPlugin, PluginError> {
        self.host
            .load_under(
                manifest,
                manifest_path,
                component_path,
                &self.ceilings,
                Some((self.live.clone(), self.ceilings.instances)),
            )
            .await
    }

    /// Loads and registers the plugin of `manifest_path` in this tenant.
    pub async fn install(&self, manifest_path: &Path) -> Result<AgentType, PluginError> {
        let manifest = Manifest::load(manifest_path).map_err(PluginError::Manifest)?;
        let component = manifest.component_path(manifest_path);
        let plugin = self
            .load_with_component(manifest, manifest_path, &component)
            .await?;
        self.register(&plugin).await
    }

    /// Registers a plugin loaded by this tenant in its runtime.
    pub async fn register(&self, plugin: &LoadedPlugin) -> Result<AgentType, PluginError> {
        if !plugin.belongs_to(&self.live) {
            return Err(PluginError::Register {
                plugin: plugin.manifest.agent.agent_type.clone(),
                source: warren_core::Error::AccessDenied {
                    agent: warren_core::AgentId::from_parts(plugin.manifest.agent_type(), "*"),
                    action: format!(
                        "register in tenant `{}` a plugin loaded for another tenant",
                        self.name
                    ),
                },
            });
        }
        self.host.register(&self.runtime, plugin).await
    }
}
