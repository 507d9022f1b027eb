//! The wasm host: one [`WasmHost`] (one wasmtime `Engine` and `Linker`) loads plugins and registers
//! them as agent types in an [`AgentRuntime`].
//!
//! Loading a plugin checks everything that can be checked before a message arrives: the manifest,
//! that the file is a component (not a core module or random bytes), that it compiles, that it
//! imports nothing the host does not grant, that it exports Warren's `plugin` world, and that a
//! probe instance starts and handles what the manifest says it handles. Each failure is a
//! [`PluginError`] naming the plugin and the cause.
//!
//! Compiled components are cached on disk (keyed by a hash of the component bytes and the
//! engine's compatibility hash), so a second start does not compile again. Each agent type is
//! compiled once and pre-linked once (`InstancePre`); each live agent gets its own `Store`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use warren_core::{AgentRuntime, AgentType, DynFactory, Error, Subscription};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{Plugin as PluginWorld, PluginPre, sync_world};
use crate::logpipe::LogPipe;
use crate::manifest::{Manifest, ManifestError};
use crate::roster::Whom;
use crate::wasm_agent::{Shards, WasmAgent};

/// Interfaces every plugin may import. Rust's standard library imports the `wasi:cli`
/// environment/exit/stdio, `wasi:io`, clocks and random interfaces even when it does no I/O; the
/// host grants them with an empty context (no environment, no arguments, stdin closed, stdout and
/// stderr captured into the host's log).
const GRANTED: &[&str] = &[
    "warren:agent/host",
    "warren:agent/types",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Why a plugin could not be loaded. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The manifest is missing, unreadable or invalid; every problem is listed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Manifest(Vec<ManifestError>),
    /// The component file cannot be read.
    #[error("plugin `{plugin}`: cannot read component {}: {source}", path.display())]
    Io {
        /// The plugin (its agent type).
        plugin: String,
        /// The component path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("plugin `{plugin}`: {} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The plugin.
        plugin: String,
        /// The component path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The component is malformed or does not compile.
    #[error("plugin `{plugin}`: the component does not compile: {cause}")]
    Compile {
        /// The plugin.
        plugin: String,
        /// wasmtime's error.
        cause: String,
    },
    /// The component imports an interface the host does not grant.
    #[error("plugin `{plugin}`: imports `{import}`, which is not granted: {why}")]
    ImportNotGranted {
        /// The plugin.
        plugin: String,
        /// The import, as the component names it.
        import: String,
        /// Why it is refused.
        why: String,
    },
    /// The component is not a Warren agent (another world, or missing exports).
    #[error(
        "plugin `{plugin}`: not a Warren agent component (world `warren:agent/plugin@0.1.0`): {cause}"
    )]
    WrongWorld {
        /// The plugin.
        plugin: String,
        /// wasmtime's explanation.
        cause: String,
    },
    /// The probe instance could not start.
    #[error("plugin `{plugin}`: a probe instance failed to start: {cause}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// The trap or error.
        cause: String,
    },
    /// The manifest names a message type the component does not handle.
    #[error("plugin `{plugin}`: the manifest says it handles `{message_type}`, but the component handles only [{}]", handled.join(", "))]
    MissingHandler {
        /// The plugin.
        plugin: String,
        /// The type from the manifest.
        message_type: String,
        /// What the component handles.
        handled: Vec<String>,
    },
    /// The manifest asks for shared instances (`agent.agents_per_instance` above 1) of a
    /// component that cannot have them.
    #[error(
        "plugin `{plugin}`: `agent.agents_per_instance = {agents_per_instance}` needs a component that can share instances, but {reason}; remove the key (an instance per agent)"
    )]
    CannotShareInstances {
        /// The plugin.
        plugin: String,
        /// What the manifest asked for.
        agents_per_instance: u32,
        /// Why the component cannot.
        reason: String,
    },
    /// The host engine could not be built.
    #[error("wasm host: {0}")]
    Engine(String),
    /// Registering the agent type failed.
    #[error("plugin `{plugin}`: {source}")]
    Register {
        /// The plugin.
        plugin: String,
        /// The runtime's error.
        #[source]
        source: Error,
    },
}

/// How the host allocates instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// The pooling allocator if it can be set up, otherwise on-demand (the default).
    Auto,
    /// Always on-demand (each instance maps its own memory).
    OnDemand,
    /// The pooling allocator or an error.
    Pooling,
}

/// How compiled guests keep their loads and stores inside their linear memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryChecks {
    /// Guard regions where the address space allows it: each memory gets wasmtime's default
    /// reservation of 4 GiB plus a guard, so every address a 32-bit guest can form lands in its
    /// own reservation and the compiled code checks no bounds (an access past the memory's end
    /// hits an inaccessible page and traps). The pools of one process share 64 TiB of address
    /// space for that (a pool of 1,000 instances takes 8 TiB); a pool that does not fit, or whose
    /// reservation the machine refuses, reserves only `max_memory` per memory and every load and
    /// store carries an explicit, Spectre-hardened check instead (about a tenth of a small
    /// message's cost). The default.
    #[default]
    Auto,
    /// Always explicit checks, with `max_memory` reserved per memory (for tools that cannot
    /// reserve terabytes of address space, such as valgrind).
    Explicit,
}

