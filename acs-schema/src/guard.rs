//! Turns a panic inside a third-party decoder into an error. The Parquet reader can panic on
//! hostile files (fuzzing found a division by zero in parquet 60's byte-array reader); a bad
//! file must be an error naming it, never a crash.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook once so that panics inside [`guard`] print nothing (the
/// caller reports them as errors); all other panics reach the previous hook unchanged.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        assert_eq!(guard(|| 7), Ok(7));
        let zero = std::hint::black_box(0);
        let err = guard(|| 1 / zero).unwrap_err();
        assert!(err.contains("divide by zero"), "{err}");
        assert_eq!(
            guard(|| -> i32 { panic!("bad page") }).unwrap_err(),
            "bad page"
        );
    }
}
