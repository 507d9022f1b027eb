//! `echo`: answers `Ping{i}` with `Pong{i}`, `Touch{i}` with `Touched{i}` (counting touches in
//! its state), and sends any other message straight back. The benchmark's `echo` and `lazy` agent.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, Context, Error, Handlers, Payload};

#[derive(Debug, Serialize, Deserialize)]
pub struct Ping {
    pub i: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Pong {
    pub i: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Touch {
    pub i: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Touched {
    pub i: i64,
}

/// Asks the agent what it knows about the message: answered for sends, remembered in the
/// state for publishes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContextProbe {}

/// What a handler saw in its context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextView {
    pub me: String,
    pub sender: Option<String>,
    pub topic: Option<String>,
    pub is_rpc: bool,
    pub message_id: String,
}

/// The state: how many `Touch` messages this agent has seen, and the contexts of published
/// `ContextProbe`s.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Echo {
    seen: i64,
    probes: Vec<ContextView>,
}

fn view(ctx: &Context) -> ContextView {
    ContextView {
        me: ctx.self_id().to_string(),
        sender: ctx.sender().map(|s| s.to_string()),
        topic: ctx
            .topic()
            .map(|t| format!("{}/{}", t.topic_type, t.source)),
        is_rpc: ctx.is_rpc(),
        message_id: ctx.message_id().to_owned(),
    }
}

impl Agent for Echo {
    fn description() -> String {
        "Echoes every message back to its sender".into()
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(|_: &mut Echo, m: Ping, _: &Context| Ok::<_, Error>(Pong { i: m.i }));
        h.rpc(|me: &mut Echo, m: Touch, _: &Context| {
            me.seen += 1;
            Ok::<_, Error>(Touched { i: m.i })
        });
        h.rpc(|_: &mut Echo, _: ContextProbe, ctx: &Context| Ok::<_, Error>(view(ctx)));
        h.event(|me: &mut Echo, _: ContextProbe, ctx: &Context| {
            me.probes.push(view(ctx));
            Ok(())
        });
        // Anything else comes back unchanged, whatever its type.
        h.fallback(|_: &mut Echo, p: Payload, _: &Context| Ok(Some(p)));
    }
}

warren_guest::export_agent!(Echo);
