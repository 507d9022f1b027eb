//! [`WasmAgent`]: one live agent backed by a component instance in its own `Store`: an instance
//! of its own, or a slot in an instance it shares with other agents of its type
//! (`agents_per_instance`, see [`Shard`]).
//!
//! The runtime calls it one message at a time (it is an ordinary [`Agent`]), and a shared
//! instance is locked for each call, so a store is never entered twice. Before each call the
//! per-message limits are armed (a fresh time deadline and fuel budget). A trap, or a call whose
//! future was dropped half-way, leaves the instance unusable (wasmtime will not re-enter it): the
//! instance is discarded, the caller gets a typed error (the breached limit, or
//! [`Error::Trapped`] naming the agent and the trap), and the next message builds a fresh
//! instance and restores the last state that was saved or loaded. Every instance has a
//! generation; an agent whose state was placed in an older generation than the instance's (every
//! other agent of a shared instance, after a trap) gets its last state restored before its next
//! call.
//!
//! An instance of a plugin that imports nothing that waits is called synchronously (a plain call
//! on the runtime's thread; see `host::Pre`); the others are awaited on a fiber, so a guest blocked
//! in `send` suspends only itself. The time limit bounds both: an epoch deadline traps the guest.
//! Once such an instance is live and holds the agent's current state, its calls are made in place
//! when the runtime offers a message (`Agent::on_message_now`), with no future, boxing or frame;
//! building an instance, restoring a state and a busy shared instance take the awaited path.

use std::sync::Arc;

use async_trait::async_trait;
use warren_core::{
    Agent, AgentContext, AgentId, AgentState, BoxError, Error, Message, MessageContext, Target,
    WeakRuntime,
};
use wasmtime::Store;

