//! One error type for the whole tool, classified by the exit code it maps to (SPEC.md):
//! 1 when the data fails validation thresholds, 2 for usage, input and integrity errors.

use std::path::Path;

pub use crate::runtime::error::{candle_message, one_line};
use crate::runtime::RuntimeError;

/// An error that ends a command; its message is one line naming the file / field and reason.
#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    /// Bad command line, manifest, prompt file, model folder or output folder (exit 2).
    #[error("{0}")]
    Input(String),
    /// A dataset on disk does not match its manifest or schema (exit 2).
    #[error("{0}")]
    Integrity(String),
    /// The data is readable but fails the validation thresholds (exit 1).
    #[error("{0}")]
    Invalid(String),
    /// A failure inside acs itself or the runtime (exit 2, reported, never a panic).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AcsError {
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

    /// An I/O failure on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Self::Input(format!("{}: {err}", path.display()))
    }

    /// The same error with `note` appended to its message.
    pub fn with_note(self, note: &str) -> Self {
        match self {
            Self::Invalid(m) => Self::Invalid(format!("{m}{note}")),
            Self::Input(m) => Self::Input(format!("{m}{note}")),
            Self::Integrity(m) => Self::Integrity(format!("{m}{note}")),
            Self::Internal(m) => Self::Internal(format!("{m}{note}")),
        }
    }

    /// The process exit code of SPEC.md.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 1,
            Self::Input(_) | Self::Integrity(_) | Self::Internal(_) => 2,
        }
    }
}

impl From<serde_json::Error> for AcsError {
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(format!("JSON: {err}"))
    }
}

impl From<RuntimeError> for AcsError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Input(m) => Self::Input(m),
            RuntimeError::Integrity(m) => Self::Integrity(m),
            RuntimeError::Internal(m) => Self::Internal(m),
            RuntimeError::OutOfMemory(m) => Self::Input(m),
            setting @ RuntimeError::Setting { .. } => Self::Input(setting.to_string()),
        }
    }
}

impl From<acs_schema::SchemaError> for AcsError {
    fn from(err: acs_schema::SchemaError) -> Self {
        Self::Integrity(one_line(&err.to_string()))
    }
}

/// `message` without a leading "`path`: " (for messages that name the file themselves).
pub fn without_path(message: &str, path: &std::path::Path) -> String {
    let prefix = format!("{}: ", path.display());
    one_line(message.strip_prefix(&prefix).unwrap_or(message))
}

/// A TOML syntax error as one line, its position named once: `file:line:column: message in
/// `the line``.
pub fn toml_error(text: &str, origin: &str, err: &toml::de::Error) -> AcsError {
    let message = one_line(err.message().trim_end_matches('\n'));
    match err.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            // line_start follows a '\n' (or is 0), so it is a char boundary.
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            let shown: String = source.chars().take(60).collect();
            let quoted = if shown.is_empty() {
                String::new()
            } else {
                format!(" in `{shown}`")
            };
            AcsError::input(format!("{origin}:{line}:{column}: {message}{quoted}"))
        }
        None => AcsError::input(format!("{origin}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_their_position_once() {
        let text = "[sampling]\nsteps = [\n";
        let err = toml::from_str::<toml::Table>(text).unwrap_err();
        let message = toml_error(text, "m.toml", &err).to_string();
        assert!(message.starts_with("m.toml:2:"), "{message}");
        assert!(message.ends_with("in `steps = [`"), "{message}");
        assert!(
            !message.contains("line") && !message.contains('|'),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}
