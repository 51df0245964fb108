//! The runtime's own error type. Its messages name files, values and the runtime's own
//! parameters, never a caller's configuration keys: a caller that knows where a value came
//! from adds that context (see [`Setting`]).

use std::fmt;
use std::path::Path;

/// A runtime parameter that a caller passes in and that can be out of range for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The number of denoising steps.
    Steps,
    /// The device to run on.
    Device,
    /// A hub repository id.
    Repo,
    /// A hub revision (branch, tag or commit).
    Revision,
    /// The CPU kernel path.
    KernelPath,
    /// Attention control's local blend.
    LocalBlend,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Steps => "steps",
            Self::Device => "device",
            Self::Repo => "repo",
            Self::Revision => "revision",
            Self::KernelPath => "kernel_path",
            Self::LocalBlend => "local_blend",
        })
    }
}

/// Why the runtime could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A model folder, file or download that cannot be used as it is (the user's to fix).
    #[error("{0}")]
    Input(String),
    /// A value of `setting` that this model or build cannot take.
    #[error("{setting}: {reason}")]
    Setting {
        /// Which parameter.
        setting: Setting,
        /// Why it cannot be used.
        reason: String,
    },
    /// Downloaded bytes that do not match the hash the hub published for them.
    #[error("{0}")]
    Integrity(String),
    /// The device ran out of memory (a smaller batch may fit).
    #[error("{0}")]
    OutOfMemory(String),
    /// A failure inside the runtime or candle.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The runtime's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// An input error with a message.
    pub fn input(message: impl Into<String>) -> Self {
        Self::Input(message.into())
    }

    /// An integrity error with a message.
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::Integrity(message.into())
    }

    /// An internal error with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// A value of `setting` that cannot be used, and why.
    pub fn setting(setting: Setting, reason: impl Into<String>) -> Self {
        Self::Setting {
            setting,
            reason: reason.into(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Self::Input(format!("{}: {err}", path.display()))
    }

    /// A candle failure while doing `what`.
    pub fn candle(what: &str, err: candle_core::Error) -> Self {
        let message = candle_message(&err);
        let lower = message.to_ascii_lowercase();
        if lower.contains("out of memory") || lower.contains("out_of_memory") {
            Self::OutOfMemory(format!("{what}: the device ran out of memory ({message})"))
        } else {
            Self::Internal(format!("{what}: {message}"))
        }
    }

    /// The same error with its message passed through `edit` (e.g. to redact a secret).
    pub fn map_message(self, edit: impl Fn(&str) -> String) -> Self {
        match self {
            Self::Input(m) => Self::Input(edit(&m)),
            Self::Integrity(m) => Self::Integrity(edit(&m)),
            Self::Internal(m) => Self::Internal(edit(&m)),
            Self::OutOfMemory(m) => Self::OutOfMemory(edit(&m)),
            Self::Setting { setting, reason } => Self::Setting {
                setting,
                reason: edit(&reason),
            },
        }
    }
}

impl From<serde_json::Error> for RuntimeError {
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(format!("JSON: {err}"))
    }
}

/// candle's message without the backtrace it may carry, on one line.
pub fn candle_message(err: &candle_core::Error) -> String {
    let text = err.to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|line| {
            let line = line.trim_start();
            !(line.starts_with("0:") || line.starts_with("stack backtrace"))
        })
        .collect();
    one_line(&message.join("\n"))
}

/// Folds a multi-line message (candle backtraces, toml snippets) into one line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