use crate::bindings::{self, Description, Plugin, sync_world};
use crate::host::{PROBE_TIMEOUT, PluginShared, Pre, StoreState, WasmHost};
use crate::roster::{Roster, Whom};

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
/// The awaited call (wasmtime's future, about 400 bytes) is boxed, so that it does not enlarge the
/// future of every caller; `unboxed` awaits it where it is, for a caller whose future is boxed
/// anyway and runs once per message (`on_message`: a second allocation per message cost more than
/// the bytes it saved, 1% of a wasm chain's instructions).
macro_rules! call {
    (@ $wrap:path, $live:expr, $call:ident $(, $arg:expr)*) => {{
        let live: &mut Live = $live;
        match &live.world {
            World::Async(w) => $wrap(w.warren_agent_agent().$call(&mut live.store $(, $arg)*)).await,
            World::Sync(w) => w.warren_agent_agent().$call(&mut live.store $(, $arg)*),
        }
    }};
    (unboxed $live:expr, $call:ident $(, $arg:expr)*) => {
        call!(@ std::convert::identity, $live, $call $(, $arg)*)
    };
    ($live:expr, $call:ident $(, $arg:expr)*) => {
        call!(@ Box::pin, $live, $call $(, $arg)*)
    };
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

/// What a `handle` call returned.
type Handled = wasmtime::Result<Result<Option<bindings::wit::Answer>, bindings::wit::Error>>;

/// Ends a `handle` call begun with `Me::before_call`. The responses the guest held during the
/// call are released; the one it answered with, if it did, is returned.
fn after_call(live: &mut Live, asks_context: bool, handled: &Handled) -> Option<Message> {
    let data = live.store.data_mut();
    if asks_context {
        data.handling = None;
    }
    let answered = match handled {
        Ok(Ok(Some(bindings::wit::Answer::Held(h)))) => data.held.take(*h),
        _ => None,
    };
    data.held.clear();
    live.in_call = false;
    answered
}

/// An instance slot: the live instance (none until built, or after it was discarded) and how
/// many instances this slot has had, so an agent can tell its state was lost with an old one.
#[derive(Default)]
pub(crate) struct Instance {
    live: Option<Live>,
    generation: u64,
    /// A shared instance's agents by slot, and which one it runs as (its `self-id` and log tag).
    roster: Option<Arc<Roster>>,
}

impl Instance {
    /// Makes a shared instance run as the agent in `slot`.
    fn place(&self, slot: u32) {
        if let Some(roster) = &self.roster {
            roster.run(slot);
        }
    }

    /// Who a new live instance runs as: `id`, or a shared instance's agent running.
    fn whom(&self, id: &AgentId) -> Whom {
        match &self.roster {
            Some(roster) => Whom::Shared(roster.clone()),
            None => Whom::One(id.clone()),
        }
    }
}

/// An instance shared by several agents of one type (up to `agents_per_instance`), each in its
/// own slot (the `agent` argument of the component's exports). Only plugins whose calls never
/// wait share instances, so the lock is held for one synchronous call at a time and never while
/// an agent waits for another.
pub(crate) struct Shard {
    /// Its agents, by slot (shared with the instance, whichever agent builds it).
    roster: Arc<Roster>,
    /// An async mutex that is two atomic operations when nobody else holds it. (tokio's costs a
    /// semaphore acquire and release, 300 instructions per call more, and counts against the
    /// cooperative budget: rpc_concurrent's 100 agents in one instance made the runtime's task
    /// yield every 128 messages and ran at 80k/s instead of 550k/s.)
    instance: futures_util::lock::Mutex<Instance>,
}

/// Where one registered agent type places its agents when they share instances: the instance
/// being filled (its roster's length is its next free slot).
pub(crate) struct Shards {
    per_instance: u32,
    /// The instance being filled.
    open: parking_lot::Mutex<Option<Arc<Shard>>>,
}

impl Shards {
    pub(crate) fn new(per_instance: u32) -> Self {
        Self {
            per_instance: per_instance.max(1),
            open: parking_lot::Mutex::new(None),
        }
    }

    /// A slot for agent `id`: the next one of the instance being filled, or the first of a new
    /// instance (built by the agent that gets it). Slots are not reused.
    fn place(&self, id: &AgentId) -> (Arc<Shard>, u32) {
        let mut open = self.open.lock();
        let shard = match open.as_ref() {
            Some(shard) if shard.roster.len() < self.per_instance as usize => shard.clone(),
            _ => {
                let roster = Arc::new(Roster::default());
                let shard = Arc::new(Shard {
                    instance: futures_util::lock::Mutex::new(Instance {
                        roster: Some(roster.clone()),
                        ..Instance::default()
                    }),
                    roster,
                });
                *open = Some(shard.clone());
                shard
            }
        };
        let slot = shard.roster.join(id.clone());
        (shard, slot)
    }
}

/// Where an agent's state lives.
enum Home {
    /// An instance of its own.
    Own(Instance),
    /// Slot `slot` of a shared instance.
    Shared { shard: Arc<Shard>, slot: u32 },
}

/// `(&mut Instance, slot)` of `$home` for one call: its own instance, or the shared one locked
/// (the guard lives in `$guard`, declared by the caller, until the end of its scope).
macro_rules! instance {
    ($home:expr, $guard:ident) => {
        match &mut $home {
            Home::Own(i) => (i, 0),
            Home::Shared { shard, slot } => {
                $guard = shard.instance.lock().await;
                (&mut *$guard, *slot)
            }
        }
    };
}

pub(crate) struct WasmAgent {
    me: Me,
    home: Home,
}

/// Everything of an agent but its instance (borrowed apart from it during a call).
struct Me {
    shared: Arc<PluginShared>,
    id: AgentId,
    runtime: WeakRuntime,
    description: String,
    /// The generation of the instance this agent's state was last placed in.
    generation: u64,
    /// The last state saved or loaded, restored into a fresh instance after a trap.
    last_state: Option<AgentState>,
}

async fn instantiate(
    shared: &Arc<PluginShared>,
    whom: Whom,
    runtime: WeakRuntime,
) -> wasmtime::Result<Live> {
    let mut store = WasmHost::new_store(shared, whom, runtime)?;
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
    /// A new agent: an instance of its own, or (with `shards`) the next slot of a shared one.
    /// The instance is built now if it does not exist yet, so a component that cannot start
    /// fails the agent's creation.
    pub(crate) async fn new(
        shared: Arc<PluginShared>,
        ctx: AgentContext,
        description: String,
        shards: Option<&Shards>,
    ) -> Result<Self, BoxError> {
        let id = ctx.id().clone();
        let runtime = ctx
            .runtime()
            .map(|r| r.downgrade())
            .unwrap_or_else(WeakRuntime::detached);
        shared.acquire_instance(&id)?;
        let home = match shards {
            None => Home::Own(Instance::default()),
            Some(s) => {
                let (shard, slot) = s.place(&id);
                Home::Shared { shard, slot }
            }
        };
        // From here on, dropping the agent gives its count back.
        let mut agent = Self {
            me: Me {
                shared,
                id,
                runtime,
                description,
                generation: 0,
                last_state: None,
            },
            home,
        };
        {
            let mut guard;
            let (inst, slot) = instance!(agent.home, guard);
            if let Err(e) = agent.me.ready(inst, slot).await {
                let name = &agent.me.shared.name;
                return Err(format!("instantiating plugin `{name}`: {e}").into());
            }
        }
        Ok(agent)
    }

    /// Starts a throwaway instance and asks it to describe itself (load-time check).
    pub(crate) async fn probe(
        shared: &Arc<PluginShared>,
        id: AgentId,
    ) -> Result<Description, String> {
        let work = async {
            let mut live = instantiate(shared, Whom::One(id), WeakRuntime::detached())
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
                        multi_agent: d.multi_agent,
                    }),
            };
            r.map_err(|e| describe_trap(&e, &live))
        };
        tokio::time::timeout(PROBE_TIMEOUT, work)
            .await
            .map_err(|_| format!("did not describe itself within {PROBE_TIMEOUT:?}"))?
    }
}

