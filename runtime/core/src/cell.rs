//! One live agent instance and its mailbox: the [`Cell`].
//!
//! A cell holds the agent (once constructed) and a FIFO of jobs. At most one job runs at a time:
//! whoever finds the cell idle **claims** it (takes the agent out and sets `running`), runs the job,
//! then **releases** it (puts the agent back, or hands it to a drainer task if jobs arrived
//! meanwhile). Invariant: a non-empty queue implies `running`, so every queued job has an owner
//! that will run it.
//!
//! A send to an idle agent is run **inline**, on the caller's task: no task spawn and no channel
//! hop, which is most of the cost of an RPC. A publish never runs inline (the publisher does not
//! wait); it queues and spawns a drainer if the cell was idle.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, MessageContext};
use crate::error::Error;
use crate::id::{AgentId, MessageId, TopicId};
use crate::message::Message;
use crate::runtime::{Inner, TypeEntry};

/// The agent slot a job runs against: `None` until the factory has built the agent.
pub(crate) type Slot = Option<Box<dyn Agent>>;

/// A control operation (save, load, close, metadata, typed access) run with exclusive access.
pub(crate) type ControlFn = Box<dyn for<'a> FnOnce(&'a mut Slot) -> BoxFuture<'a, ()> + Send>;

/// A mailbox entry. Every variant is a pointer (24 bytes with the tag), so a mailbox of thousands
/// of waiting messages stays small: a publish to a hundred agents queues one shared [`Published`],
/// not a hundred copies of its message context.
pub(crate) enum Job {
    /// A send (RPC) for the agent's handler.
    Deliver(Box<Delivery>),
    /// A published message, shared by the mailboxes of all its recipients.
    Publish(Arc<Published>),
    /// A control operation.
    Control(ControlFn),
}

pub(crate) struct Delivery {
    pub(crate) message: Message,
    pub(crate) ctx: MessageContext,
    /// The caller waiting for the response.
    pub(crate) reply: oneshot::Sender<Result<Message, Error>>,
}

/// One published message as every recipient's mailbox holds it. The recipient's
/// [`MessageContext`] is made when its handler runs.
pub(crate) struct Published {
    pub(crate) message: Message,
    pub(crate) sender: Option<AgentId>,
    pub(crate) topic: TopicId,
    pub(crate) token: Option<CancellationToken>,
    pub(crate) message_id: MessageId,
}

impl Published {
    /// The message and context for `recipient`. The last recipient takes everything by move, so a
    /// native value that no other recipient holds any more is handed over, not copied.
    pub(crate) fn open(
        self: Arc<Self>,
        cell: Arc<Cell>,
        runtime: Arc<Inner>,
    ) -> (Message, MessageContext) {
        let p = match Arc::try_unwrap(self) {
            Ok(p) => p,
            Err(shared) => Published {
                message: shared.message.clone(),
                sender: shared.sender.clone(),
                topic: shared.topic.clone(),
                token: shared.token.clone(),
                message_id: shared.message_id.clone(),
            },
        };
        let ctx = MessageContext {
            sender: p.sender,
            topic_id: Some(p.topic),
            is_rpc: false,
            token: p.token,
            own_token: Default::default(),
            message_id: p.message_id,
            cell,
            runtime,
        };
        (p.message, ctx)
    }
}

pub(crate) struct Cell {
    pub(crate) id: AgentId,
    /// Creation order, for `save_state` (AutoGen saves in creation order).
    pub(crate) seq: u64,
    /// How to build the agent; `None` for a registered instance.
    pub(crate) entry: Arc<TypeEntry>,
    /// The most messages that may wait in this mailbox (control jobs are not counted).
    pub(crate) capacity: usize,
    pub(crate) state: Mutex<CellState>,
}

pub(crate) struct CellState {
    pub(crate) agent: Slot,
    /// True once the agent has been constructed (and stays true).
    pub(crate) instantiated: bool,
    /// The description captured at construction, for `agent_metadata`.
    pub(crate) description: String,
    /// A job is running; the agent is out of the slot.
    pub(crate) running: bool,
    pub(crate) queue: VecDeque<Job>,
}

impl Cell {
    pub(crate) fn new(
        id: AgentId,
        seq: u64,
        entry: Arc<TypeEntry>,
        capacity: usize,
        agent: Slot,
    ) -> Self {
        let instantiated = agent.is_some();
        let description = agent.as_ref().map(|a| a.description()).unwrap_or_default();
        Self {
            id,
            seq,
            entry,
            capacity,
            state: Mutex::new(CellState {
                agent,
                instantiated,
                description,
                running: false,
                queue: VecDeque::new(),
            }),
        }
    }

    pub(crate) fn is_instantiated(&self) -> bool {
        self.state.lock().instantiated
    }
}

/// Outcome of offering a job to a cell.
pub(crate) enum Claim {
    /// The cell was idle: the caller owns it now and must run the job, then release.
    Owned(Slot),
    /// The job was queued behind a running one.
    Queued,
    /// The job was queued and the cell was idle: the caller must start a drainer.
    QueuedIdle(Slot),
    /// The mailbox is full; the job was not queued.
    Full,
}

