//! A guest's stdout and stderr: each line becomes a `tracing` event tagged with the agent id, and
//! the last few hundred bytes of stderr are kept so a trap can say what the guest printed before
//! it died (a Rust guest prints its panic message there before aborting).
//!
//! Nothing a guest writes can block or trap it: output beyond a line's bound is cut, never refused.
//! Writes complete synchronously (the stream is always ready), so a guest that prints needs no
//! fiber and no background task: instances without async imports can be called synchronously.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use warren_core::AgentId;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamResult};

use crate::roster::Whom;

/// How much of one line is kept before it is emitted anyway.
const MAX_LINE: usize = 4096;
/// How much recent stderr is kept for trap reports.
const TAIL: usize = 512;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

struct State {
    /// Who the kept output is from: the agent that wrote last, and its slot in the instance.
    agent: AgentId,
    slot: u32,
    line: Vec<u8>,
    tail: Vec<u8>,
}

/// One guest output stream.
#[derive(Clone)]
pub(crate) struct LogPipe {
    stream: Stream,
    /// Who is running: in a shared instance, the agent whose call is running.
    whom: Whom,
    state: Arc<Mutex<State>>,
}

impl LogPipe {
    pub(crate) fn new(whom: Whom, stream: Stream) -> Self {
        Self {
            stream,
            state: Arc::new(Mutex::new(State {
                agent: whom.id(),
                slot: whom.slot(),
                line: Vec::new(),
                tail: Vec::new(),
            })),
            whom,
        }
    }

    /// The most recent output of the agent running (including an unfinished line), for a trap
    /// report.
    pub(crate) fn tail(&self) -> String {
        let mut st = self.state.lock();
        self.catch_up(&mut st);
        let mut t = st.tail.clone();
        t.extend_from_slice(&st.line);
        let start = t.len().saturating_sub(TAIL);
        String::from_utf8_lossy(&t[start..]).trim().to_owned()
    }

    /// Hands the kept output over to the agent running if another agent of a shared instance
    /// wrote it: that agent's unfinished line is emitted as its own, and the kept tail starts
    /// afresh, so a trap report quotes only what the agent that trapped wrote. (Done here, when
    /// output is written or asked for, rather than at every switch of agents, which is far more
    /// frequent.)
    fn catch_up(&self, st: &mut State) {
        let slot = self.whom.slot();
        if slot != st.slot {
            if !st.line.is_empty() {
                let line = std::mem::take(&mut st.line);
                self.emit(&st.agent, &line);
            }
            st.tail.clear();
            st.agent = self.whom.id();
            st.slot = slot;
        }
    }

    fn emit(&self, agent: &AgentId, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        match self.stream {
            Stream::Stdout => tracing::info!(%agent, stream = "stdout", "{text}"),
            Stream::Stderr => tracing::warn!(%agent, stream = "stderr", "{text}"),
        }
    }

    fn write(&self, buf: &[u8]) {
        let mut st = self.state.lock();
        self.catch_up(&mut st);
        for &b in buf {
            if b == b'\n' || st.line.len() >= MAX_LINE {
                let line = std::mem::take(&mut st.line);
                self.emit(&st.agent, &line);
                st.tail.extend_from_slice(&line);
                st.tail.push(b'\n');
                let excess = st.tail.len().saturating_sub(TAIL);
                st.tail.drain(..excess);
                if b == b'\n' {
                    continue;
                }
            }
            st.line.push(b);
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// A stream that writes in place: wasmtime-wasi's default wraps the `AsyncWrite` in a
    /// stream with a background task, whose readiness only a running executor can report.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// How much a guest may write per `write` call (WASI streams allow a few KiB to 64 KiB).
const WRITE_BUDGET: usize = 64 << 10;

#[wasmtime_wasi_io::async_trait]
impl Pollable for LogPipe {
    /// Always ready: a write never waits.
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        LogPipe::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;

    #[test]
    fn keeps_a_bounded_tail_of_lines() {
        let p = LogPipe::new(Whom::One(AgentId::new("a", "1").unwrap()), Stream::Stderr);
        for i in 0..200 {
            p.write(format!("line {i}\n").as_bytes());
        }
        p.write(b"panicked at src/lib.rs:3: boom");
        let tail = p.tail();
        assert!(tail.ends_with("panicked at src/lib.rs:3: boom"), "{tail}");
        assert!(tail.len() <= TAIL + 40, "{}", tail.len());
        assert!(!tail.contains("line 0\n"));
    }

    #[test]
    fn another_agent_starts_a_fresh_tail() {
        let roster = Arc::new(Roster::default());
        roster.join(AgentId::new("a", "1").unwrap());
        roster.join(AgentId::new("a", "2").unwrap());
        let p = LogPipe::new(Whom::Shared(roster.clone()), Stream::Stderr);
        p.write(b"one's line\none's unfinished");
        assert_eq!(p.tail(), "one's line\none's unfinished");
        roster.run(1);
        // Asked before the second agent wrote anything: nothing of the first agent's.
        assert_eq!(p.tail(), "");
        p.write(b"two's line");
        assert_eq!(p.tail(), "two's line");
        assert_eq!(p.state.lock().agent.key(), "2");
        // Switching to the same agent again keeps its tail.
        roster.run(1);
        assert_eq!(p.tail(), "two's line");
        // Back to the first agent: its tail starts afresh too.
        roster.run(0);
        p.write(b"one again\n");
        assert_eq!(p.tail(), "one again");
        assert_eq!(p.state.lock().agent.key(), "1");
    }
}
