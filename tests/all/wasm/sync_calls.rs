//! Plugins that import nothing that waits (no `send`, no `publish`, no files or sockets) are
//! linked against synchronous WASI I/O and called without a fiber. They keep every guarantee of
//! the fiber path: typed traps with the guest's last words, time and memory limits, a fresh
//! instance restored from the last saved state, and other agents unaffected.

use serde::{Deserialize, Serialize};
use warren_runtime::{AgentId, Error};

use super::local_messages::*;
use super::{guests, load, runtime_with};
use crate::common::*;

fn id(s: &str) -> AgentId {
    s.parse().unwrap()
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    i: i64,
}
#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    i: i64,
}

#[tokio::test]
async fn plugins_that_never_wait_are_called_synchronously_the_others_on_fibers() {
    for (name, component, sync) in [
        ("echo", guests::ECHO, true),
        ("counter", guests::COUNTER, true),
        ("local", guests::LOCAL, true),
        ("monitor", guests::MONITOR, true),
        // `send` and `publish` wait for other agents; a file read waits for the disk.
        ("relay", guests::RELAY, false),
        ("worker", guests::WORKER, false),
        ("faulty", guests::FAULTY, false),
        ("fs-reader", guests::FS_READER, false),
    ] {
        let p = load(name, component)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.is_synchronous(), sync, "{name}");
    }
}

#[tokio::test]
async fn a_synchronous_instance_that_panics_reports_what_it_printed_and_restarts_from_saved_state()
{
    let rt = runtime_with(&[("local", guests::LOCAL), ("echo", guests::ECHO)]).await;
    rt.start().unwrap();
    let a = id("local/1");
    assert_eq!(
        within(rt.send::<Total>(Add { n: 4 }, &a)).await.unwrap().n,
        4
    );
    within(rt.agent_save_state(&a)).await.unwrap();
    assert_eq!(
        within(rt.send::<Total>(Add { n: 1 }, &a)).await.unwrap().n,
        5
    );

    let e = within(rt.send::<()>(
        Crash {
            line: "about to fail".into(),
            message: "sync boom".into(),
        },
        &a,
    ))
    .await
    .unwrap_err();
    match &e {
        Error::Trapped { agent, trap } => {
            assert_eq!(agent, &a);
            assert!(trap.contains("sync boom"), "panic message: {trap}");
            assert!(trap.contains("about to fail"), "earlier stderr: {trap}");
        }
        other => panic!("expected Trapped, got {other}"),
    }
    assert_eq!(
        within(rt.send::<Pong>(Ping { i: 9 }, &id("echo/x")))
            .await
            .unwrap()
            .i,
        9
    );
    // Restored from the saved 4, not the lost 5.
    assert_eq!(
        within(rt.send::<Total>(Add { n: 1 }, &a)).await.unwrap().n,
        5
    );
    within(rt.stop_when_idle()).await.unwrap();
}

#[tokio::test]
async fn a_synchronous_instance_is_held_to_its_time_and_memory_limits() {
    let rt = runtime_with(&[("local", guests::LOCAL), ("echo", guests::ECHO)]).await;
    rt.start().unwrap();
    let a = id("local/spin");
    let e = within(rt.send::<()>(Loop {}, &a)).await.unwrap_err();
    assert!(
        matches!(&e, Error::DeadlineExceeded { agent, .. } if agent == &a),
        "{e}"
    );
    let b = id("local/hog");
    let e = within(rt.send::<Total>(Grab { megabytes: 64 }, &b))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::LimitExceeded { agent, limit: "memory", .. } if agent == &b),
        "{e}"
    );
    // Both come back fresh, and the others never noticed.
    assert_eq!(
        within(rt.send::<Total>(Add { n: 2 }, &a)).await.unwrap().n,
        2
    );
    assert_eq!(
        within(rt.send::<Total>(Grab { megabytes: 1 }, &b))
            .await
            .unwrap()
            .n,
        1
    );
    assert_eq!(
        within(rt.send::<Pong>(Ping { i: 1 }, &id("echo/y")))
            .await
            .unwrap()
            .i,
        1
    );
    within(rt.stop_when_idle()).await.unwrap();
}