impl Cell {
    /// Claims the cell if it is idle and `inline` is allowed, otherwise queues `job()`. A
    /// `bounded` job (a message) is refused with [`Claim::Full`] when the mailbox is at capacity.
    pub(crate) fn offer(&self, inline: bool, bounded: bool, job: impl FnOnce() -> Job) -> Claim {
        let mut st = self.state.lock();
        if !st.running {
            debug_assert!(
                st.queue.is_empty(),
                "queued jobs always have a running owner"
            );
            st.running = true;
            let slot = st.agent.take();
            if inline {
                return Claim::Owned(slot);
            }
            st.queue.push_back(job());
            return Claim::QueuedIdle(slot);
        }
        if bounded && st.queue.len() >= self.capacity {
            return Claim::Full;
        }
        st.queue.push_back(job());
        Claim::Queued
    }

    /// Gives the slot back. Returns it again if jobs are waiting: the caller must drain them.
    pub(crate) fn release(&self, slot: Slot) -> Option<Slot> {
        let mut st = self.state.lock();
        if st.queue.is_empty() {
            st.agent = slot;
            st.running = false;
            None
        } else {
            Some(slot)
        }
    }

    /// The next job, or releases the cell and returns `None` when the queue is empty.
    pub(crate) fn next_job(&self, slot: &mut Slot) -> Option<Job> {
        let mut st = self.state.lock();
        match st.queue.pop_front() {
            Some(j) => Some(j),
            None => {
                st.agent = slot.take();
                st.running = false;
                None
            }
        }
    }

    /// Removes the queued messages (sends and publishes, not control jobs), for `stop()`.
    pub(crate) fn take_queued_messages(&self) -> Vec<Job> {
        let mut st = self.state.lock();
        let mut kept = VecDeque::new();
        let mut out = Vec::new();
        for job in st.queue.drain(..) {
            match job {
                c @ Job::Control(_) => kept.push_back(c),
                m => out.push(m),
            }
        }
        st.queue = kept;
        out
    }
}

/// A boxed future that, if dropped before it completes, is moved onto the tokio runtime and
/// finishes there. A caller that stops waiting (cancellation, a timeout of its own) therefore never
/// cuts a handler off half-way, and the cell it had claimed is always released.
pub(crate) struct Detach<T: Send + 'static> {
    fut: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Detach<T> {
    pub(crate) fn new(fut: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<T: Send + 'static> Future for Detach<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let fut = self.fut.as_mut().expect("Detach polled after completion");
        match fut.as_mut().poll(cx) {
            Poll::Ready(v) => {
                self.fut = None;
                Poll::Ready(v)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = fut.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::AgentRuntime;

    #[test]
    fn a_queued_job_is_three_words_whatever_it_carries() {
        // A full mailbox of a fan-out holds thousands of these: they must not carry the context.
        assert!(
            std::mem::size_of::<Job>() <= 3 * std::mem::size_of::<usize>(),
            "Job is {} bytes",
            std::mem::size_of::<Job>()
        );
    }

    fn published(message: Message) -> Arc<Published> {
        Arc::new(Published {
            message,
            sender: Some(AgentId::new("pub", "1").unwrap()),
            topic: TopicId::new("news", "s").unwrap(),
            token: None,
            message_id: MessageId::new("m-1"),
        })
    }

    fn cell(key: &str) -> Arc<Cell> {
        let entry = Arc::new(crate::runtime::TypeEntry::Instances {
            rust_type: std::any::TypeId::of::<()>(),
            rust_name: "()",
        });
        Arc::new(Cell::new(
            AgentId::new("sub", key).unwrap(),
            0,
            entry,
            1,
            None,
        ))
    }

    #[test]
    fn each_recipient_gets_its_own_context_and_the_last_one_takes_the_message() {
        let inner = AgentRuntime::new().inner_for_tests();
        let p = published(Message::new(41_i64));
        let first = p.clone();
        let (m1, c1) = first.open(cell("a"), inner.clone());
        assert_eq!(*c1.agent_id(), AgentId::new("sub", "a").unwrap());
        assert_eq!(c1.sender, Some(AgentId::new("pub", "1").unwrap()));
        assert_eq!(c1.topic_id, Some(TopicId::new("news", "s").unwrap()));
        assert_eq!(c1.message_id, MessageId::new("m-1"));
        assert!(!c1.is_rpc);
        // `m1` is a copy (the publish is still shared): both hold the value.
        assert_eq!(m1.native_refs(), Some(2));
        drop(m1);
        let (m2, c2) = p.open(cell("b"), inner);
        assert_eq!(*c2.agent_id(), AgentId::new("sub", "b").unwrap());
        // The last recipient holds the only reference: a native value is moved, not copied.
        assert_eq!(m2.native_refs(), Some(1));
        assert_eq!(m2.decode::<i64>().unwrap(), 41);
    }
}