/// Host settings.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Instance allocation strategy.
    pub allocation: Allocation,
    /// Live instances the pooling allocator reserves slots for.
    pub max_instances: u32,
    /// The most linear memory one instance may use, in bytes (a ceiling over every manifest).
    pub max_memory: usize,
    /// Turns on fuel metering, so manifests can set `limits.fuel` (costs some speed everywhere).
    pub fuel: bool,
    /// How often the epoch ticker advances; per-message time limits are rounded up to it.
    pub epoch_tick: Duration,
    /// Writes `/tmp/perf-<pid>.map` so `perf report` names the guests' functions (profiling only).
    pub perf_map: bool,
    /// Guard regions or explicit bounds checks for guest memory accesses.
    pub memory_checks: MemoryChecks,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            allocation: Allocation::Auto,
            max_instances: 1000,
            max_memory: 256 << 20,
            fuel: false,
            epoch_tick: Duration::from_millis(10),
            perf_map: false,
            memory_checks: MemoryChecks::Auto,
        }
    }
}

/// `$XDG_CACHE_HOME/warren` or `~/.cache/warren`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("warren"))
}

/// What each agent instance's `Store` holds.
pub(crate) struct StoreState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// The agent the instance is running (in a shared instance, the one whose call is running).
    pub(crate) whom: Whom,
    pub(crate) runtime: warren_core::WeakRuntime,
    /// The guest's stderr, whose tail a trap report quotes.
    pub(crate) stderr: LogPipe,
    pub(crate) limiter: Limiter,
    pub(crate) plugin: Arc<PluginShared>,
    /// The context of the message being handled, for the `context` import (`None` between
    /// messages). Kept as the runtime's values and converted only if the guest asks.
    pub(crate) handling: Option<Handling>,
    /// The last agent this instance sent to: a relay sends to the same agent again and again,
    /// and reusing its id spares validating and allocating it per send.
    pub(crate) last_recipient: Option<warren_core::AgentId>,
    /// The recipients this instance resolved for `send-to`.
    pub(crate) recipients: crate::bindings::Recipients,
    /// The responses held for the `handle` call in progress (`send-to-held`).
    pub(crate) held: crate::bindings::Held,
}

/// The parts of a [`warren_core::MessageContext`] a guest can ask for (cheap to clone: shared ids).
pub(crate) struct Handling {
    pub(crate) sender: Option<warren_core::AgentId>,
    pub(crate) topic: Option<warren_core::TopicId>,
    pub(crate) is_rpc: bool,
    pub(crate) message_id: warren_core::MessageId,
}

impl From<&warren_core::MessageContext> for Handling {
    fn from(ctx: &warren_core::MessageContext) -> Self {
        Self {
            sender: ctx.sender.clone(),
            topic: ctx.topic_id.clone(),
            is_rpc: ctx.is_rpc,
            message_id: ctx.message_id.clone(),
        }
    }
}

/// Enforces the memory limit of one instance and remembers that it did, so the resulting trap can
/// be reported as a limit breach rather than a bare trap.
pub(crate) struct Limiter {
    memory: usize,
    pub(crate) hit_memory: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit_memory = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached (the guest asked for {desired})",
                self.memory
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Table elements one instance may have (function tables of Rust guests are small).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The limits one agent type runs with, after the tenant's ceilings were applied.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory: usize,
    /// Wall-clock time per message, nested calls included.
    pub time: Duration,
    /// Fuel per message, when metering is on.
    pub fuel: Option<u64>,
    /// Largest message sent, published, received or answered, in bytes.
    pub message_bytes: usize,
    /// Most live agents of this type.
    pub instances: usize,
}

/// Ceilings a tenant (or the host) puts over every manifest's limits, and its own quotas.
#[derive(Debug, Clone)]
pub struct Ceilings {
    /// Linear memory per instance, in bytes.
    pub memory: usize,
    /// Time per message.
    pub time: Duration,
    /// Largest message, in bytes.
    pub message_bytes: usize,
    /// Most live agents per type.
    pub instances_per_type: usize,
    /// Most live agents of all this tenant's types together.
    pub instances: usize,
    /// Whether manifests may grant a preopened directory.
    pub allow_filesystem: bool,
}

impl Default for Ceilings {
    fn default() -> Self {
        Self {
            memory: usize::MAX,
            time: Duration::MAX,
            message_bytes: usize::MAX,
            instances_per_type: usize::MAX,
            instances: usize::MAX,
            allow_filesystem: true,
        }
    }
}

