//! Process-wide settings made first thing in `main`, before any other thread exists: the
//! allocator's options and the thread counts of candle and rayon.

/// Applies the allocator options and thread settings; call before any other thread starts.
/// (The binary installs mimalloc as its global allocator; the options are harmless otherwise.)
pub fn tune() {
    tune_allocator();
    pin_thread_count();
}

/// mimalloc's `mi_option_purge_delay` (its enum position in mimalloc 2 and 3; the bindings
/// do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    // SAFETY: plain option setters of the global allocator, called before any other thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
    }
}

/// candle asks for its thread count on every matrix multiplication and, unless
/// RAYON_NUM_THREADS is set, answers by parsing /proc/cpuinfo each time; fixing the count once
/// removed about a quarter of the smoke build's UNet time. candle's own worker threads spin
/// 25,000 times after each element-wise operation, taking cores from rayon's workers; 1,000
/// spins cut 10-20 % of small models' UNet time on 2 cores (docs/performance.md).
fn pin_thread_count() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, value) in [
        ("RAYON_NUM_THREADS", threads.to_string()),
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000".to_string()),
    ] {
        if std::env::var_os(name).is_none() {
            // Sound: called first thing in main, before any other thread exists.
            std::env::set_var(name, value);
        }
    }
}
