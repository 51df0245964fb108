//! Tables for the column-mapped sources: the rows of a CSV, JSONL or Parquet file as text
//! fields under column names. A row that cannot be read (bad UTF-8, a line that is not a JSON
//! object) becomes a reject; a file that cannot be read at all is an error.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::csv_pairs::read_csv;
use super::{quoted_names, text_lines, Origin, Reject, SourceBatch};
use crate::error::AcsError;
use crate::manifest::TableFormat;

/// One row: where it came from and its fields (`None`: missing, null or blank).
#[derive(Debug, Clone)]
pub struct TableRow {
    /// File and line (CSV, JSONL) or data row (Parquet).
    pub origin: Origin,
    values: Vec<Option<String>>,
}

impl TableRow {
    /// The field of column `index`, trimmed; `None` when absent or blank.
    pub fn get(&self, index: Option<usize>) -> Option<String> {
        index
            .and_then(|i| self.values.get(i).cloned().flatten())
            .filter(|v| !v.trim().is_empty())
    }
}

/// A whole table.
#[derive(Debug, Clone)]
pub struct Table {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: TableFormat,
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// Columns that do not hold text (Parquet columns of other types: their values are cast).
    pub non_text: Vec<(String, String)>,
    /// The readable rows, in file order.
    pub rows: Vec<TableRow>,
}

impl Table {
    /// Reads `path` as `format`; unreadable rows go to `batch.rejects`.
    pub fn read(
        path: &Path,
        format: TableFormat,
        batch: &mut SourceBatch,
    ) -> Result<Self, AcsError> {
        match format {
            TableFormat::Csv => {
                let (columns, records) = read_csv(path, batch)?;
                let rows = records
                    .into_iter()
                    .map(|r| TableRow {
                        origin: r.origin,
                        values: r.fields,
                    })
                    .collect();
                Ok(Self {
                    path: path.to_path_buf(),
                    format,
                    columns,
                    non_text: Vec::new(),
                    rows,
                })
            }
            TableFormat::Jsonl => read_jsonl(path, batch),
            TableFormat::Parquet => {
                // The Parquet reader can panic on malformed files: that is bad input.
                acs_schema::guard(|| read_parquet(path)).unwrap_or_else(|panic| {
                    Err(AcsError::input(format!(
                        "{}: not a readable Parquet file (the reader failed: {panic})",
                        path.display()
                    )))
                })
            }
        }
    }

    /// The index of the first column named (case-insensitively) like one of `names`.
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|name| {
            self.columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(name))
        })
    }

    /// The error for a required column that the table lacks: `what` names it (e.g.
    /// "`prompt`"), `why` says which mapping asked for it.
    pub fn missing(&self, what: &str, why: &str) -> AcsError {
        let found = quoted_names(&self.columns);
        AcsError::input(match self.format {
            TableFormat::Csv => format!(
                "{}:1: the header must name {what} ({why}; found: {found})",
                self.path.display()
            ),
            _ => format!(
                "{}: no {what} column ({why}; found: {found})",
                self.path.display()
            ),
        })
    }

    /// Refuses a prompt column of another type than text (a Parquet list, a number).
    pub fn require_text(&self, index: usize) -> Result<(), AcsError> {
        let name = &self.columns[index];
        match self.non_text.iter().find(|(n, _)| n == name) {
            Some((_, data_type)) => Err(AcsError::input(format!(
                "{}: column `{name}` is {data_type}, not a string column",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }
}

/// A JSON value as a field: strings as they are, numbers and booleans as their text, lists of
/// scalars joined with ", " (e.g. a list of categories), other values as JSON.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => Some(
            items
                .iter()
                .filter_map(field_text)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

fn read_jsonl(path: &Path, batch: &mut SourceBatch) -> Result<Table, AcsError> {
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for line in text_lines(path)? {
        let (origin, text) = match line {
            Ok(line) => line,
            Err(reject) => {
                batch.rejects.push(reject);
                continue;
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => {
                for key in object.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
                objects.push((origin, object));
            }
            Ok(_) => batch
                .rejects
                .push(Reject::at(&origin, "invalid-row", "not a JSON object")),
            Err(e) => batch.rejects.push(Reject::at(
                &origin,
                "invalid-row",
                super::json_line_error(&e),
            )),
        }
    }
    let rows = objects
        .into_iter()
        .map(|(origin, object)| TableRow {
            origin,
            values: columns
                .iter()
                .map(|c| object.get(c).and_then(field_text))
                .collect(),
        })
        .collect();
    Ok(Table {
        path: path.to_path_buf(),
        format: TableFormat::Jsonl,
        columns,
        non_text: Vec::new(),
        rows,
    })
}

fn read_parquet(path: &Path) -> Result<Table, AcsError> {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let fail = |e: &dyn std::fmt::Display| {
        AcsError::input(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| AcsError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(|e| fail(&e))?;
    let schema = builder.schema().clone();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let non_text = schema
        .fields()
        .iter()
        .filter(|f| {
            !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        })
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let reader = builder.build().map_err(|e| fail(&e))?;
    let mut rows = Vec::new();
    for record_batch in reader {
        let record_batch = record_batch.map_err(|e| fail(&e))?;
        let texts: Vec<Option<StringArray>> = record_batch
            .columns()
            .iter()
            .map(|array| {
                arrow::compute::cast(array, &DataType::Utf8)
                    .ok()
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
            })
            .collect();
        for i in 0..record_batch.num_rows() {
            let values = texts
                .iter()
                .map(|column| {
                    column
                        .as_ref()
                        .filter(|a| a.is_valid(i))
                        .map(|a| a.value(i).to_owned())
                })
                .collect();
            rows.push(TableRow {
                origin: Origin {
                    file: path.to_path_buf(),
                    line: rows.len() + 1,
                    id: None,
                },
                values,
            });
        }
    }
    Ok(Table {
        path: path.to_path_buf(),
        format: TableFormat::Parquet,
        columns,
        non_text,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_tables_take_every_key_and_scalar_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"a\", \"seed\": 7}\n[1]\n{\"prompt\": \"b\", \"categories\": [\"hate\", \"violence\"], \"x\": null}\n{broken\n",
        )
        .unwrap();
        let mut batch = SourceBatch::default();
        let table = Table::read(&path, TableFormat::Jsonl, &mut batch).unwrap();
        assert_eq!(table.columns, ["prompt", "seed", "categories", "x"]);
        assert_eq!(table.rows.len(), 2);
        let seed = table.column(&["SEED"]);
        assert_eq!(table.rows[0].get(seed).as_deref(), Some("7"));
        let categories = table.column(&["categories"]);
        assert_eq!(
            table.rows[1].get(categories).as_deref(),
            Some("hate, violence")
        );
        assert_eq!(table.rows[1].get(table.column(&["x"])), None);
        assert_eq!(table.rows[1].origin.line, 3);
        let reasons: Vec<usize> = batch.rejects.iter().map(|r| r.line).collect();
        assert_eq!(reasons, [2, 4]);
        // serde_json's "line 1" of the one-line document is not the file's line 4.
        let detail = &batch.rejects[1].detail;
        assert!(
            detail.ends_with("(column 2)") && !detail.contains("line 1"),
            "{detail}"
        );
        let err = table.missing("`adv_prompt`", "preset mma").to_string();
        assert!(
            err.contains("t.jsonl: no `adv_prompt` column (preset mma; found: \"prompt\""),
            "{err}"
        );
    }
}