impl Ceilings {
    fn resolve(&self, m: &Manifest, host_memory: usize) -> Limits {
        use crate::manifest::*;
        let l = &m.limits;
        let mb = |v: u64| usize::try_from(v.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Limits {
            memory: mb(l.memory_mb.unwrap_or(DEFAULT_MEMORY_MB))
                .min(self.memory)
                .min(host_memory),
            time: Duration::from_millis(l.time_ms.unwrap_or(DEFAULT_TIME_MS)).min(self.time),
            fuel: l.fuel,
            message_bytes: usize::try_from(l.message_bytes.unwrap_or(DEFAULT_MESSAGE_BYTES))
                .unwrap_or(usize::MAX)
                .min(self.message_bytes),
            instances: usize::try_from(l.instances.unwrap_or(DEFAULT_INSTANCES))
                .unwrap_or(usize::MAX)
                .min(self.instances_per_type),
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    /// For plugins that import something that waits (`send`, `publish`, files): async calls.
    linker: Linker<StoreState>,
    /// For all other plugins: the same definitions with the blocking `wasi:io` functions
    /// replaced by synchronous ones ([`crate::sync_io`]), so their instances are called without
    /// a fiber.
    sync_linker: Linker<StoreState>,
    cache_dir: Option<PathBuf>,
    pooling: bool,
    guard_regions: bool,
    /// The pool's share of the process's guard-region address space, held while the host lives.
    _guard_share: Option<GuardRegionShare>,
    pub(crate) fuel: bool,
    pub(crate) epoch_tick: Duration,
    max_memory: usize,
}

/// The wasm host. Cheap to clone.
#[derive(Clone)]
pub struct WasmHost {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("pooling", &self.inner.pooling)
            .field("guard_regions", &self.inner.guard_regions)
            .field("cache_dir", &self.inner.cache_dir)
            .finish()
    }
}

/// A loaded plugin: a compiled, checked, pre-linked agent type, ready to register.
pub struct LoadedPlugin {
    /// The manifest.
    pub manifest: Manifest,
    /// Where the manifest was read from.
    pub manifest_path: PathBuf,
    /// The component file.
    pub component_path: PathBuf,
    /// The description the component reports for itself.
    pub component_description: String,
    /// The message types the component handles.
    pub handles: Vec<String>,
    /// The component's imports and exports, by name.
    pub imports: Vec<String>,
    /// The component's exports, by name.
    pub exports: Vec<String>,
    /// Whether the compile cache supplied the compiled code.
    pub from_cache: bool,
    pub(crate) shared: Arc<PluginShared>,
}

impl LoadedPlugin {
    /// Whether this plugin was loaded under the tenant that owns `live`.
    pub(crate) fn belongs_to(&self, live: &Arc<std::sync::atomic::AtomicUsize>) -> bool {
        self.shared
            .tenant_live
            .as_ref()
            .is_some_and(|(l, _)| Arc::ptr_eq(l, live))
    }

    /// The limits its agents run with.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Its live agents, in every runtime it is registered with (each holds an instance, or a
    /// slot in a shared one, until its runtime drops it).
    pub fn live_agents(&self) -> usize {
        self.shared.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The message type names its component declared for `handle`: messages of these types
    /// cross the boundary as an index into this table (both ways), others by name.
    pub fn declared_types(&self) -> &[Arc<str>] {
        self.shared.types()
    }

    /// Whether its instances are called synchronously: true when the component imports nothing
    /// that can wait (neither `send` nor `publish`, no files or sockets). Such an instance runs
    /// on the caller's stack instead of a fiber, and keeps no fiber stack while it is live.
    pub fn is_synchronous(&self) -> bool {
        matches!(self.shared.pre, Pre::Sync(_))
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("agent_type", &self.manifest.agent.agent_type)
            .field("component", &self.component_path)
            .field("handles", &self.handles)
            .finish()
    }
}

/// A plugin's pre-linked component: called through fibers (async) when it imports something that
/// waits, as plain calls otherwise.
pub(crate) enum Pre {
    Async(PluginPre<StoreState>),
    Sync(sync_world::PluginPre<StoreState>),
}

/// Whether a component imports a function of `warren:agent/host` that `wanted` picks (or imports
/// that interface as something the host cannot look into, which then counts as yes).
fn imports_host_fn(component: &Component, engine: &Engine, wanted: impl Fn(&str) -> bool) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(import, item)| {
            import.split('@').next() == Some("warren:agent/host")
                && match item.ty {
                    ComponentItem::ComponentInstance(host) => {
                        host.exports(engine).any(|(f, _)| wanted(f))
                    }
                    _ => true,
                }
        })
}

/// Whether a component imports a function that can wait: `send`, `send-to`, `send-to-held` or
/// `publish` (they wait for another agent), or any file or socket operation. Everything else a
/// plugin may import has a synchronous definition on the sync linker.
fn needs_async(component: &Component, engine: &Engine) -> bool {
    imports_host_fn(component, engine, |f| {
        matches!(f, "send" | "send-to" | "send-to-held" | "publish")
    }) || component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:filesystem/") || name.starts_with("wasi:sockets/"))
}

/// What every instance of one plugin shares.
pub(crate) struct PluginShared {
    pub(crate) name: String,
    pub(crate) pre: Pre,
    pub(crate) host: Arc<HostInner>,
    pub(crate) limits: Limits,
    pub(crate) caps: crate::manifest::Capabilities,
    /// The manifest's directory, for a filesystem grant.
    pub(crate) dir: PathBuf,
    /// Live agents of this type, and of the whole tenant (with the tenant's quota).
    pub(crate) live: std::sync::atomic::AtomicUsize,
    pub(crate) tenant_live: Option<(Arc<std::sync::atomic::AtomicUsize>, usize)>,
    /// The type names the component declared (`description.types`, read from the probe
    /// instance): `handle` passes and answers these types as indices into this table.
    pub(crate) types: std::sync::OnceLock<Vec<Arc<str>>>,
    /// Whether the component imports `context`: only then does a call need the message's
    /// context copied into the store (most handlers never ask, and the copy is reference
    /// counts on every delivery).
    pub(crate) asks_context: bool,
}

impl PluginShared {
    /// The declared type table (empty before the probe has described the component).
    pub(crate) fn types(&self) -> &[Arc<str>] {
        self.types.get().map_or(&[], Vec::as_slice)
    }

