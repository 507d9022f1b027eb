//! Who an instance is running as: [`Whom`]. An instance of its own runs as one agent; an instance
//! shared by several agents runs as whichever of them the [`Roster`] names, and switching agents
//! before a call is one store to an atomic: the agent's id is looked up only when something asks
//! for it (the guest writes to stdout or stderr, or calls `self-id`, `log` or a refused import),
//! which a shared instance's guest seldom does and cannot do while another agent runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::RwLock;
use warren_core::AgentId;

/// The agents of a shared instance, by slot (the `agent` argument of the component's exports),
/// and the slot whose call is running or ran last.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    running: AtomicU32,
    ids: RwLock<Vec<AgentId>>,
}

impl Roster {
    /// Gives `id` the next slot and returns it.
    pub(crate) fn join(&self, id: AgentId) -> u32 {
        let mut ids = self.ids.write();
        ids.push(id);
        u32::try_from(ids.len() - 1).expect("slots are bounded by agents_per_instance (u32)")
    }

    /// How many slots have been given out.
    pub(crate) fn len(&self) -> usize {
        self.ids.read().len()
    }

    /// Makes `slot`'s agent the one running. Relaxed is enough: the caller holds the instance's
    /// lock until its call is over, so the lock orders this store before the next agent's, and
    /// the caller's own call reads it after it (on the same thread, or on another after the
    /// scheduler moved the task, which synchronises).
    pub(crate) fn run(&self, slot: u32) {
        self.running.store(slot, Ordering::Relaxed);
    }

    fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    fn id(&self, slot: u32) -> AgentId {
        self.ids.read()[slot as usize].clone()
    }
}

/// Who an instance runs as (see the module docs).
#[derive(Clone, Debug)]
pub(crate) enum Whom {
    One(AgentId),
    Shared(Arc<Roster>),
}

impl Whom {
    /// The slot running now (always 0 for an instance of its own).
    pub(crate) fn slot(&self) -> u32 {
        match self {
            Whom::One(_) => 0,
            Whom::Shared(r) => r.running(),
        }
    }

    /// The agent running now.
    pub(crate) fn id(&self) -> AgentId {
        match self {
            Whom::One(id) => id.clone(),
            Whom::Shared(r) => r.id(r.running()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_instance_runs_as_the_slot_last_switched_to() {
        let roster = Arc::new(Roster::default());
        let a = AgentId::new("t", "a").unwrap();
        let b = AgentId::new("t", "b").unwrap();
        assert_eq!(roster.join(a.clone()), 0);
        assert_eq!(roster.join(b.clone()), 1);
        assert_eq!(roster.len(), 2);
        let whom = Whom::Shared(roster.clone());
        assert_eq!((whom.slot(), whom.id()), (0, a.clone()));
        roster.run(1);
        assert_eq!((whom.slot(), whom.id()), (1, b));
        roster.run(0);
        assert_eq!(whom.id(), a);
        let c = AgentId::new("t", "c").unwrap();
        let one = Whom::One(c.clone());
        assert_eq!((one.slot(), one.id()), (0, c));
    }
}
