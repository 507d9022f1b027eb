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

pub use mimalloc::MiMalloc;

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
