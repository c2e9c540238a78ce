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

/// What the allocator holds, in bytes (jemalloc's `stats.*`), for
/// `/metrics`: how much of the RSS is live data and how much is the
/// allocator's own (freed pages not yet given back, metadata).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes the proxy has allocated and not freed.
    pub allocated: u64,
    /// Bytes in pages that hold live allocations (allocated + fragmentation).
    pub active: u64,
    /// Bytes physically resident in pages the allocator maps, its
    /// metadata and freed pages not yet purged included.
    pub resident: u64,
    /// The allocator's own bookkeeping, never given back.
    pub metadata: u64,
}

impl Stats {
    /// `(kind label, bytes)` for each figure, in exposition order.
    pub fn kinds(&self) -> [(&'static str, u64); 4] {
        [
            ("allocated", self.allocated),
            ("active", self.active),
            ("resident", self.resident),
            ("metadata", self.metadata),
        ]
    }
}

/// The allocator's figures now; `None` with the system allocator, which
/// keeps none.
#[cfg(feature = "jemalloc")]
pub fn stats() -> Option<Stats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The figures are a snapshot refreshed by advancing the epoch.
    epoch::advance().ok()?;
    let read = |v: Result<usize, tikv_jemalloc_ctl::Error>| v.ok().map(|v| v as u64);
    Some(Stats {
        allocated: read(stats::allocated::read())?,
        active: read(stats::active::read())?,
        resident: read(stats::resident::read())?,
        metadata: read(stats::metadata::read())?,
    })
}

/// The allocator's figures now; `None` with the system allocator, which
/// keeps none.
#[cfg(not(feature = "jemalloc"))]
pub fn stats() -> Option<Stats> {
    None
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

    /// `.cargo/config.toml` compiles `slab_sizes:4096-4096:16` into
    /// jemalloc: 4 KiB allocations in 64 KiB slabs, not a slab (and a
    /// descriptor kept for ever) each.
    #[cfg(feature = "jemalloc")]
    #[test]
    fn four_kib_allocations_share_slabs() {
        use tikv_jemalloc_ctl::{Access as _, AsName as _};
        let nbins: u32 = "arenas.nbins\0".name().read().expect("arenas.nbins");
        let slab = (0..nbins).find_map(|i| {
            let size: usize = format!("arenas.bin.{i}.size\0").as_str().name().read().ok()?;
            let slab: Option<usize> = format!("arenas.bin.{i}.slab_size\0").as_str().name().read().ok();
            (size == 4096).then_some(slab)?
        });
        assert_eq!(slab, Some(64 * 1024), "jemalloc was built without .cargo/config.toml's malloc_conf");
    }

    #[test]
    fn stats_are_consistent() {
        let stats = super::stats();
        assert_eq!(stats.is_some(), cfg!(feature = "jemalloc"), "jemalloc keeps stats, the system allocator none");
        let Some(s) = stats else { return };
        let held = vec![7u8; 1 << 20];
        let more = super::stats().expect("stats");
        assert!(more.allocated >= s.allocated + (1 << 20) - 4096, "{s:?} then {more:?}");
        assert!(more.allocated <= more.active && more.active <= more.resident, "{more:?}");
        assert!(more.metadata > 0, "{more:?}");
        drop(held);
    }
}
