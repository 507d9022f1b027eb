//! The global allocator Warren's binaries use (feature `mimalloc`): an embedding application
//! chooses its own, and may use this one.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: warren_runtime::allocator::MiMalloc = warren_runtime::allocator::MiMalloc;
//!
//! fn main() {
//!     warren_runtime::allocator::tune();
//!     // ...
//! }
//! ```
//!
//! Why mimalloc: the runtime allocates per message and per agent, and glibc's free-list
//! consolidation (`malloc_consolidate`) and arena page faults showed up in every profile.
//! Why [`tune`]: see [`PURGE_DELAY_MS`] and [`tune`] itself (no transparent huge pages).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc as a global allocator.
///
/// Unlike the `mimalloc` crate's `MiMalloc`, which passes every request to `mi_malloc_aligned`,
/// a request whose alignment plain `mi_malloc` already guarantees (at most 16 bytes and at most
/// the size, which is nearly all of them) goes to `mi_malloc`. mimalloc 3 serves an aligned
/// request from its fast path only when the size class's current page has a free block; when it
/// has none, or the size is over 1 KiB, and the size is not a power of two, it over-allocates
/// (a 640-byte request takes a block for 1,025 bytes) through a slower path, and the freed block
/// is slower to find again. A wasm chain hop's five boxed futures took that path two times in
/// five: about 150 instructions each instead of 50.
#[derive(Debug, Default, Clone, Copy)]
pub struct MiMalloc;

/// The alignment `mi_malloc` guarantees for any block of at least that size
/// (`MI_MAX_ALIGN_SIZE`: small size classes are whole double words, larger ones multiples of 16).
const MI_MAX_ALIGN_SIZE: usize = 16;

