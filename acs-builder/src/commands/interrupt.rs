//! Ctrl-C (SIGINT) and SIGTERM: one line saying how far a build got and how to go on, then exit
//! 130 (143 for SIGTERM) as shells expect. Stopping at any moment is safe: shards and the
//! manifest are written under temporary names and renamed when complete, and the journal
//! records only finished batches, so rerunning the same command resumes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pairs rendered so far and in all, of the build in progress (`u64::MAX`: none).
static DONE: AtomicU64 = AtomicU64::new(u64::MAX);
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Records how far the build in progress is, for the line printed on an interrupt.
pub fn record_progress(done: u64, total: u64) {
    TOTAL.store(total, Ordering::Relaxed);
    DONE.store(done, Ordering::Relaxed);
}

/// What to print when interrupted.
fn message() -> String {
    match (DONE.load(Ordering::Relaxed), TOTAL.load(Ordering::Relaxed)) {
        (u64::MAX, _) => "interrupted".to_owned(),
        (done, total) => format!(
            "interrupted after {done} of {total} {}; run the same command to resume",
            if total == 1 { "pair" } else { "pairs" }
        ),
    }
}

/// Watches for SIGINT and SIGTERM from now on (call once, first thing in `main`). Does nothing
/// where signals cannot be registered.
pub fn exit_on_signal() {
    let interrupted = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicBool::new(false));
    let registered = [
        (signal_hook::consts::SIGINT, &interrupted),
        (signal_hook::consts::SIGTERM, &terminated),
    ]
    .into_iter()
    .all(|(signal, flag)| signal_hook::flag::register(signal, Arc::clone(flag)).is_ok());
    if !registered {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("acs-signals".into())
        .spawn(move || loop {
            let code = if interrupted.load(Ordering::Relaxed) {
                130
            } else if terminated.load(Ordering::Relaxed) {
                143
            } else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            crate::commands::progress::clear_bar();
            eprintln!("{}", message());
            std::process::exit(code);
        });
    drop(spawned);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far_the_build_got() {
        assert_eq!(message(), "interrupted");
        record_progress(3, 18);
        assert_eq!(
            message(),
            "interrupted after 3 of 18 pairs; run the same command to resume"
        );
    }
}