    /// Counts one more live agent, unless that breaks the per-type or tenant quota.
    pub(crate) fn acquire_instance(&self, agent: &warren_core::AgentId) -> Result<(), Error> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.live.fetch_add(1, SeqCst) >= self.limits.instances {
            self.live.fetch_sub(1, SeqCst);
            return Err(Error::LimitExceeded {
                agent: agent.clone(),
                limit: "instances",
                value: format!(
                    "{} live agents of type `{}`",
                    self.limits.instances, self.name
                ),
            });
        }
        if let Some((count, max)) = &self.tenant_live
            && count.fetch_add(1, SeqCst) >= *max
        {
            count.fetch_sub(1, SeqCst);
            self.live.fetch_sub(1, SeqCst);
            return Err(Error::LimitExceeded {
                agent: agent.clone(),
                limit: "instances",
                value: format!("{max} live agents in this tenant"),
            });
        }
        Ok(())
    }

    /// The epoch deadline for one message, in ticks of the epoch ticker.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.host.epoch_tick.as_nanos().max(1);
        let ticks = self.limits.time.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// Forgets one live agent.
    pub(crate) fn release_instance(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.live.fetch_sub(1, SeqCst);
        if let Some((count, _)) = &self.tenant_live {
            count.fetch_sub(1, SeqCst);
        }
    }
}