impl Me {
    /// The instance, ready for a call of this agent: built if there is none (or its last call
    /// was cut off), running as this agent, and holding this agent's state (its last saved or
    /// loaded state restored into slot `slot` if the instance is newer than what it holds).
    async fn ready<'i>(
        &mut self,
        inst: &'i mut Instance,
        slot: u32,
    ) -> Result<&'i mut Live, Error> {
        if inst.live.as_ref().is_some_and(|l| l.in_call) {
            tracing::warn!(agent = %self.id, "discarding an instance whose last call was cut off");
            inst.live = None;
        }
        if inst.live.is_none() {
            // Boxed: a new instance is rare (once per agent or shared instance, and after a
            // trap), and the state of instantiating would otherwise make every call's future
            // kilobytes larger (and every call copy them into place).
            let live = Box::pin(instantiate(
                &self.shared,
                inst.whom(&self.id),
                self.runtime.clone(),
            ))
            .await
            .map_err(|e| Error::Trapped {
                agent: self.id.clone(),
                trap: format!("instantiation failed: {e:#}"),
            })?;
            inst.live = Some(live);
            inst.generation += 1;
            if inst.generation > 1 {
                tracing::info!(agent = %self.id, generation = inst.generation, "fresh instance");
            }
        }
        inst.place(slot);
        let live = inst.live.as_mut().expect("just ensured");
        if self.generation != inst.generation {
            if let Some(state) = &self.last_state {
                live.arm(&self.shared);
                let r = call!(live, call_load_state, slot, state.json());
                live.in_call = false;
                match r {
                    Ok(Ok(())) => {
                        tracing::info!(agent = %self.id, "last state restored");
                    }
                    // The instance is kept (other agents may share it); the next call retries.
                    Ok(Err(msg)) => {
                        return Err(Error::StateFailed {
                            agent: self.id.clone(),
                            op: "restore",
                            source: msg.into(),
                        });
                    }
                    Err(e) => return Err(self.trapped(inst, &e)),
                }
            }
            self.generation = inst.generation;
        }
        Ok(inst.live.as_mut().expect("just ensured"))
    }

    /// Discards the instance after a trap and reports it: a breached limit as that limit, any
    /// other trap as [`Error::Trapped`].
    fn trapped(&self, inst: &mut Instance, e: &wasmtime::Error) -> Error {
        let agent = self.id.clone();
        let limits = &self.shared.limits;
        let hit_memory = inst
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
                trap: match &inst.live {
                    Some(live) => describe_trap(e, live),
                    None => e.to_string(),
                },
            },
        };
        tracing::warn!(agent = %self.id, error = %error, "instance discarded");
        inst.live = None;
        error
    }

    /// `message` as the guest receives it, within the plugin's size limit.
    fn to_guest(
        &self,
        message: &Message,
        ctx: &MessageContext,
    ) -> Result<bindings::wit::Message, Error> {
        bindings::encoding(|buf| {
            let encoded = ctx.encode(message, buf)?;
            self.check_size(encoded.data.len())?;
            Ok(bindings::to_wit_message(encoded, self.shared.types()))
        })
    }

    /// Arms the instance's limits and, if the guest asks for it, gives it the message's context;
    /// returns whether it did (see [`after_call`]).
    fn before_call(&self, live: &mut Live, ctx: &MessageContext) -> bool {
        live.arm(&self.shared);
        let asks_context = self.shared.asks_context;
        if asks_context {
            live.store.data_mut().handling = Some(ctx.into());
        }
        asks_context
    }

    /// The handler's answer to `message`, or the error of its failed call. `held` is the held
    /// response it answered with, taken by [`after_call`].
    fn answer(
        &self,
        inst: &mut Instance,
        message: &bindings::wit::Message,
        r: Handled,
        held: Option<Message>,
    ) -> Result<Message, Error> {
        // The handled message's type, named only for an error.
        let type_name = || bindings::type_name_of(message, self.shared.types());
        match r {
            Ok(Ok(Some(bindings::wit::Answer::Message(m)))) => {
                // A response is a message too: its caller gets the limit error, not the bytes.
                self.check_size(m.data.len())?;
                bindings::from_wit_message(m, self.shared.types())
                    .map_err(|e| bindings::from_wit_error(&self.id, type_name(), e))
            }
            Ok(Ok(Some(bindings::wit::Answer::Held(h)))) => {
                let m = held.ok_or_else(|| {
                    bindings::from_wit_error(&self.id, type_name(), bindings::not_held(h))
                })?;
                // Held responses are bytes or no value (see `send-to-held`).
                self.check_size(m.bytes().map_or(0, |(_, _, data)| data.len()))?;
                Ok(m)
            }
            Ok(Ok(None)) => Ok(Message::empty()),
            Ok(Err(e)) => Err(bindings::from_wit_error(&self.id, type_name(), e)),
            Err(e) => Err(self.trapped(inst, &e)),
        }
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
        let me = &mut self.me;
        let message = me.to_guest(&message, ctx)?;
        let mut guard;
        let (inst, slot) = instance!(self.home, guard);
        let live = me.ready(inst, slot).await?;
        let asks_context = me.before_call(live, ctx);
        let r = call!(unboxed live, call_handle, slot, ctx.is_rpc, &message);
        let held = after_call(live, asks_context, &r);
        me.answer(inst, &message, r, held)
    }

    /// A plugin whose calls never wait (see `host::Pre`), with its instance live, holding this
    /// agent's current state and free, is called right here: no future, no fiber, no frame (its
    /// guest cannot reach the runtime: it imports neither `send` nor `publish`).
    fn on_message_now(
        &mut self,
        message: &Message,
        ctx: &MessageContext,
    ) -> Option<Result<Message, Error>> {
        let mut guard;
        let (inst, slot) = match &mut self.home {
            Home::Own(i) => (i, 0),
            Home::Shared { shard, slot } => match shard.instance.try_lock() {
                Some(g) => {
                    guard = g;
                    (&mut *guard, *slot)
                }
                None => return None,
            },
        };
        let me = &mut self.me;
        if me.generation != inst.generation {
            // A new agent, or a state to restore first: `ready` does both.
            return None;
        }
        inst.place(slot);
        // No instance yet, or a cut-off call to clean up (`ready` does both), or a plugin whose
        // calls may wait (a fiber each).
        let live = inst.live.as_mut().filter(|l| !l.in_call)?;
        if !matches!(live.world, World::Sync(_)) {
            return None;
        }
        let message = match me.to_guest(message, ctx) {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let asks_context = me.before_call(live, ctx);
        let r = match &live.world {
            World::Sync(w) => {
                w.warren_agent_agent()
                    .call_handle(&mut live.store, slot, ctx.is_rpc, &message)
            }
            World::Async(_) => unreachable!("checked above"),
        };
        let held = after_call(live, asks_context, &r);
        Some(me.answer(inst, &message, r, held))
    }

    fn description(&self) -> String {
        self.me.description.clone()
    }

    async fn save_state(&mut self) -> Result<AgentState, BoxError> {
        let me = &mut self.me;
        let mut guard;
        let (inst, slot) = instance!(self.home, guard);
        let live = me.ready(inst, slot).await?;
        live.arm(&me.shared);
        let r = call!(live, call_save_state, slot);
        live.in_call = false;
        let text = match r {
            Ok(Ok(text)) => text,
            Ok(Err(msg)) => return Err(msg.into()),
            Err(e) => return Err(Box::new(me.trapped(inst, &e))),
        };
        // Checked once here (the runtime's documents embed it as it is), not parsed into a tree.
        let state = AgentState::from_json(text).map_err(|e| {
            format!(
                "plugin `{}` saved state that is not JSON: {e}",
                me.shared.name
            )
        })?;
        me.last_state = Some(state.clone());
        Ok(state)
    }

    async fn load_state(&mut self, state: AgentState) -> Result<(), BoxError> {
        let me = &mut self.me;
        let mut guard;
        let (inst, slot) = instance!(self.home, guard);
        let live = me.ready(inst, slot).await?;
        live.arm(&me.shared);
        let r = call!(live, call_load_state, slot, state.json());
        live.in_call = false;
        match r {
            Ok(Ok(())) => {
                me.last_state = Some(state);
                Ok(())
            }
            Ok(Err(msg)) => Err(msg.into()),
            Err(e) => Err(Box::new(me.trapped(inst, &e))),
        }
    }

    fn underlying_type_name(&self) -> &'static str {
        "warren_runtime::WasmAgent"
    }
}

impl Drop for WasmAgent {
    fn drop(&mut self) {
        self.me.shared.release_instance();
    }
}
