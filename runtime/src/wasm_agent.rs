//! [`WasmAgent`]: one live agent backed by one component instance in its own `Store`.
//!
//! The runtime calls it one message at a time (it is an ordinary [`Agent`]), so the store is never
//! entered twice. Before each call the per-message limits are armed (a fresh time deadline and fuel
//! budget). A trap, or a call whose future was dropped half-way, leaves the instance unusable
//! (wasmtime will not re-enter it): the instance is discarded, the caller gets a typed error (the
//! breached limit, or [`Error::Trapped`] naming the agent and the trap), and the next message
//! builds a fresh instance and restores the last state that was saved or loaded.
//!
//! An instance of a plugin that imports nothing that waits is called synchronously (a plain call
//! on the runtime's thread; see `host::Pre`); the others are awaited on a fiber, so a guest blocked
//! in `send` suspends only itself. The time limit bounds both: an epoch deadline traps the guest.

use std::sync::Arc;

use async_trait::async_trait;
use warren_core::{
    Agent, AgentContext, AgentId, AgentState, BoxError, Error, Message, MessageContext, Target,
    WeakRuntime,
};
use wasmtime::Store;

use crate::bindings::{self, Description, Plugin, sync_world};
use crate::host::{PROBE_TIMEOUT, PluginShared, Pre, StoreState, WasmHost};

/// An instance's exports, called through a fiber or directly (see [`Pre`]).
enum World {
    Async(Plugin),
    Sync(sync_world::Plugin),
}

struct Live {
    store: Store<StoreState>,
    world: World,
    /// Set while a guest call is in flight; still set on entry means the last call was cut off.
    in_call: bool,
}

/// Calls export `$call` of the instance in `$live`, awaiting it on a fiber or calling it in place.
macro_rules! call {
    ($live:expr, $call:ident $(, $arg:expr)*) => {{
        let live: &mut Live = $live;
        match &live.world {
            World::Async(w) => Box::pin(w.warren_agent_agent().$call(&mut live.store $(, $arg)*)).await,
            World::Sync(w) => w.warren_agent_agent().$call(&mut live.store $(, $arg)*),
        }
    }};
}

impl Live {
    /// Arms the per-message limits before a guest call: a fresh time deadline and fuel budget.
    fn arm(&mut self, shared: &PluginShared) {
        self.store.set_epoch_deadline(shared.deadline_ticks());
        if shared.host.fuel {
            let _ = self.store.set_fuel(shared.limits.fuel.unwrap_or(u64::MAX));
        }
        self.in_call = true;
    }
}

pub(crate) struct WasmAgent {
    shared: Arc<PluginShared>,
    id: AgentId,
    runtime: WeakRuntime,
    description: String,
    live: Option<Live>,
    /// The last state saved or loaded, restored into a fresh instance after a trap.
    last_state: Option<AgentState>,
}

async fn instantiate(
    shared: &Arc<PluginShared>,
    id: AgentId,
    runtime: WeakRuntime,
) -> wasmtime::Result<Live> {
    let mut store = WasmHost::new_store(shared, id, runtime)?;
    let world = match &shared.pre {
        Pre::Async(pre) => World::Async(pre.instantiate_async(&mut store).await?),
        Pre::Sync(pre) => World::Sync(pre.instantiate(&mut store)?),
    };
    Ok(Live {
        store,
        world,
        in_call: false,
    })
}

/// A trap as one line, plus what the guest last wrote to stderr (a Rust panic message).
fn describe_trap(e: &wasmtime::Error, live: &Live) -> String {
    let what = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.to_string(),
    };
    let tail = live.store.data().stderr.tail();
    if tail.is_empty() {
        what
    } else {
        format!("{what}; guest stderr: {tail}")
    }
}

impl WasmAgent {
    pub(crate) async fn new(
        shared: Arc<PluginShared>,
        ctx: AgentContext,
        description: String,
    ) -> Result<Self, BoxError> {
        let id = ctx.id().clone();
        let runtime = ctx
            .runtime()
            .map(|r| r.downgrade())
            .unwrap_or_else(WeakRuntime::detached);
        shared.acquire_instance(&id)?;
        let live = match instantiate(&shared, id.clone(), runtime.clone()).await {
            Ok(l) => l,
            Err(e) => {
                shared.release_instance();
                return Err(format!("instantiating plugin `{}`: {e:#}", shared.name).into());
            }
        };
        Ok(Self {
            shared,
            id,
            runtime,
            description,
            live: Some(live),
            last_state: None,
        })
    }

    /// Starts a throwaway instance and asks it to describe itself (load-time check).
    pub(crate) async fn probe(
        shared: &Arc<PluginShared>,
        id: AgentId,
    ) -> Result<Description, String> {
        let work = async {
            let mut live = instantiate(shared, id, WeakRuntime::detached())
                .await
                .map_err(|e| format!("{e:#}"))?;
            live.arm(shared);
            let r = match &live.world {
                World::Async(w) => w.warren_agent_agent().call_describe(&mut live.store).await,
                World::Sync(w) => w
                    .warren_agent_agent()
                    .call_describe(&mut live.store)
                    .map(|d| Description {
                        text: d.text,
                        handles: d.handles,
                        types: d.types,
                    }),
            };
            r.map_err(|e| describe_trap(&e, &live))
        };
        tokio::time::timeout(PROBE_TIMEOUT, work)
            .await
            .map_err(|_| format!("did not describe itself within {PROBE_TIMEOUT:?}"))?
    }