impl WasmHost {
    /// A host with default settings.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_config(HostConfig::default())
    }

    /// A host with explicit settings.
    pub fn with_config(config: HostConfig) -> Result<Self, PluginError> {
        // On-demand memories keep wasmtime's default reservation unless told otherwise.
        let on_demand = |config: &HostConfig| {
            let guard_regions = config.memory_checks == MemoryChecks::Auto;
            build_engine(config, false, guard_regions).map(|e| (e, false, guard_regions, None))
        };
        let pooled = |config: &HostConfig| {
            pooled_engine(config).map(|(e, share)| (e, true, share.is_some(), share))
        };
        let (engine, pooling, guard_regions, guard_share) = match config.allocation {
            Allocation::OnDemand => on_demand(&config)?,
            Allocation::Pooling => pooled(&config)?,
            Allocation::Auto => match pooled(&config) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                    on_demand(&config)?
                }
            },
        };
        let linker = build_linker(&engine, false).map_err(engine_err)?;
        let sync_linker = build_linker(&engine, true).map_err(engine_err)?;
        if let Some(dir) = &config.cache_dir
            && let Err(e) = create_private_dir(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "compile cache disabled");
        }
        // One ticker drives every time limit: it advances the engine's epoch, and a guest that
        // runs past its deadline is interrupted at its next epoch check (loop back-edges and
        // function entries), whatever it is doing.
        let weak = engine.weak();
        let tick = config.epoch_tick.max(Duration::from_millis(1));
        std::thread::Builder::new()
            .name("warren-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(engine_err)?;
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                linker,
                sync_linker,
                cache_dir: config.cache_dir,
                pooling,
                guard_regions,
                _guard_share: guard_share,
                fuel: config.fuel,
                epoch_tick: tick,
                max_memory: config.max_memory,
            }),
        })
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Whether guest memory is protected by guard regions (no explicit bounds checks in the
    /// compiled code) rather than by explicit checks; see [`MemoryChecks`].
    pub fn uses_guard_regions(&self) -> bool {
        self.inner.guard_regions
    }

    /// Loads the plugin whose manifest is `manifest_path`, with the component the manifest names.
    pub async fn load(&self, manifest_path: &Path) -> Result<LoadedPlugin, PluginError> {
        let manifest = Manifest::load(manifest_path).map_err(PluginError::Manifest)?;
        let component_path = manifest.component_path(manifest_path);
        self.load_with_component(manifest, manifest_path, &component_path)
            .await
    }

    /// Loads a plugin from a parsed manifest and an explicit component file.
    pub async fn load_with_component(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
        component_path: &Path,
    ) -> Result<LoadedPlugin, PluginError> {
        self.load_under(
            manifest,
            manifest_path,
            component_path,
            &Ceilings::default(),
            None,
        )
        .await
    }

    /// Loads a plugin under a tenant's ceilings and instance quota.
    pub(crate) async fn load_under(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
        component_path: &Path,
        ceilings: &Ceilings,
        tenant_live: Option<(Arc<std::sync::atomic::AtomicUsize>, usize)>,
    ) -> Result<LoadedPlugin, PluginError> {
        let plugin = manifest.agent.agent_type.clone();
        if manifest.limits.fuel.is_some() && !self.inner.fuel {
            return Err(PluginError::Manifest(vec![ManifestError {
                file: manifest_path.to_owned(),
                key: "limits.fuel".into(),
                problem: "this host does not meter fuel".into(),
                fix: "remove `limits.fuel`, or run a host with fuel metering on (HostConfig::fuel)"
                    .into(),
            }]));
        }
        if manifest.capabilities.filesystem.is_some() && !ceilings.allow_filesystem {
            return Err(PluginError::ImportNotGranted {
                plugin,
                import: "wasi:filesystem".into(),
                why: "this tenant may not grant filesystem access".into(),
            });
        }
        let bytes = std::fs::read(component_path).map_err(|source| PluginError::Io {
            plugin: plugin.clone(),
            path: component_path.to_owned(),
            source,
        })?;
        check_component_header(&plugin, component_path, &bytes)?;
        let (component, from_cache) = self.compile(&plugin, &bytes)?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let fs_granted = manifest.capabilities.filesystem.is_some();
        // Every refused import is named at once, so one fix-and-retry is enough.
        let refused: Vec<PluginError> = imports
            .iter()
            .filter_map(|i| check_import(&plugin, i, fs_granted).err())
            .collect();
        if let Some(first) = refused.into_iter().reduce(|a, b| match (a, b) {
            (
                PluginError::ImportNotGranted {
                    plugin,
                    import,
                    why,
                },
                PluginError::ImportNotGranted {
                    import: more,
                    why: why2,
                    ..
                },
            ) => PluginError::ImportNotGranted {
                plugin,
                import: format!("{import}, {more}"),
                why: if why.contains(&why2) {
                    why
                } else {
                    format!("{why}; {why2}")
                },
            },
            (a, _) => a,
        }) {
            return Err(first);
        }
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            plugin: plugin.clone(),
            cause: format!("{e:#}"),
        };
        let pre = if needs_async(&component, engine) {
            let pre = self.inner.linker.instantiate_pre(&component);
            Pre::Async(PluginPre::new(pre.map_err(wrong_world)?).map_err(wrong_world)?)
        } else {
            let pre = self.inner.sync_linker.instantiate_pre(&component);
            Pre::Sync(sync_world::PluginPre::new(pre.map_err(wrong_world)?).map_err(wrong_world)?)
        };
        let shared = Arc::new(PluginShared {
            name: plugin.clone(),
            pre,
            host: self.inner.clone(),
            limits: ceilings.resolve(&manifest, self.inner.max_memory),
            caps: manifest.capabilities.clone(),
            dir: manifest_path.parent().unwrap_or(Path::new(".")).to_owned(),
            live: Default::default(),
            tenant_live,
            types: Default::default(),
            asks_context: imports_host_fn(&component, engine, |f| f == "context"),
        });
        // A probe instance: proves the component starts, and asks what it handles.
        let probe_id = warren_core::AgentId::from_parts(manifest.agent_type(), "warren-probe");
        let described = WasmAgent::probe(&shared, probe_id).await.map_err(|cause| {
            PluginError::Instantiate {
                plugin: plugin.clone(),
                cause,
            }
        })?;
        // Every instance of one component declares the same table: take it from the probe.
        let _ = shared.types.set(
            described
                .types
                .iter()
                .map(|t| Arc::from(t.as_str()))
                .collect(),
        );
        let per_instance = manifest.agents_per_instance();
        if per_instance > 1 {
            let reason = if matches!(shared.pre, Pre::Async(_)) {
                Some(
                    "it imports something that waits (`send`, `publish`, files or sockets): an \
                     agent waiting in a call would hold the instance its neighbours need"
                        .to_owned(),
                )
            } else if !described.multi_agent {
                Some("it does not declare `multi-agent` in its description".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(PluginError::CannotShareInstances {
                    plugin,
                    agents_per_instance: per_instance,
                    reason,
                });
            }
        }
        for t in &manifest.agent.handles {
            if !described.handles.contains(t) {
                return Err(PluginError::MissingHandler {
                    plugin,
                    message_type: t.clone(),
                    handled: described.handles,
                });
            }
        }
        Ok(LoadedPlugin {
            manifest_path: manifest_path.to_owned(),
            component_path: component_path.to_owned(),
            component_description: described.text,
            handles: described.handles,
            imports,
            exports,
            from_cache,
            shared,
            manifest,
        })
    }

    /// Registers a loaded plugin in `runtime` under its manifest's agent type, with its
    /// subscriptions and the `"<type>:"` direct-message subscription.
    pub async fn register(
        &self,
        runtime: &AgentRuntime,
        plugin: &LoadedPlugin,
    ) -> Result<AgentType, PluginError> {
        self.register_as(
            runtime,
            plugin,
            plugin.manifest.agent_type(),
            plugin.manifest.subscriptions(),
        )
        .await
    }

    /// Registers a loaded plugin under another agent type with explicit subscriptions (for
    /// embedders that run one component as several agent types).
    pub async fn register_as(
        &self,
        runtime: &AgentRuntime,
        plugin: &LoadedPlugin,
        agent_type: AgentType,
        subscriptions: Vec<Subscription>,
    ) -> Result<AgentType, PluginError> {
        let err = |source| PluginError::Register {
            plugin: plugin.shared.name.clone(),
            source,
        };
        let shared = plugin.shared.clone();
        let description = if plugin.manifest.agent.description.is_empty() {
            plugin.component_description.clone()
        } else {
            plugin.manifest.agent.description.clone()
        };
        // Agents of this registration share instances when the manifest asks (checked at load);
        // another registration of the same plugin fills instances of its own.
        let per_instance = plugin.manifest.agents_per_instance();
        let shards = (per_instance > 1).then(|| Arc::new(Shards::new(per_instance)));
        let factory: Arc<DynFactory> = Arc::new(move |ctx| {
            let shared = shared.clone();
            let description = description.clone();
            let shards = shards.clone();
            Box::pin(async move {
                let agent = WasmAgent::new(shared, ctx, description, shards.as_deref()).await?;
                Ok(Box::new(agent) as Box<dyn warren_core::Agent>)
            })
        });
        let t = runtime
            .register_factory_dyn(agent_type.as_str(), factory, None)
            .await
            .map_err(err)?;
        if let Some(n) = plugin.manifest.limits.mailbox {
            runtime.set_mailbox_capacity(&t, usize::try_from(n).unwrap_or(usize::MAX));
        }
        for s in subscriptions {
            runtime.add_subscription(s).await.map_err(err)?;
        }
        runtime
            .add_subscription(Subscription::direct_message(t.clone()))
            .await
            .map_err(err)?;
        Ok(t)
    }

    /// Compiles a component, or loads its compiled form from the cache.
    fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<(Component, bool), PluginError> {
        let engine = &self.inner.engine;
        let cached = self.inner.cache_dir.as_ref().map(|dir| {
            let mut h = Sha256::new();
            h.update(bytes);
            let mut eh = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut eh);
            h.update(eh.finish().to_le_bytes());
            let name: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            dir.join(format!("{name}.cwasm"))
        });
        if let Some(path) = &cached
            && path.exists()
        {
            match load_precompiled(engine, path) {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cache entry")
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| PluginError::Compile {
            plugin: plugin.to_owned(),
            cause: format!("{e:#}"),
        })?;
        if let Some(path) = &cached
            && let Err(e) = store_precompiled(&component, path)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write the compile cache");
        }
        Ok((component, false))
    }

    /// A fresh `Store` for one agent instance: an empty WASI context (no environment, arguments,
    /// files or network; stdin closed) with stdout and stderr going to the log.
    pub(crate) fn new_store(
        plugin: &Arc<PluginShared>,
        whom: Whom,
        runtime: warren_core::WeakRuntime,
    ) -> wasmtime::Result<Store<StoreState>> {
        let stdout = LogPipe::new(whom.clone(), crate::logpipe::Stream::Stdout);
        let stderr = LogPipe::new(whom.clone(), crate::logpipe::Stream::Stderr);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(fs) = &plugin.caps.filesystem {
            let perms = if fs.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            };
            wasi.preopened_dir(plugin.dir.join(&fs.host), &fs.guest, perms)?;
        }
        let mut store = Store::new(
            &plugin.host.engine,
            StoreState {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                whom,
                runtime,
                stderr,
                limiter: Limiter {
                    memory: plugin.limits.memory,
                    hit_memory: false,
                },
                plugin: plugin.clone(),
                handling: None,
                last_recipient: None,
                recipients: Default::default(),
                held: Default::default(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(plugin.deadline_ticks());
        if plugin.host.fuel {
            store.set_fuel(plugin.limits.fuel.unwrap_or(u64::MAX))?;
        }
        Ok(store)
    }
}

/// The definitions every plugin is linked against: WASI (with an empty context) and Warren's
/// `host` interface; with `sync`, the blocking `wasi:io` functions are synchronous.
fn build_linker(engine: &Engine, sync: bool) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker: Linker<StoreState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    PluginWorld::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
        &mut linker,
        |s| s,
    )?;
    if sync {
        linker.allow_shadowing(true);
        crate::sync_io::add_sync_io(&mut linker)?;
        linker.allow_shadowing(false);
    }
    Ok(linker)
}

