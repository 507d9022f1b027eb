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
//! Why [`tune`]: see [`PURGE_DELAY_MS`].

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

/// Applies Warren's allocator settings ([`PURGE_DELAY_MS`]). Call once, early in `main`; an
/// environment variable `MIMALLOC_PURGE_DELAY` set by the operator wins.
#[allow(unsafe_code)] // one FFI call into mimalloc
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: setting an option is thread-safe in mimalloc and takes effect for later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
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

    #[test]
    fn tune_sets_the_purge_delay_unless_the_operator_did() {
        let before = purge_delay_ms();
        tune();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            assert_eq!(purge_delay_ms(), before);
        } else {
            assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        }
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
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "allocator::tests::option_15_is_the_purge_delay",
                "--nocapture",
            ])
            .env("WARREN_ALLOC_PROBE", "1")
            .env("MIMALLOC_PURGE_DELAY", "1234")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("purge delay: 1234\n"), "{text}");
    }
}
