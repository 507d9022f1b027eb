//! The benchmark's agents: native Rust twins of `autogen_bench.py`'s agents, and the registration
//! of the wasm plugins (`echo`, `counter`, `relay`) under the same agent types.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warren_runtime::{
    AgentId, AgentRuntime, AgentState, AgentType, BoxError, HostConfig, LoadedPlugin, Manifest,
    MemoryChecks, MessageContext, RegisterOptions, RoutedAgent, Routes, Subscription, WasmHost,
};

macro_rules! message {
    ($($name:ident { $($f:ident: $t:ty),* })*) => {$(
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub struct $name { $(pub $f: $t),* }
    )*};
}

message! {
    Ping { i: i64 }
    Pong { i: i64 }
    News { i: i64 }
    Touch { i: i64 }
    Touched { i: i64 }
    HopReq { i: i64, hops: i64 }
    HopResp { i: i64, hops: i64 }
    Inc { by: i64 }
    GetState {}
    StateView { counter: i64, note: String }
}

/// Hops in `rpc_chain`.
pub const CHAIN_HOPS: i64 = 10;

/// Deliveries counted by native fan-out subscribers (the reference's process-global counter).
pub static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// `"note-" + key`, right-padded with `.` to 64 bytes (Python's `ljust(64, ".")`). Built with two
/// copies instead of `format!` padding, which writes the dots one `write_char` at a time: the
/// factory calls this for every agent state_roundtrip loads (1,600 instructions each before).
pub fn note(key: &str) -> String {
    const WIDTH: usize = 64;
    const DOTS: &str = "................................................................";
    let mut n = String::with_capacity(WIDTH.max(5 + key.len()));
    n.push_str("note-");
    n.push_str(key);
    n.push_str(&DOTS[..WIDTH.saturating_sub(n.len())]);
    n
}

/// `echo` and `lazy`: Ping→Pong, Touch→Touched (counting touches).
#[derive(Default)]
pub struct Echo {
    seen: i64,
}

impl RoutedAgent for Echo {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|_: &mut Echo, m: &Ping, _| Ok::<_, BoxError>(Pong { i: m.i }));
        r.rpc_sync(|a: &mut Echo, m: &Touch, _| {
            a.seen += 1;
            Ok::<_, BoxError>(Touched { i: m.i })
        });
    }
}

/// A `sub{j}` fan-out subscriber.
#[derive(Default)]
pub struct Sub {
    count: i64,
}

impl RoutedAgent for Sub {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|a: &mut Sub, _m: &News, _| {
            a.count += 1;
            DELIVERIES.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BoxError>(())
        });
    }
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::new(&json!({ "counter": self.count }))?)
    }
}

/// `hop/k`: forwards to `hop/k+1` from inside its handler, or answers at the end.
pub struct Hop {
    next: Option<AgentId>,
}

impl RoutedAgent for Hop {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|a: &mut Hop, m: &HopReq, ctx: &MessageContext| {
            Box::pin(async move {
                let next_req = HopReq {
                    i: m.i,
                    hops: m.hops + 1,
                };
                match &a.next {
                    Some(next) => Ok(ctx.send::<HopResp>(next_req, next).await?),
                    None => Ok::<_, BoxError>(HopResp {
                        i: m.i,
                        hops: m.hops + 1,
                    }),
                }
            })
        });
    }
}

/// `stateful`: a counter and a note, saved and loaded as `{"counter", "note"}`.
pub struct Stateful {
    counter: i64,
    note: String,
}

impl RoutedAgent for Stateful {
    fn routes(r: &mut Routes<Self>) {
        r.rpc_sync(|a: &mut Stateful, m: &Inc, _| {
            a.counter += m.by;
            Ok::<_, BoxError>(Pong { i: a.counter })
        });
        r.rpc_sync(|a: &mut Stateful, _m: &GetState, _| {
            Ok::<_, BoxError>(StateView {
                counter: a.counter,
                note: a.note.clone(),
            })
        });
    }
    fn save_state(&mut self) -> Result<AgentState, BoxError> {
        Ok(AgentState::new(&SavedStateful {
            counter: self.counter,
            note: &self.note,
        })?)
    }
    fn load_state(&mut self, s: AgentState) -> Result<(), BoxError> {
        let s: LoadedStateful = s
            .decode()
            .map_err(|e| format!("bad `stateful` state: {e}"))?;
        self.counter = s.counter;
        self.note = s.note;
        Ok(())
    }
}

