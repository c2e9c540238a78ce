//! The proxy's memory allocator, and giving freed memory back to the OS.
//!
//! A sidecar lives as long as its pod. After a burst (thousands of
//! connections opened and closed), glibc's malloc keeps the freed pages:
//! it returns memory only from the top of each arena, and the burst's
//! small, interleaved allocations leave the freed ones stranded below live
//! ones, so the proxy stayed at its peak (~200 MB after 9,750 idle mTLS
//! connections) for the rest of its life (issue #14). The options were
//! measured in `bench/` (`--only http1,idle`, figures in bench/README.md,
//! "Memory that comes back"); this module holds the choice.
//!
//! With the `jemalloc` feature, jemalloc is the global allocator and
//! [`configure`] turns on its background purging thread and short decay
//! times at start-up, through jemalloc's `mallctl` interface (safe wrappers
//! from `tikv-jemalloc-ctl`): freed pages are returned within about a
//! second even when the proxy is idle and makes no allocator call that
//! would purge them itself. The user sets nothing (no `MALLOC_CONF`).

/// How long freed ("dirty") pages stay resident before the background
/// thread gives them back, in ms. jemalloc's default is 10 s; a shorter
/// time costs a few more page faults under churn, and returns a burst's
/// memory well within issue #14's 30 s.
#[cfg(feature = "jemalloc")]
pub const DIRTY_DECAY_MS: isize = 1000;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator in use, for the logs and `/config`.
pub const NAME: &str = if cfg!(feature = "jemalloc") { "jemalloc" } else { "system" };

/// Sets the allocator up to give freed memory back by itself. Call once at
/// start-up, before the runtime's threads exist. Errors name the setting.
pub fn configure() -> Result<(), String> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{Access as _, AsName as _, background_thread, max_background_threads};
        let set = |name: &str, v: isize| {
            format!("{name}\0").as_str().name().write(v).map_err(|e| format!("jemalloc {name} = {v}: {e}"))
        };
        // Arenas created from now on (one per thread that allocates, up
        // to 4 per CPU), and those that exist already.
        set("arenas.dirty_decay_ms", DIRTY_DECAY_MS)?;
        // Skip the "muzzy" stage: MADV_FREE'd pages still count in RSS
        // until the kernel needs them, so go straight to MADV_DONTNEED.
        set("arenas.muzzy_decay_ms", 0)?;
        let narenas =
            tikv_jemalloc_ctl::arenas::narenas::read().map_err(|e| format!("jemalloc arenas.narenas: {e}"))?;
        for i in 0..narenas {
            // An arena not yet initialized refuses (EFAULT); it will
            // take the defaults set above when it is.
            let _ = set(&format!("arena.{i}.dirty_decay_ms"), DIRTY_DECAY_MS);
            let _ = set(&format!("arena.{i}.muzzy_decay_ms"), 0);
        }
        // One purging thread is plenty for a sidecar.
        max_background_threads::write(1).map_err(|e| format!("jemalloc max_background_threads = 1: {e}"))?;
        background_thread::write(true).map_err(|e| format!("jemalloc background_thread = true: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn configures_without_error() {
        super::configure().expect("configure");
        #[cfg(feature = "jemalloc")]
        {
            use tikv_jemalloc_ctl::{Access as _, AsName as _};
            assert!(tikv_jemalloc_ctl::background_thread::read().expect("read background_thread"));
            let dirty: isize = "arenas.dirty_decay_ms\0".name().read().expect("read arenas.dirty_decay_ms");
            assert_eq!(dirty, super::DIRTY_DECAY_MS);
        }
    }
}
