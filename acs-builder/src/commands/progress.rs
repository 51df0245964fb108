//! What a command shows on stderr: log lines (`tracing`, filtered by `-q` / `-v` / RUST_LOG)
//! and how far a long command is: a bar with rate and ETA when stderr is a terminal, a plain
//! line with the same figures every few seconds otherwise (logs, CI; a command that ends
//! sooner prints none), nothing when quiet.
//! Log lines are written around the bar, never through it.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The bar on screen, if any: log lines are printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sends log lines to stderr, suspending the active bar while they are written.
struct AroundTheBar;

impl Write for AroundTheBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|bar| bar.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for AroundTheBar {
    type Writer = AroundTheBar;

    fn make_writer(&'a self) -> Self::Writer {
        AroundTheBar
    }
}

/// Log lines as a command-line tool prints them: notes bare, other levels prefixed.
struct PlainLines;

impl<S, N> FormatEvent<S, N> for PlainLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            Level::DEBUG => write!(writer, "debug: ")?,
            Level::TRACE => write!(writer, "trace: ")?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the log subscriber: warnings only when `quiet`, acs's notes by default, debug
/// with one `-v`, trace with two; RUST_LOG, when set, decides instead.
pub fn init_logging(quiet: bool, verbose: u8) {
    // acs's own events; other crates' only from warnings up.
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,acs_builder=info",
        (false, 1) => "warn,acs_builder=debug",
        (false, _) => "warn,acs_builder=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AroundTheBar)
        .event_format(PlainLines)
        .try_init();
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on stderr (a terminal).
    Bar,
    /// Plain lines through the log (stderr that is not a terminal).
    Lines,
    /// Nothing (`--quiet`, tests).
    Hidden,
}

impl ProgressMode {
    /// A bar when stderr is a terminal, else lines; nothing when `quiet`.
    pub fn for_stderr(quiet: bool) -> Self {
        use std::io::IsTerminal;
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Self::Hidden,
            (false, true) => Self::Bar,
            (false, false) => Self::Lines,
        }
    }
}

struct Lines {
    started: Instant,
    last_line: Option<Instant>,
    /// Units done when last told (for the lines printed between updates).
    done: u64,
    since_start: u64,
}

/// Removes the bar on screen, if any (before a last message).
pub fn clear_bar() {
    if let Ok(active) = ACTIVE_BAR.lock() {
        if let Some(bar) = active.as_ref() {
            bar.finish_and_clear();
        }
    }
}

/// The progress of one count (pairs rendered, rows checked).
pub struct Progress {
    mode: ProgressMode,
    verb: &'static str,
    unit: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    lines: Mutex<Lines>,
}

/// Time between two plain progress lines (and before the first).
const LINE_INTERVAL: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress of `total` `unit`s (`"pairs"`) that are `verb` (`"rendered"`), shown as `mode`
    /// says; `done` units are already done (a resumed build).
    pub fn start(
        mode: ProgressMode,
        verb: &'static str,
        unit: &'static str,
        done: u64,
        total: u64,
    ) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = format!(
                "{verb} {{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta_precise}}, \
                 {{per_sec}}] {{msg}}"
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.set_position(done);
            bar.reset_eta();
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = Some(bar.clone());
            }
            bar
        });
        Self {
            mode,
            verb,
            unit,
            total,
            bar,
            lines: Mutex::new(Lines {
                started: Instant::now(),
                last_line: None,
                done,
                since_start: 0,
            }),
        }
    }

    /// Progress that shows nothing.
    pub fn hidden() -> Self {
        Self::start(ProgressMode::Hidden, "", "", 0, 0)
    }

    /// `done` of the total are done; `since_start` of them in this run (for the rate).
    pub fn update(&self, done: u64, since_start: u64) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.done = done;
            lines.since_start = since_start;
        }
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                }
            }
            ProgressMode::Lines => self.line(""),
        }
    }

    /// Where the work in hand is (e.g. "batch 2/5, step 12/25"): beside the bar, or in the
    /// next plain line (which this prints when one is due, so that a long first batch shows).
    pub fn step(&self, detail: String) {
        match self.mode {
            ProgressMode::Hidden => {}
            ProgressMode::Bar => self.message(detail),
            ProgressMode::Lines => self.line(&format!("; {detail}")),
        }
    }

    /// A plain progress line, when the last is at least [`LINE_INTERVAL`] old.
    fn line(&self, detail: &str) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        let now = Instant::now();
        let since = lines.last_line.unwrap_or(lines.started);
        if now - since < LINE_INTERVAL {
            return;
        }
        lines.last_line = Some(now);
        let done = lines.done;
        let elapsed = (now - lines.started).as_secs_f64();
        let rate = lines.since_start as f64 / elapsed.max(1e-9);
        let eta = match self.total.saturating_sub(done) {
            0 => String::new(),
            left if rate > 0.0 => format!(", ETA {}", seconds(left as f64 / rate)),
            _ => String::new(),
        };
        tracing::info!(
            "{} {done}/{} {} ({rate:.2} {}/s{eta}){detail}",
            self.verb,
            self.total,
            self.unit,
            self.unit
        );
    }

    /// Shows `message` beside the bar (e.g. the UNet step of the current batch).
    pub fn message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Ok(mut active) = ACTIVE_BAR.lock() {
                *active = None;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `95 s`, `12 min 5 s`, `2 h 3 min`.
fn seconds(value: f64) -> String {
    let total = value.round() as u64;
    match total {
        0..=99 => format!("{total} s"),
        100..=5999 => format!("{} min {} s", total / 60, total % 60),
        _ => format!("{} h {} min", total / 3600, total % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(4.4), "4 s");
        assert_eq!(seconds(725.0), "12 min 5 s");
        assert_eq!(seconds(7380.0), "2 h 3 min");
    }
}