/// `stateful`'s state as saved: `{"counter": .., "note": ..}`, written straight from the agent.
#[derive(Serialize)]
struct SavedStateful<'a> {
    counter: i64,
    note: &'a str,
}

/// `stateful`'s state as loaded.
#[derive(Deserialize)]
struct LoadedStateful {
    counter: i64,
    note: String,
}

/// How agents are provided: native types, or the wasm plugins.
pub enum Variant {
    Native,
    Wasm(Box<Plugins>),
}

/// The loaded wasm plugins.
pub struct Plugins {
    host: WasmHost,
    echo: LoadedPlugin,
    counter: LoadedPlugin,
    relay: LoadedPlugin,
}

const SKIP: RegisterOptions = RegisterOptions {
    skip_class_subscriptions: true,
    skip_direct_message_subscription: true,
};

impl Variant {
    /// The agents for variant `name`. `live` is how many agents the workload keeps live (the
    /// pool gets a slot per instance they need); `agents_per_instance` overrides the echo and
    /// counter plugins' manifests (the relay's agents wait on each other and cannot share).
    pub async fn new(
        name: &str,
        components: &Path,
        live: u64,
        agents_per_instance: Option<u32>,
    ) -> anyhow::Result<Self> {
        if name == "native" {
            return Ok(Variant::Native);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = |plugin: &str, shareable: bool| {
            let path = root.join("plugins").join(plugin).join("plugin.toml");
            let mut m = Manifest::load(&path).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            // The workloads keep up to 2 x 20,000 agents of one type live.
            m.limits.instances = Some(1 << 24);
            if shareable && let Some(n) = agents_per_instance {
                m.agent.agents_per_instance = Some(n);
            }
            anyhow::Ok((m, path))
        };
        let echo = manifest("echo", true)?;
        let counter = manifest("counter", true)?;
        let relay = manifest("relay", false)?;
        let per_instance = echo
            .0
            .agents_per_instance()
            .min(counter.0.agents_per_instance());
        let slots = live.div_ceil(u64::from(per_instance)) + 200;
        // Small memories (the plugins need well under 16 MiB) so a pool of tens of thousands of
        // slots fits in the address space.
        let host = WasmHost::with_config(HostConfig {
            max_instances: u32::try_from(slots).unwrap_or(u32::MAX),
            max_memory: 16 << 20,
            perf_map: std::env::var_os(crate::workloads::PERF_CTL).is_some(),
            memory_checks: if std::env::var_os(crate::workloads::EXPLICIT_CHECKS).is_some() {
                MemoryChecks::Explicit
            } else {
                MemoryChecks::Auto
            },
            ..HostConfig::default()
        })?;
        let load = |(m, path): (Manifest, std::path::PathBuf), file: &str| {
            let component = components.join(file);
            let host = host.clone();
            async move { anyhow::Ok(host.load_with_component(m, &path, &component).await?) }
        };
        Ok(Variant::Wasm(Box::new(Plugins {
            echo: load(echo, "warren_plugin_echo.wasm").await?,
            counter: load(counter, "warren_plugin_counter.wasm").await?,
            relay: load(relay, "warren_plugin_relay.wasm").await?,
            host,
        })))
    }

    /// Agents per instance of the echo and counter plugins (`-` for native agents).
    pub fn agents_per_instance(&self) -> Value {
        match self {
            Variant::Native => "-".into(),
            Variant::Wasm(p) => json!({
                "echo": p.echo.manifest.agents_per_instance(),
                "counter": p.counter.manifest.agents_per_instance(),
                "relay": p.relay.manifest.agents_per_instance(),
            }),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Variant::Native => "rust-native",
            Variant::Wasm(_) => "rust-wasm-component",
        }
    }

    pub fn allocator(&self) -> &'static str {
        match self {
            Variant::Native => "-",
            Variant::Wasm(p) if p.host.is_pooling() => "pooling",
            Variant::Wasm(_) => "on-demand",
        }
    }