    /// The live instance, rebuilt (and its last state restored) if it was discarded.
    async fn live(&mut self) -> Result<&mut Live, Error> {
        if self.live.as_ref().is_some_and(|l| l.in_call) {
            tracing::warn!(agent = %self.id, "discarding an instance whose last call was cut off");
            self.live = None;
        }
        if self.live.is_none() {
            // Boxed: a new instance is rare (once per agent, and after a trap), and the state of
            // instantiating would otherwise make every call's future kilobytes larger (and
            // every call copy them into place).
            Box::pin(self.revive()).await?;
        }
        Ok(self.live.as_mut().expect("just ensured"))
    }

    /// Instantiates the component afresh, restoring the last saved or loaded state.
    async fn revive(&mut self) -> Result<(), Error> {
        {
            let mut live = instantiate(&self.shared, self.id.clone(), self.runtime.clone())
                .await
                .map_err(|e| Error::Trapped {
                    agent: self.id.clone(),
                    trap: format!("re-instantiation failed: {e:#}"),
                })?;
            if let Some(state) = &self.last_state {
                live.arm(&self.shared);
                let r = call!(&mut live, call_load_state, state.json());
                live.in_call = false;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(msg)) => {
                        return Err(Error::StateFailed {
                            agent: self.id.clone(),
                            op: "restore",
                            source: msg.into(),
                        });
                    }
                    Err(e) => {
                        return Err(Error::Trapped {
                            agent: self.id.clone(),
                            trap: describe_trap(&e, &live),
                        });
                    }
                }
            }
            tracing::info!(agent = %self.id, restored = self.last_state.is_some(), "fresh instance");
            self.live = Some(live);
        }
        Ok(())
    }

    /// Discards the instance after a trap and reports it: a breached limit as that limit, any
    /// other trap as [`Error::Trapped`].
    fn trapped(&mut self, e: &wasmtime::Error) -> Error {
        let agent = self.id.clone();
        let limits = &self.shared.limits;
        let hit_memory = self
            .live
            .as_ref()
            .is_some_and(|l| l.store.data().limiter.hit_memory);
        let error = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Error::DeadlineExceeded {
                agent,
                limit: limits.time,
            },
            Some(wasmtime::Trap::OutOfFuel) => Error::LimitExceeded {
                agent,
                limit: "fuel",
                value: format!("{} fuel per message", limits.fuel.unwrap_or(u64::MAX)),
            },
            _ if hit_memory => Error::LimitExceeded {
                agent,
                limit: "memory",
                value: format!("{} MiB per instance", limits.memory >> 20),
            },
            _ => Error::Trapped {
                agent,
                trap: match &self.live {
                    Some(live) => describe_trap(e, live),
                    None => e.to_string(),
                },
            },
        };
        tracing::warn!(agent = %self.id, error = %error, "instance discarded");
        self.live = None;
        error
    }

    fn check_size(&self, size: usize) -> Result<(), Error> {
        let limit = self.shared.limits.message_bytes;
        if size > limit {
            return Err(Error::MessageTooLarge {
                target: Target::Agent(self.id.clone()),
                size,
                limit,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Agent for WasmAgent {
    async fn on_message(
        &mut self,
        message: Message,
        ctx: &MessageContext,
    ) -> Result<Message, Error> {
        let shared = self.shared.clone();
        let (message, type_name) = bindings::encoding(|buf| {
            let encoded = ctx.runtime().encode(&message, buf)?;
            self.check_size(encoded.data.len())?;
            Ok::<_, Error>(bindings::to_wit_message(encoded, shared.types()))
        })?;
        let live = self.live().await?;
        live.arm(&shared);
        live.store.data_mut().handling = Some(ctx.into());
        let r = call!(live, call_handle, ctx.is_rpc, &message);
        live.store.data_mut().handling = None;
        live.in_call = false;
        match r {
            Ok(Ok(Some(m))) => {
                // A response is a message too: its caller gets the limit error, not the bytes.
                self.check_size(m.data.len())?;
                bindings::from_wit_message(m, shared.types())
                    .map_err(|e| bindings::from_wit_error(&self.id, type_name.into_owned(), e))
            }
            Ok(Ok(None)) => Ok(Message::empty()),
            Ok(Err(e)) => Err(bindings::from_wit_error(
                &self.id,
                type_name.into_owned(),
                e,
            )),
            Err(e) => Err(self.trapped(&e)),
        }
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    async fn save_state(&mut self) -> Result<AgentState, BoxError> {
        let shared = self.shared.clone();
        let live = self.live().await?;
        live.arm(&shared);
        let r = call!(live, call_save_state);
        live.in_call = false;
        let text = match r {
            Ok(Ok(text)) => text,
            Ok(Err(msg)) => return Err(msg.into()),
            Err(e) => return Err(Box::new(self.trapped(&e))),
        };
        // Checked once here (the runtime's documents embed it as it is), not parsed into a tree.
        let state = AgentState::from_json(text).map_err(|e| {
            format!(
                "plugin `{}` saved state that is not JSON: {e}",
                self.shared.name
            )
        })?;
        self.last_state = Some(state.clone());
        Ok(state)
    }

    async fn load_state(&mut self, state: AgentState) -> Result<(), BoxError> {
        let shared = self.shared.clone();
        let live = self.live().await?;
        live.arm(&shared);
        let r = call!(live, call_load_state, state.json());
        live.in_call = false;
        match r {
            Ok(Ok(())) => {
                self.last_state = Some(state);
                Ok(())
            }
            Ok(Err(msg)) => Err(msg.into()),
            Err(e) => Err(Box::new(self.trapped(&e))),
        }
    }

    fn underlying_type_name(&self) -> &'static str {
        "warren_runtime::WasmAgent"
    }
}

impl Drop for WasmAgent {
    fn drop(&mut self) {
        self.shared.release_instance();
    }
}