/// Whether `mi_malloc(size)` is aligned enough for `align`.
fn plain(size: usize, align: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks from any
// of its allocation functions, aligned or not); each request is aligned as its layout asks,
// either by `mi_malloc`'s guarantee (`plain`) or by the aligned functions.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: FFI calls with a size and a power-of-two alignment, as mimalloc requires.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, so by mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of this allocator; the new block keeps the alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// How long freed memory stays with the process before mimalloc returns it to the OS: 10 s
/// instead of mimalloc's 1 s. A runtime frees and re-allocates in bursts (mailboxes filling and
/// draining, state documents built and dropped); memory handed back in between has to be faulted
/// in again, and on a virtual machine whose host reclaims freed guest memory each such fault is
/// expensive. On the 2-core VM the benchmarks run on, one run in four of a state round trip spent
/// 0.1 s of kernel time re-faulting memory, and ran at a third of its speed; with the longer delay
/// none did (27 runs each; `runtime/bench/PERFORMANCE.md`). Memory is still returned, 10 s after
/// a burst.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (`mimalloc.h`, v2 and v3), which
/// `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// `mi_option_allow_thp` in mimalloc's `mi_option_e` (v3, the version `libmimalloc-sys` builds by
/// default), which `libmimalloc-sys` does not name.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Applies Warren's allocator settings: the purge delay ([`PURGE_DELAY_MS`]) and no transparent
/// huge pages. Call once, first thing in `main`. An operator's `MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ALLOW_THP` wins over the matching setting.
///
/// Why no huge pages: with them, each first touch of a 2 MiB region of the heap zeroes all of it
/// at once, however little of it is used. On a virtual machine whose host reclaims memory a
/// guest frees, each of those pages is a host fault too, so a process that starts right after
/// another one freed a lot of memory (an interleaved benchmark, a restarted service) pays for
/// 2 MiB wherever it touches 4 KiB. Measured on the 2-core benchmark VM (sixth session,
/// interleaved, 4 repetitions each, native agents): state_roundtrip 281k/s with huge pages off
/// against 143k/s with them (and 41 MiB of RSS against 60), instantiate_many, rpc_concurrent and
/// publish_fanout within the noise of each other; right after AutoGen's state_roundtrip, native
/// state_roundtrip ran at 100-120k/s with huge pages and 280-390k/s without. Wasm agents lose
/// more still (each `Store` scatters ~18 KiB over wasmtime's structures): with huge pages off,
/// wasm instantiate_many ran 38% faster and state_roundtrip 75% (fourth session).
#[allow(unsafe_code)] // FFI calls into mimalloc and prctl
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc and takes effect for later purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // What `MIMALLOC_ALLOW_THP=0` does at start-up: mimalloc stops asking for huge pages for
        // new regions, and the process opts out of them (which also covers regions mimalloc
        // reserved before `main`).
        // SAFETY: as above; `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` only sets a flag of this
        // process and takes integer arguments.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
            prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

const PR_SET_THP_DISABLE: i32 = 41;
const PR_GET_THP_DISABLE: i32 = 42;

#[allow(unsafe_code)]
unsafe extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

/// Whether this process has opted out of transparent huge pages.
#[allow(unsafe_code)] // one prctl call
pub fn huge_pages_disabled() -> bool {
    // SAFETY: `PR_GET_THP_DISABLE` reads a flag of this process.
    unsafe { prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

/// The purge delay in effect, in milliseconds (-1: never).
#[allow(unsafe_code)] // one FFI call into mimalloc
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an option has no preconditions.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of the allocator, plain and aligned, gives blocks aligned as asked, zeroed
    /// when asked, and keeps contents and alignment through `realloc`, growing and shrinking
    /// across the plain/aligned boundary (a size below the alignment is an aligned request).
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_zeroed_and_kept_by_realloc_on_both_paths() {
        let a = MiMalloc;
        let filled = |p: *mut u8, n: usize| {
            // SAFETY: `p` is a live block of at least `n` bytes, written before.
            unsafe { std::slice::from_raw_parts(p, n) }
                .iter()
                .all(|&b| b == 0xa5)
        };
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 16, 24, 48, 640, 1025, 1376, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is used within its size and freed with the
                // layout it has at that point.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "{size}/{align} zeroed"
                    );
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);

                    let mut p = a.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    std::ptr::write_bytes(p, 0xa5, size);
                    for new_size in [size * 3 + 5, size / 2 + 1] {
                        p = a.realloc(p, layout, new_size);
                        assert!(
                            !p.is_null() && (p as usize).is_multiple_of(align),
                            "{size}->{new_size}/{align}"
                        );
                        assert!(filled(p, size.min(new_size)), "{size}->{new_size}/{align}");
                        let grown = Layout::from_size_align(new_size, align).unwrap();
                        p = a.realloc(p, grown, size);
                        assert!(
                            !p.is_null() && (p as usize).is_multiple_of(align),
                            "{new_size}->{size}/{align}"
                        );
                        assert!(filled(p, size.min(new_size)), "{new_size}->{size}/{align}");
                        std::ptr::write_bytes(p, 0xa5, size);
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }

    /// Runs this test binary again on one test, in a fresh process with `env` set, and returns
    /// what it printed.
    fn probe(test: &str, env: &[(&str, &str)]) -> String {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture"])
            .env("WARREN_ALLOC_PROBE", "1")
            .env_remove("MIMALLOC_ALLOW_THP")
            .env_remove("MIMALLOC_PURGE_DELAY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    }

    /// `tune` runs only in a child process: it sets a process flag (`PR_SET_THP_DISABLE`) that
    /// every later child of this test binary would inherit.
    #[test]
    fn tune_sets_purge_delay_and_turns_huge_pages_off_unless_the_operator_did() {
        const TEST: &str = "allocator::tests::tune_sets_purge_delay_and_turns_huge_pages_off_unless_the_operator_did";
        if std::env::var_os("WARREN_ALLOC_TUNE").is_some() {
            tune();
            // SAFETY: reading an option has no preconditions.
            #[allow(unsafe_code)]
            let thp = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
            let disabled = huge_pages_disabled();
            println!(
                "disabled: {disabled}, allow_thp: {thp}, purge: {}",
                purge_delay_ms()
            );
            return;
        }
        if std::env::var_os("WARREN_ALLOC_PROBE").is_some() {
            return;
        }
        let tuned = probe(TEST, &[("WARREN_ALLOC_TUNE", "1")]);
        assert!(
            tuned.contains("disabled: true, allow_thp: 0, purge: 10000\n"),
            "{tuned}"
        );
        // The operator's variables win.
        let operator = probe(
            TEST,
            &[
                ("WARREN_ALLOC_TUNE", "1"),
                ("MIMALLOC_ALLOW_THP", "1"),
                ("MIMALLOC_PURGE_DELAY", "5"),
            ],
        );
        assert!(
            operator.contains("disabled: false, allow_thp: 1, purge: 5\n"),
            "{operator}"
        );
    }

    #[test]
    fn option_43_is_allow_thp() {
        // As for option 15: mimalloc reads `MIMALLOC_ALLOW_THP` into its own enum.
        const TEST: &str = "allocator::tests::option_43_is_allow_thp";
        if std::env::var_os("WARREN_ALLOC_PROBE").is_some() {
            // SAFETY: reading an option has no preconditions.
            #[allow(unsafe_code)]
            let thp = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
            println!("allow_thp: {thp}");
            return;
        }
        let off = probe(TEST, &[("MIMALLOC_ALLOW_THP", "0")]);
        assert!(off.contains("allow_thp: 0\n"), "{off}");
        let on = probe(TEST, &[("MIMALLOC_ALLOW_THP", "1")]);
        assert!(on.contains("allow_thp: 1\n"), "{on}");
    }

    #[test]
    fn option_15_is_the_purge_delay() {
        // mimalloc maps `MIMALLOC_PURGE_DELAY` to its own enum at start-up: this test runs itself
        // again in a fresh process with the variable set, and there reads it back through
        // option 15. A renumbered enum fails here rather than silently setting another option.
        if std::env::var_os("WARREN_ALLOC_PROBE").is_some() {
            println!("purge delay: {}", purge_delay_ms());
            return;
        }
        let text = probe(
            "allocator::tests::option_15_is_the_purge_delay",
            &[("MIMALLOC_PURGE_DELAY", "1234")],
        );
        assert!(text.contains("purge delay: 1234\n"), "{text}");
    }
}