    pub fn memory_checks(&self) -> &'static str {
        match self {
            Variant::Native => "-",
            Variant::Wasm(p) if p.host.uses_guard_regions() => "guard regions (no explicit checks)",
            Variant::Wasm(_) => "explicit bounds checks",
        }
    }

    pub fn codec(&self) -> &'static str {
        match self {
            Variant::Native => "none (shared Rust values)",
            Variant::Wasm(_) => {
                "msgpack across the component boundary (rmp-serde, fields by name); state as json"
            }
        }
    }

    /// Registers the echo agent under `agent_type` (W1, W2, W4).
    pub async fn echo(&self, rt: &AgentRuntime, agent_type: &str) -> anyhow::Result<()> {
        match self {
            Variant::Native => {
                rt.register_routed_with(agent_type, |_| Echo::default(), SKIP)
                    .await?;
            }
            Variant::Wasm(p) => {
                p.host
                    .register_as(rt, &p.echo, AgentType::new(agent_type)?, vec![])
                    .await?;
            }
        }
        Ok(())
    }

    /// Registers a fan-out subscriber type subscribed to topic type `news` (W3).
    pub async fn subscriber(&self, rt: &AgentRuntime, agent_type: &str) -> anyhow::Result<()> {
        let t = AgentType::new(agent_type)?;
        let sub = Subscription::type_subscription("news", t.clone());
        match self {
            Variant::Native => {
                rt.register_routed_with(agent_type, |_| Sub::default(), SKIP)
                    .await?;
                rt.add_subscription(sub).await?;
            }
            Variant::Wasm(p) => {
                p.host.register_as(rt, &p.counter, t, vec![sub]).await?;
            }
        }
        Ok(())
    }

    /// Registers the `hop` chain (W5).
    pub async fn hop(&self, rt: &AgentRuntime) -> anyhow::Result<()> {
        match self {
            Variant::Native => {
                rt.register_routed_with(
                    "hop",
                    |ctx| {
                        let k: i64 = ctx.id().key().parse().unwrap_or(CHAIN_HOPS);
                        let next = (k + 1 < CHAIN_HOPS)
                            .then(|| AgentId::new("hop", (k + 1).to_string()).expect("valid id"));
                        Hop { next }
                    },
                    SKIP,
                )
                .await?;
            }
            Variant::Wasm(p) => {
                p.host
                    .register_as(rt, &p.relay, AgentType::new("hop")?, vec![])
                    .await?;
            }
        }
        Ok(())
    }

    /// Registers the `stateful` type (W6).
    pub async fn stateful(&self, rt: &AgentRuntime) -> anyhow::Result<()> {
        match self {
            Variant::Native => {
                rt.register_routed_with(
                    "stateful",
                    |ctx| Stateful {
                        counter: 0,
                        note: note(ctx.id().key()),
                    },
                    SKIP,
                )
                .await?;
            }
            Variant::Wasm(p) => {
                p.host
                    .register_as(rt, &p.counter, AgentType::new("stateful")?, vec![])
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Stateful, note};
    use serde_json::json;
    use warren_runtime::RoutedAgent;

    #[test]
    fn stateful_loads_what_it_saves_and_names_a_bad_field() {
        let mut a = Stateful {
            counter: 7,
            note: note("7"),
        };
        let saved = a.save_state().unwrap();
        let mut b = Stateful {
            counter: 0,
            note: String::new(),
        };
        b.load_state(saved).unwrap();
        assert_eq!((b.counter, b.note.as_str()), (7, note("7").as_str()));
        assert_eq!(
            a.save_state().unwrap().to_value(),
            json!({"counter": 7, "note": note("7")})
        );
        for (bad, why) in [
            (json!({"note": "n"}), "missing field `counter`"),
            (json!({"counter": "1", "note": "n"}), "expected i64"),
            (json!({"counter": 1}), "missing field `note`"),
            (json!({"counter": 1, "note": 2}), "expected a string"),
            (json!("x"), "expected struct"),
        ] {
            let err = b.load_state(bad.clone().into()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn note_pads_like_python_ljust() {
        for key in ["0", "7", "19999", "k", ""] {
            let n = note(key);
            assert_eq!(n.len(), 64, "{key}");
            assert_eq!(n, format!("{:.<64}", format!("note-{key}")));
        }
        // Longer than the width: kept whole, like `ljust`.
        let long = "x".repeat(70);
        assert_eq!(note(&long), format!("note-{long}"));
    }
}
