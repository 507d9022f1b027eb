//! `counter`: keeps a counter and a note that survive `save_state`/`load_state`. `Inc{by}` adds to
//! the counter and answers `Pong{i: counter}`; `GetState` answers `StateView`; every published
//! `News` adds one. The benchmark's `stateful` and fan-out subscriber agent.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, AgentId, Context, Error, Handlers};

#[derive(Debug, Serialize, Deserialize)]
pub struct Inc {
    pub by: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Pong {
    pub i: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetState {}

#[derive(Debug, Serialize, Deserialize)]
pub struct StateView {
    pub counter: i64,
    pub note: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct News {
    pub i: i64,
}

/// The state, saved and loaded as `{"counter": .., "note": ..}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    counter: i64,
    note: String,
}

/// `"note-" + key`, padded with `.` to exactly 64 bytes (the benchmark's initial note).
pub fn note(key: &str) -> String {
    let mut n = format!("note-{key}");
    while n.len() < 64 {
        n.push('.');
    }
    n.truncate(64);
    n
}

impl Agent for Counter {
    fn description() -> String {
        "Counts, and remembers the count across save and load".into()
    }

    fn init(&mut self, id: &AgentId) {
        // `init` also runs after a state load: a restored note stays as saved.
        if self.note.is_empty() {
            self.note = note(&id.key);
        }
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(|me: &mut Counter, m: Inc, _: &Context| {
            me.counter += m.by;
            Ok::<_, Error>(Pong { i: me.counter })
        });
        h.rpc(|me: &mut Counter, _: GetState, _: &Context| {
            Ok::<_, Error>(StateView {
                counter: me.counter,
                note: me.note.clone(),
            })
        });
        h.event(|me: &mut Counter, _: News, _: &Context| {
            me.counter += 1;
            Ok(())
        });
    }
}

warren_guest::export_agent!(Counter);

#[cfg(test)]
mod tests {
    #[test]
    fn note_is_64_bytes() {
        assert_eq!(super::note("7").len(), 64);
        assert!(super::note("7").starts_with("note-7."));
        assert_eq!(super::note("19999"), format!("{:.<64}", "note-19999"));
        assert_eq!(super::note(&"x".repeat(70)).len(), 64);
    }
}
