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
    use arrow_schema::DataType;
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
        let mut cells: Vec<std::vec::IntoIter<Option<String>>> = record_batch
            .columns()
            .iter()
            .map(|array| column_texts(array.as_ref()).into_iter())
            .collect();
        for _ in 0..record_batch.num_rows() {
            let values = cells.iter_mut().map(|c| c.next().flatten()).collect();
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

/// The text of each cell of a Parquet column: strings as they are, numbers in Rust's shortest
/// round-trip form (`2.0`, `0.1`, `7`), booleans as `true` / `false`; `None` for a null and
/// for every cell of a type that has no one text form (lists, structs, binary, dates). Written
/// here rather than with arrow's `cast` kernel, whose crate (with arrow-ord) adds minutes to
/// the first build for this one call.
fn column_texts(array: &dyn arrow_array::Array) -> Vec<Option<String>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType;

    fn each<T: ToString>(
        array: &dyn arrow_array::Array,
        value: impl Fn(usize) -> T,
    ) -> Vec<Option<String>> {
        (0..array.len())
            .map(|row| array.is_valid(row).then(|| value(row).to_string()))
            .collect()
    }
    fn float(v: impl std::fmt::Debug) -> String {
        format!("{v:?}")
    }
    match array.data_type() {
        DataType::Utf8 => each(array, |r| array.as_string::<i32>().value(r)),
        DataType::LargeUtf8 => each(array, |r| array.as_string::<i64>().value(r)),
        DataType::Utf8View => each(array, |r| array.as_string_view().value(r)),
        DataType::Boolean => each(array, |r| array.as_boolean().value(r)),
        DataType::Int8 => each(array, |r| array.as_primitive::<Int8Type>().value(r)),
        DataType::Int16 => each(array, |r| array.as_primitive::<Int16Type>().value(r)),
        DataType::Int32 => each(array, |r| array.as_primitive::<Int32Type>().value(r)),
        DataType::Int64 => each(array, |r| array.as_primitive::<Int64Type>().value(r)),
        DataType::UInt8 => each(array, |r| array.as_primitive::<UInt8Type>().value(r)),
        DataType::UInt16 => each(array, |r| array.as_primitive::<UInt16Type>().value(r)),
        DataType::UInt32 => each(array, |r| array.as_primitive::<UInt32Type>().value(r)),
        DataType::UInt64 => each(array, |r| array.as_primitive::<UInt64Type>().value(r)),
        DataType::Float16 => each(array, |r| {
            float(array.as_primitive::<Float16Type>().value(r).to_f32())
        }),
        DataType::Float32 => each(array, |r| {
            float(array.as_primitive::<Float32Type>().value(r))
        }),
        DataType::Float64 => each(array, |r| {
            float(array.as_primitive::<Float64Type>().value(r))
        }),
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let values = column_texts(dictionary.values().as_ref());
            let keys = dictionary.normalized_keys();
            (0..array.len())
                .map(|row| {
                    array
                        .is_valid(row)
                        .then(|| values.get(keys[row]).cloned().flatten())
                        .flatten()
                })
                .collect()
        }
        _ => vec![None; array.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_cells_read_as_text_numbers_in_shortest_form() {
        use arrow_array::types::Int32Type;
        use arrow_array::*;

        let texts = |array: &dyn Array| column_texts(array);
        let some = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(
            texts(&Int64Array::from(vec![Some(7), None, Some(-3)])),
            some(&[Some("7"), None, Some("-3")])
        );
        assert_eq!(
            texts(&Float64Array::from(vec![2.0, 0.1, 1e20])),
            some(&[Some("2.0"), Some("0.1"), Some("1e20")])
        );
        assert_eq!(
            texts(&Float32Array::from(vec![0.1f32])),
            some(&[Some("0.1")])
        );
        assert_eq!(
            texts(&BooleanArray::from(vec![true, false])),
            some(&[Some("true"), Some("false")])
        );
        assert_eq!(
            texts(&LargeStringArray::from(vec!["a cat"])),
            some(&[Some("a cat")])
        );
        let dictionary: DictionaryArray<Int32Type> =
            vec![Some("red"), None, Some("blue"), Some("red")]
                .into_iter()
                .collect();
        assert_eq!(
            texts(&dictionary),
            some(&[Some("red"), None, Some("blue"), Some("red")])
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        assert_eq!(texts(&list), some(&[None]));
    }

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