fn engine_err(e: impl std::fmt::Display) -> PluginError {
    PluginError::Engine(e.to_string())
}

/// Address space the pools of one process may reserve for guard regions, all hosts together: half
/// of x86-64's 128 TiB of user address space.
const GUARD_REGION_BUDGET: u64 = 64 << 40;

/// The reservation and guard of one memory with guard regions: wasmtime's defaults on 64-bit
/// hosts, set explicitly so the budget counts what the engine reserves.
const GUARD_REGION_RESERVATION: u64 = 4 << 30;
const GUARD_REGION_GUARD: u64 = 32 << 20;

/// Address space one pooled instance takes with guard regions: two memory slots (see
/// `total_memories`), each a reservation plus its guard.
const GUARD_REGION_PER_INSTANCE: u64 = 2 * (GUARD_REGION_RESERVATION + GUARD_REGION_GUARD);

/// Address space held by pools with guard regions in this process.
static GUARD_REGION_HELD: AtomicU64 = AtomicU64::new(0);

/// One pool's share of [`GUARD_REGION_BUDGET`], given back when its host is dropped.
pub(crate) struct GuardRegionShare(u64);

impl GuardRegionShare {
    /// The share a pool of `instances` slots needs ([`GUARD_REGION_PER_INSTANCE`] each), if the
    /// budget has it. With explicit checks instead, every load and store of a guest carries a
    /// compare, a conditional move, and the memory's base and length loaded again from the
    /// instance's context: 1,200 of the 11,300 instructions of a wasm round trip.
    fn take(instances: u32) -> Option<Self> {
        let need = u64::from(instances).checked_mul(GUARD_REGION_PER_INSTANCE)?;
        GUARD_REGION_HELD
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(need)
                    .filter(|&total| total <= GUARD_REGION_BUDGET)
            })
            .ok()
            .map(|_| Self(need))
    }
}

