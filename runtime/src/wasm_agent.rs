//! [`WasmAgent`]: one live agent backed by one component instance in its own `Store`.
//!
//! The runtime calls it one message at a time (it is an ordinary [`Agent`]), so the store is never
//! entered twice. A trap, or a call whose future was dropped half-way, leaves the instance
//! unusable (wasmtime will not re-enter it): the instance is discarded, the caller gets
//! [`Error::Trapped`] naming the agent and the trap, and the next message builds a fresh instance
//! and restores the last state that was saved or loaded.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use warren_core::{
    Agent, AgentContext, AgentId, BoxError, Error, Message, MessageContext, WeakRuntime,
};
use wasmtime::Store;

use crate::bindings::{self, Description, Plugin};
use crate::host::{PROBE_TIMEOUT, PluginShared, StoreState, WasmHost};

struct Live {
    store: Store<StoreState>,
    world: Plugin,
    /// Set while a guest call is in flight; still set on entry means the last call was cut off.
    in_call: bool,
}

pub(crate) struct WasmAgent {
    shared: Arc<PluginShared>,
    id: AgentId,
    runtime: WeakRuntime,
    description: String,
    live: Option<Live>,
    /// The last state saved or loaded, restored into a fresh instance after a trap.
    last_state: Option<String>,
}

async fn instantiate(
    shared: &PluginShared,
    id: AgentId,
    runtime: WeakRuntime,
) -> wasmtime::Result<Live> {
    let mut store = WasmHost::new_store(&shared.host, id, runtime);
    let world = shared.pre.instantiate_async(&mut store).await?;
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
        let live = instantiate(&shared, id.clone(), runtime.clone())
            .await
            .map_err(|e| format!("instantiating plugin `{}`: {e:#}", shared.name))?;
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
            let r = live
                .world
                .warren_agent_agent()
                .call_describe(&mut live.store)
                .await;
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
            let mut live = instantiate(&self.shared, self.id.clone(), self.runtime.clone())
                .await
                .map_err(|e| Error::Trapped {
                    agent: self.id.clone(),
                    trap: format!("re-instantiation failed: {e:#}"),
                })?;
            if let Some(state) = &self.last_state {
                let r = live
                    .world
                    .warren_agent_agent()
                    .call_load_state(&mut live.store, state)
                    .await;
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
        Ok(self.live.as_mut().expect("just ensured"))
    }

    /// Discards the instance after a trap and reports it.
    fn trapped(&mut self, e: &wasmtime::Error) -> Error {
        let trap = match &self.live {
            Some(live) => describe_trap(e, live),
            None => e.to_string(),
        };
        tracing::warn!(agent = %self.id, %trap, "instance trapped; discarded");
        self.live = None;
        Error::Trapped {
            agent: self.id.clone(),
            trap,
        }
    }
}

#[async_trait]
impl Agent for WasmAgent {
    async fn on_message(
        &mut self,
        message: Message,
        ctx: &MessageContext,
    ) -> Result<Message, Error> {
        let payload: bindings::wit::Payload = ctx.runtime().serialize(&message)?.into();
        let message_type = payload.type_name.clone();
        let wctx = bindings::context(ctx);
        let live = self.live().await?;
        live.in_call = true;
        let r = live
            .world
            .warren_agent_agent()
            .call_handle(&mut live.store, &wctx, &payload)
            .await;
        live.in_call = false;
        match r {
            Ok(Ok(Some(p))) => Ok(Message::from_payload(p.into())),
            Ok(Ok(None)) => Ok(Message::empty()),
            Ok(Err(e)) => Err(bindings::from_wit_error(&self.id, message_type, e)),
            Err(e) => Err(self.trapped(&e)),
        }
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    async fn save_state(&mut self) -> Result<Value, BoxError> {
        let live = self.live().await?;
        live.in_call = true;
        let r = live
            .world
            .warren_agent_agent()
            .call_save_state(&mut live.store)
            .await;
        live.in_call = false;
        let text = match r {
            Ok(Ok(text)) => text,
            Ok(Err(msg)) => return Err(msg.into()),
            Err(e) => return Err(Box::new(self.trapped(&e))),
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "plugin `{}` saved state that is not JSON: {e}",
                self.shared.name
            )
        })?;
        self.last_state = Some(text);
        Ok(value)
    }

    async fn load_state(&mut self, state: Value) -> Result<(), BoxError> {
        let text = state.to_string();
        let live = self.live().await?;
        live.in_call = true;
        let r = live
            .world
            .warren_agent_agent()
            .call_load_state(&mut live.store, &text)
            .await;
        live.in_call = false;
        match r {
            Ok(Ok(())) => {
                self.last_state = Some(text);
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
