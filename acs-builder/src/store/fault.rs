//! Fault injection for the crash-safety tests, off unless its environment variables are set:
//!
//! - `ACS_FAULT_ABORT=POINT:N` aborts the process (as abruptly as SIGKILL: no destructors, no
//!   flushing) the N-th time the build reaches the named point (see [`point`]);
//! - `ACS_FAULT_STALL=POINT:N` stops the build there instead (it prints `acs: stalled at
//!   POINT` on stderr and sleeps), for a test to kill it with a real SIGKILL at that moment;
//! - `ACS_FAULT_WRITE_FAIL=N` makes the N-th durable write of the build fail with "No space
//!   left on device", and `ACS_FAULT_WRITE_FAIL=N:read-only` with "Read-only file system"
//!   (see [`check_write`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::AcsError;

static POINT_HITS: AtomicU64 = AtomicU64::new(0);
static STALL_HITS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);

fn spec(variable: &str) -> Option<(String, u64)> {
    let value = std::env::var(variable).ok()?;
    let (name, n) = value.rsplit_once(':')?;
    Some((name.to_owned(), n.parse().ok()?))
}

fn abort_spec() -> &'static Option<(String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| spec("ACS_FAULT_ABORT"))
}

fn stall_spec() -> &'static Option<(String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| spec("ACS_FAULT_STALL"))
}

/// (write number, errno) of the write to fail.
fn write_fail_at() -> Option<(u64, i32)> {
    static AT: OnceLock<Option<(u64, i32)>> = OnceLock::new();
    *AT.get_or_init(|| {
        let value = std::env::var("ACS_FAULT_WRITE_FAIL").ok()?;
        let (n, kind) = value.split_once(':').unwrap_or((&value, "full"));
        let errno = if kind == "read-only" { 30 } else { 28 }; // EROFS, ENOSPC
        Some((n.parse().ok()?, errno))
    })
}

/// A named moment of the build (e.g. `shard-written`); aborts or stalls here when asked to.
pub fn point(name: &str) {
    if let Some((wanted, n)) = abort_spec() {
        if wanted == name && POINT_HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            std::process::abort();
        }
    }
    if let Some((wanted, n)) = stall_spec() {
        if wanted == name && STALL_HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("acs: stalled at {name}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

/// Called before each durable write of the build: fails the chosen one as a full disk would.
pub fn check_write(path: &Path) -> Result<(), AcsError> {
    if let Some((at, errno)) = write_fail_at() {
        if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == at {
            return Err(AcsError::io(path, std::io::Error::from_raw_os_error(errno)));
        }
    }
    Ok(())
}
