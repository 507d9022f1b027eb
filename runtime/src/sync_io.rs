//! Synchronous versions of the blocking `wasi:io` functions, for the host's second linker.
//!
//! wasmtime runs an instance without a fiber (a plain call on the caller's stack, no fiber stack
//! pinned per live store) only when none of the functions it imports is async. A Rust guest
//! imports a few WASI functions that wasmtime-wasi defines as async because they may block
//! (`blocking-flush` on stderr for a panic message, `pollable.block`, the stream destructors),
//! even when it never calls `send` or `publish`. On the sync linker these are replaced by the
//! versions here, which run the same host code and require it to finish at once: a plugin on that
//! linker has no file or socket, only stdin (closed), stdout and stderr (a [`LogPipe`] that
//! is always ready), so nothing it can reach ever has to wait. Should a stream ever not be ready,
//! the call traps with a clear message instead of blocking the runtime's thread.
//!
//! [`LogPipe`]: crate::logpipe::LogPipe

use std::future::Future;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    self as wit, Host as _, HostInputStream, HostOutputStream,
};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamResult};

use crate::host::StoreState;

/// The `wasi:io` version wasmtime-wasi 48 defines (guests importing older 0.2 versions resolve to
/// it by semver).
const IO_VERSION: &str = "0.2.12";

/// Runs `f` to completion if it is ready now; a WASI call that would wait traps.
fn at_once<F: Future>(what: &str, f: F) -> wasmtime::Result<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(wasmtime::format_err!(
            "`{what}` would block, which an instance without async imports cannot do"
        )),
    }
}

/// A stream result as the guest sees it (a trap stays a trap).
fn lower<T>(
    table: &mut wasmtime::component::ResourceTable,
    r: StreamResult<T>,
) -> wasmtime::Result<Result<T, wit::StreamError>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => Ok(Err(table.convert_stream_error(e)?)),
    }
}

type Out = Resource<DynOutputStream>;
type In = Resource<DynInputStream>;

/// Shadows every async function of `wasi:io/poll` and `wasi:io/streams` in `linker` with a
/// synchronous one (the linker must allow shadowing).
pub(crate) fn add_sync_io(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut poll = linker.instance(&format!("wasi:io/poll@{IO_VERSION}"))?;
    poll.func_wrap("poll", |mut cx, (list,): (Vec<Resource<DynPollable>>,)| {
        let table = &mut cx.data_mut().table;
        let ready = at_once(
            "poll",
            wasmtime_wasi_io::bindings::wasi::io::poll::Host::poll(table, list),
        )??;
        Ok((ready,))
    })?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut cx, (p,): (Resource<DynPollable>,)| {
            at_once(
                "pollable.block",
                HostPollable::block(&mut cx.data_mut().table, p),
            )??;
            Ok(())
        },
    )?;
    poll.func_wrap(
        "[method]pollable.ready",
        |mut cx, (p,): (Resource<DynPollable>,)| {
            let table = &mut cx.data_mut().table;
            Ok((at_once("pollable.ready", HostPollable::ready(table, p))??,))
        },
    )?;

    let mut streams = linker.instance(&format!("wasi:io/streams@{IO_VERSION}"))?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut cx, rep| {
            let table = &mut cx.data_mut().table;
            at_once(
                "output-stream drop",
                HostOutputStream::drop(table, Resource::new_own(rep)),
            )?
        },
    )?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut cx, rep| {
            let table = &mut cx.data_mut().table;
            at_once(
                "input-stream drop",
                HostInputStream::drop(table, Resource::new_own(rep)),
            )?
        },
    )?;
    // Every blocking stream method: run the host's own implementation at once, and hand the
    // guest its `result<_, stream-error>`.
    macro_rules! blocking {
        ($name:literal, $call:path, ($($arg:ident),+ $(,)?): $types:ty) => {
            streams.func_wrap(
                concat!("[method]", $name),
                |mut cx, ($($arg,)+): $types| {
                    let table = &mut cx.data_mut().table;
                    let r = at_once($name, $call(table, $($arg),+))?;
                    Ok((lower(table, r)?,))
                },
            )?;
        };
    }
    blocking!("output-stream.blocking-flush", HostOutputStream::blocking_flush, (s,): (Out,));
    blocking!(
        "output-stream.blocking-write-and-flush",
        HostOutputStream::blocking_write_and_flush,
        (s, bytes): (Out, Vec<u8>)
    );
    blocking!(
        "output-stream.blocking-write-zeroes-and-flush",
        HostOutputStream::blocking_write_zeroes_and_flush,
        (s, len): (Out, u64)
    );
    blocking!(
        "output-stream.blocking-splice",
        HostOutputStream::blocking_splice,
        (d, s, len): (Out, In, u64)
    );
    blocking!("input-stream.blocking-read", HostInputStream::blocking_read, (s, len): (In, u64));
    blocking!("input-stream.blocking-skip", HostInputStream::blocking_skip, (s, len): (In, u64));
    Ok(())
}
