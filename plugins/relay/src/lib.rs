//! `relay`: forwards requests to other agents with `send`.
//!
//! - `HopReq{i, hops}`: the agent with key `k` sends `HopReq{i, hops + 1}` to key `k + 1` of its own
//!   type and returns the answer; the agent with key `HOPS - 1` answers `HopResp{i, hops + 1}`.
//!   This is the benchmark's 10-hop `rpc_chain`.
//! - `Forward{path}`: sends `Forward{rest}` to the first agent of `path` (any agent, native or
//!   wasm, that understands `Forward`) and returns its answer as it came; with an empty path it
//!   answers `"answered by <its id>"`. The tests build call chains and cycles with it.
//!
//! Both pass the next agent's answer on with `send_raw`: the host holds it, and the relay answers
//! with it without it being copied into the relay's memory and back.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, AgentId, Context, Error, Handlers, Reply};

/// Length of the `HopReq` chain.
pub const HOPS: u64 = 10;

#[derive(Debug, Serialize, Deserialize)]
pub struct HopReq {
    pub i: i64,
    pub hops: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HopResp {
    pub i: i64,
    pub hops: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Forward {
    pub path: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Relay {
    #[serde(skip)]
    next: Option<AgentId>,
}

fn parse_id(s: &str) -> Result<AgentId, Error> {
    let (t, k) = s
        .split_once('/')
        .ok_or_else(|| Error::Other(format!("`{s}` is not a type/key agent id")))?;
    Ok(AgentId::new(t, k))
}

impl Agent for Relay {
    fn description() -> String {
        "Forwards requests along a chain of agents".into()
    }

    fn init(&mut self, id: &AgentId) {
        // Keys that are not numbers end the HopReq chain at once.
        self.next = id
            .key
            .parse::<u64>()
            .ok()
            .filter(|k| k + 1 < HOPS)
            .map(|k| AgentId::new(id.agent_type.clone(), (k + 1).to_string()));
    }

    fn handlers(h: &mut Handlers<Self>) {
        // The next hop's answer goes back as it came: not copied in, decoded or encoded again.
        h.rpc(|me: &mut Relay, m: HopReq, ctx: &Context| match &me.next {
            Some(next) => ctx.send_raw::<HopResp>(
                &HopReq {
                    i: m.i,
                    hops: m.hops + 1,
                },
                next,
            ),
            None => Reply::new(&HopResp {
                i: m.i,
                hops: m.hops + 1,
            }),
        });
        h.rpc(
            |_: &mut Relay, m: Forward, ctx: &Context| match m.path.split_first() {
                None => Reply::new(&format!("answered by {}", ctx.self_id())),
                Some((next, rest)) => ctx.send_raw::<String>(
                    &Forward {
                        path: rest.to_vec(),
                    },
                    &parse_id(next)?,
                ),
            },
        );
    }
}

warren_guest::export_agent!(Relay);
