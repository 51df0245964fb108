//! The crate's error type: every variant names the file it is about and, when known, the row and
//! the column.

use std::path::{Path, PathBuf};

/// Errors from reading or writing ACS datasets.
///
/// Messages start with the path they concern; row-level errors add the (0-based) row index and
/// the column, e.g. `data/train-00000-of-00001.parquet: row 3, column unsafe_image: expected
/// struct<bytes, path>`. Wrapped library errors are shown in the message rather than exposed as
/// `source()`, so that chained reporters (`anyhow`'s `{:#}`) do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file-system operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error (its `kind()` tells e.g. `NotFound`).
        error: std::io::Error,
    },
    /// The Parquet library rejected a file (not Parquet, corrupt footer, bad page, ...).
    #[error("{}: {error}", path.display())]
    Parquet {
        /// The Parquet file concerned.
        path: PathBuf,
        /// The underlying Parquet error.
        error: parquet::errors::ParquetError,
    },
    /// Arrow rejected data read from or written to a file.
    #[error("{}: {error}", path.display())]
    Arrow {
        /// The file concerned.
        path: PathBuf,
        /// The underlying Arrow error.
        error: arrow_schema::ArrowError,
    },
    /// Polars could not set up a scan.
    #[error("{}: {error}", path.display())]
    Polars {
        /// The file or dataset directory concerned.
        path: PathBuf,
        /// The underlying Polars error.
        error: polars::prelude::PolarsError,
    },
    /// A JSON document (e.g. the manifest) could not be parsed or does not have the expected shape.
    #[error("{}: line {line}, column {column}: {detail}", path.display())]
    Json {
        /// The JSON file concerned.
        path: PathBuf,
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// 1-based column of the error (0 when unknown).
        column: usize,
        /// What is wrong.
        detail: String,
    },
    /// The manifest declares a schema version this crate cannot read.
    #[error(
        "{}: schema_version {found} is not supported by this acs (supports {supported})",
        path.display()
    )]
    UnsupportedVersion {
        /// The manifest file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The version this crate supports ([`crate::SCHEMA_VERSION`]).
        supported: u32,
    },
    /// A column of a file is missing, unexpected or of the wrong type.
    #[error("{}: column {column}: {detail}", path.display())]
    Column {
        /// The file concerned.
        path: PathBuf,
        /// The column name (nested columns as `unsafe_image.bytes`).
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// One value of one row is invalid (e.g. null in a non-nullable column).
    #[error("{}: row {row}, column {column}: {detail}", path.display())]
    Field {
        /// The file concerned.
        path: PathBuf,
        /// 0-based row index within the file.
        row: usize,
        /// The column name (nested columns as `unsafe_image.bytes`).
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// An in-memory record cannot be converted to Arrow (e.g. a column would exceed 2 GiB).
    #[error("record {index}, field {field}: {detail}")]
    Record {
        /// 0-based index of the record in the slice that was passed in.
        index: usize,
        /// The field (column) name.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A value of an in-memory record does not decode (e.g. a tensor of the wrong size).
    #[error("pair {pair_id}, field {field}: {detail}")]
    Value {
        /// The record's pair_id.
        pair_id: String,
        /// The field (column) name.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// An object-store request failed, or an object is not what it should be.
    #[error("{url}: {detail}")]
    Remote {
        /// The object's (or folder's) URL, e.g. `s3://bucket/ds/acs-manifest.json`.
        url: String,
        /// Why, in one line (never a credential).
        detail: String,
    },
    /// Anything else wrong with a file or directory.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl SchemaError {
    /// An [`SchemaError::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    /// A [`SchemaError::Parquet`] for `path`.
    pub fn parquet(path: impl AsRef<Path>, error: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    /// A [`SchemaError::Arrow`] for `path`.
    pub fn arrow(path: impl AsRef<Path>, error: arrow_schema::ArrowError) -> Self {
        Self::Arrow {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    /// An [`SchemaError::Invalid`] for `path`.
    pub fn invalid(path: impl AsRef<Path>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.as_ref().to_path_buf(),
            detail: detail.into(),
        }
    }

    /// The path this error is about, if it concerns a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. }
            | Self::Parquet { path, .. }
            | Self::Arrow { path, .. }
            | Self::Polars { path, .. }
            | Self::Json { path, .. }
            | Self::UnsupportedVersion { path, .. }
            | Self::Column { path, .. }
            | Self::Field { path, .. }
            | Self::Invalid { path, .. } => Some(path),
            Self::Remote { url, .. } => Some(Path::new(url)),
            Self::Record { .. } | Self::Value { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_path_row_and_column() {
        let e = SchemaError::Field {
            path: PathBuf::from("data/train-00000-of-00001.parquet"),
            row: 3,
            column: "unsafe_image".into(),
            detail: "expected struct<bytes, path>".into(),
        };
        assert_eq!(
            e.to_string(),
            "data/train-00000-of-00001.parquet: row 3, column unsafe_image: expected struct<bytes, path>"
        );
        assert_eq!(
            e.path(),
            Some(Path::new("data/train-00000-of-00001.parquet"))
        );
        let v = SchemaError::UnsupportedVersion {
            path: PathBuf::from("d/acs-manifest.json"),
            found: 2,
            supported: 1,
        };
        assert_eq!(
            v.to_string(),
            "d/acs-manifest.json: schema_version 2 is not supported by this acs (supports 1)"
        );
    }
}