impl Drop for GuardRegionShare {
    fn drop(&mut self) {
        GUARD_REGION_HELD.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// A pooled engine: with guard regions if the settings ask for them ([`MemoryChecks::Auto`]), the
/// process's budget has room and the pool can be reserved; otherwise with explicit checks.
fn pooled_engine(config: &HostConfig) -> Result<(Engine, Option<GuardRegionShare>), PluginError> {
    if config.memory_checks == MemoryChecks::Auto
        && let Some(share) = GuardRegionShare::take(config.max_instances.max(1))
    {
        match build_engine(config, true, true) {
            Ok(engine) => return Ok((engine, Some(share))),
            // Address space limited by the machine (or `ulimit -v`): smaller reservations.
            Err(e) => {
                tracing::info!(error = %e, "no guard regions for this pool; checking bounds explicitly")
            }
        }
    }
    Ok((build_engine(config, true, false)?, None))
}

/// An engine. With `guard_regions`, memories keep wasmtime's default reservation; without, they
/// reserve only `max_memory`, so many slots fit in the address space, and guests check bounds.
fn build_engine(
    config: &HostConfig,
    pooling: bool,
    guard_regions: bool,
) -> Result<Engine, PluginError> {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(config.fuel);
    if config.perf_map {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if guard_regions {
        c.memory_reservation(GUARD_REGION_RESERVATION);
        c.memory_guard_size(GUARD_REGION_GUARD);
    } else {
        c.memory_reservation(config.max_memory as u64);
        c.memory_guard_size(64 << 10);
    }
    // Either way a memory's reservation covers everything the instance may grow to (the store's
    // limiter refuses growth past `max_memory`), so its base never moves: compiled guests may
    // load it once per function instead of again after every call.
    c.memory_may_move(false);
    if pooling {
        let n = config.max_instances.max(1);
        let mut p = PoolingAllocationConfig::default();
        // A Rust wasip2 component has a handful of core instances (the program plus adapter
        // shims), each with at most one memory and one table.
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            // Every live async store pins one fiber stack.
            .total_stacks(n)
            .max_memory_size(config.max_memory)
            // Reset pages a slot keeps resident instead of returning them to the kernel: reusing a
            // fiber stack or a memory slot then costs no page faults.
            .async_stack_keep_resident(64 << 10)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    let engine = Engine::new(&c).map_err(engine_err)?;
    if pooling {
        // The pool reserves its address space when the first store is made; prove it works now,
        // so the caller can fall back instead of failing on the first instance.
        let probe: Store<()> = Store::new(&engine, ());
        drop(probe);
    }
    Ok(engine)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn store_precompiled(component: &Component, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be wasmtime's own compiled output. Files in
    // the cache directory are written only by `store_precompiled` (atomically, via rename), the
    // directory is created private to this user, and the name is the SHA-256 of the component
    // bytes plus the engine's compatibility hash, so a file compiled by another engine
    // configuration is never picked up. wasmtime additionally checks the header and version.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Tells a component from a core module or a file that is not wasm at all.
fn check_component_header(plugin: &str, path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let reason = if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        Some("not a WebAssembly file (no `\\0asm` header)".to_owned())
    } else if bytes[4..8] == [1, 0, 0, 0] {
        Some("a core WebAssembly module, not a component: build it with `--target wasm32-wasip2` (or `warren build`)".to_owned())
    } else if bytes[6..8] != [1, 0] {
        Some(format!("unknown WebAssembly layer {:?}", &bytes[4..8]))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PluginError::NotAComponent {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_import(plugin: &str, import: &str, filesystem: bool) -> Result<(), PluginError> {
    let name = import.split('@').next().unwrap_or(import);
    if GRANTED.contains(&name) || (filesystem && name.starts_with("wasi:filesystem/")) {
        return Ok(());
    }
    let why = if name.starts_with("wasi:filesystem/") {
        "Warren grants no filesystem access to plugins"
    } else if name.starts_with("wasi:sockets/") {
        "Warren grants no network access to plugins"
    } else {
        "the host does not provide this interface"
    };
    Err(PluginError::ImportNotGranted {
        plugin: plugin.to_owned(),
        import: import.to_owned(),
        why: why.to_owned(),
    })
}

/// How long a probe instance may take to start and describe itself.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_share_the_guard_region_budget_and_give_it_back() {
        // No other test of this binary makes a host in this process (the fallback test below makes
        // one in a child process), so the budget is this test's alone.
        let config = |instances| HostConfig {
            max_instances: instances,
            cache_dir: None,
            allocation: Allocation::Pooling,
            ..HostConfig::default()
        };
        // Just over half the budget each: two such pools cannot both have guard regions.
        let half = u32::try_from(GUARD_REGION_BUDGET / GUARD_REGION_PER_INSTANCE / 2 + 1).unwrap();
        let a = WasmHost::with_config(config(half)).unwrap();
        assert!(a.is_pooling() && a.uses_guard_regions());
        let b = WasmHost::with_config(config(half)).unwrap();
        assert!(
            b.is_pooling() && !b.uses_guard_regions(),
            "over the budget: explicit checks"
        );
        drop(a);
        let c = WasmHost::with_config(config(half)).unwrap();
        assert!(
            c.uses_guard_regions(),
            "a dropped host gives its share back"
        );
        let explicit = WasmHost::with_config(HostConfig {
            memory_checks: MemoryChecks::Explicit,
            ..config(16)
        })
        .unwrap();
        assert!(!explicit.uses_guard_regions());
        drop((b, c, explicit));
        assert_eq!(GUARD_REGION_HELD.load(Ordering::SeqCst), 0);
    }

    /// The address-space limit the fallback test's child runs under: room for a pool with
    /// explicit checks (8 instances of at most 256 MiB, two memories each: 4 GiB), not for one
    /// with guard regions (8 × 8 GiB).
    const CHILD_ADDRESS_SPACE_KIB: u64 = 12 << 20;
    const FALLBACK_CHILD: &str =
        "host::tests::guard_regions_fall_back_under_an_address_space_limit";

    #[test]
    fn a_pool_without_room_for_guard_regions_checks_bounds_explicitly() {
        // The limit must not apply to this process (its other tests reserve guard regions), so
        // the check runs in a child: this test binary again, running only the ignored test below
        // under `ulimit -v`.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {CHILD_ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
            ))
            .arg(exe)
            .args([FALLBACK_CHILD, "--exact", "--ignored", "--nocapture"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child test did not pass:\n{stdout}\n{stderr}"
        );
    }

    #[test]
    #[ignore = "run by a_pool_without_room_for_guard_regions_checks_bounds_explicitly, in a child under an address-space limit"]
    fn guard_regions_fall_back_under_an_address_space_limit() {
        // Proves the limit is in force, so the fallback below is the machine's doing.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .unwrap();
        // "Max address space  <soft> <hard> bytes"; "unlimited" parses as none.
        let soft = line
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(
            soft,
            Some(CHILD_ADDRESS_SPACE_KIB << 10),
            "this test runs only under `ulimit -v {CHILD_ADDRESS_SPACE_KIB}`, as \
             a_pool_without_room_for_guard_regions_checks_bounds_explicitly starts it; here: {line}"
        );
        let instances = 8;
        // Within the process's budget: only the machine's limit stands in the way.
        assert!(u64::from(instances) * GUARD_REGION_PER_INSTANCE <= GUARD_REGION_BUDGET);
        assert!(u64::from(instances) * GUARD_REGION_PER_INSTANCE > CHILD_ADDRESS_SPACE_KIB << 10);
        let host = WasmHost::with_config(HostConfig {
            max_instances: instances,
            cache_dir: None,
            allocation: Allocation::Pooling,
            ..HostConfig::default()
        })
        .unwrap();
        assert!(host.is_pooling(), "still pooled");
        assert!(!host.uses_guard_regions(), "explicit checks instead");
        assert_eq!(
            GUARD_REGION_HELD.load(Ordering::SeqCst),
            0,
            "the pool that could not be reserved gave its budget share back"
        );
        // The fallback pool really makes stores (the probe store at its creation did too).
        let store: Store<()> = Store::new(&host.inner.engine, ());
        drop(store);
    }

    #[test]
    fn headers_tell_modules_and_junk_from_components() {
        let p = Path::new("x.wasm");
        let junk = check_component_header("x", p, b"hello world").unwrap_err();
        assert!(
            junk.to_string().contains("not a WebAssembly file"),
            "{junk}"
        );
        let module = check_component_header("x", p, b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            module.to_string().contains("core WebAssembly module"),
            "{module}"
        );
        check_component_header("x", p, b"\0asm\x0d\0\x01\0").unwrap();
    }

    #[test]
    fn imports_outside_the_grant_are_named() {
        check_import("x", "wasi:cli/environment@0.2.6", false).unwrap();
        check_import("x", "wasi:filesystem/types@0.2.6", true).unwrap();
        let e = check_import("x", "wasi:filesystem/types@0.2.6", false).unwrap_err();
        assert!(e.to_string().contains("wasi:filesystem/types@0.2.6"), "{e}");
        assert!(e.to_string().contains("no filesystem"), "{e}");
        let e = check_import("x", "wasi:http/outgoing-handler@0.2.6", true).unwrap_err();
        assert!(e.to_string().contains("does not provide"), "{e}");
    }
}
