//! Reading typed values out of a schema v1 record batch, with errors that name the file, the
//! row and the column.

use std::path::Path;

use arrow_array::RecordBatch;
use arrow_array::{Array, BinaryArray, Int32Array, ListArray, StringArray, StructArray};

use crate::error::SchemaError;
use crate::record::ImageBlob;
use crate::schema::{arrow_schema, same_shape, type_name};

/// Where the batch being read comes from: used to name file, row and column in errors.
pub(crate) struct Ctx<'a> {
    /// The file the batch was read from.
    pub file: &'a Path,
    /// The file row index of the batch's first row.
    pub first_row: usize,
}

impl Ctx<'_> {
    pub(crate) fn column_error(&self, column: &str, detail: impl Into<String>) -> SchemaError {
        SchemaError::Column {
            path: self.file.to_path_buf(),
            column: column.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn field_error(
        &self,
        row: usize,
        column: &str,
        detail: impl Into<String>,
    ) -> SchemaError {
        SchemaError::Field {
            path: self.file.to_path_buf(),
            row: self.first_row + row,
            column: column.to_string(),
            detail: detail.into(),
        }
    }

    /// The column `name` of `batch`, downcast to `T` (its shape was checked by `check_schema`).
    pub(crate) fn column<'b, T: 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<&'b T, SchemaError> {
        let array = batch
            .column_by_name(name)
            .ok_or_else(|| self.column_error(name, "missing (required by schema v1)"))?;
        self.downcast(array.as_ref(), name)
    }

    /// A column of [`crate::schema::ADDED_COLUMNS`]: `None` when the shard predates it.
    pub(crate) fn added_column<'b, T: 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<Option<&'b T>, SchemaError> {
        match batch.column_by_name(name) {
            Some(array) => self.downcast(array.as_ref(), name).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn downcast<'b, T: 'static>(
        &self,
        array: &'b dyn Array,
        name: &str,
    ) -> Result<&'b T, SchemaError> {
        array.as_any().downcast_ref::<T>().ok_or_else(|| {
            self.column_error(
                name,
                format!("unexpected Arrow type {}", type_name(array.data_type())),
            )
        })
    }

    pub(crate) fn non_null(
        &self,
        array: &dyn Array,
        row: usize,
        name: &str,
    ) -> Result<(), SchemaError> {
        if array.is_null(row) {
            Err(self.field_error(row, name, "null in a non-nullable column"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn string(
        &self,
        a: &StringArray,
        row: usize,
        name: &str,
    ) -> Result<String, SchemaError> {
        self.non_null(a, row, name)?;
        Ok(a.value(row).to_string())
    }

    pub(crate) fn string_list(
        &self,
        a: &ListArray,
        row: usize,
        name: &str,
    ) -> Result<Vec<String>, SchemaError> {
        self.non_null(a, row, name)?;
        let values: &StringArray = self.downcast(a.values().as_ref(), name)?;
        let range = list_range(a, row);
        let mut out = Vec::with_capacity(range.len());
        for j in range {
            if values.is_null(j) {
                return Err(self.field_error(row, name, "null list item"));
            }
            out.push(values.value(j).to_string());
        }
        Ok(out)
    }

    pub(crate) fn int_list(
        &self,
        a: &ListArray,
        row: usize,
        name: &str,
    ) -> Result<Vec<i32>, SchemaError> {
        self.non_null(a, row, name)?;
        let values: &Int32Array = self.downcast(a.values().as_ref(), name)?;
        let range = list_range(a, row);
        let mut out = Vec::with_capacity(range.len());
        for j in range {
            if values.is_null(j) {
                return Err(self.field_error(row, name, "null list item"));
            }
            out.push(values.value(j));
        }
        Ok(out)
    }

    pub(crate) fn image(
        &self,
        a: &StructArray,
        row: usize,
        name: &str,
    ) -> Result<ImageBlob, SchemaError> {
        if a.is_null(row) {
            return Err(self.field_error(row, name, "null image (expected struct<bytes, path>)"));
        }
        let bytes_name = format!("{name}.bytes");
        let path_name = format!("{name}.path");
        let bytes_col = a
            .column_by_name("bytes")
            .ok_or_else(|| self.column_error(&bytes_name, "missing"))?;
        let path_col = a
            .column_by_name("path")
            .ok_or_else(|| self.column_error(&path_name, "missing"))?;
        let bytes: &BinaryArray = self.downcast(bytes_col.as_ref(), &bytes_name)?;
        let paths: &StringArray = self.downcast(path_col.as_ref(), &path_name)?;
        if bytes.is_null(row) {
            return Err(self.field_error(row, &bytes_name, "null image bytes"));
        }
        Ok(ImageBlob {
            bytes: bytes.value(row).to_vec(),
            path: (!paths.is_null(row)).then(|| paths.value(row).to_string()),
        })
    }

    /// Checks that `batch` has exactly the columns of schema v1, each with the expected shape.
    pub(crate) fn check_schema(&self, batch: &RecordBatch) -> Result<(), SchemaError> {
        let expected = arrow_schema();
        let actual = batch.schema();
        for field in expected.fields() {
            let Some((_, found)) = actual.column_with_name(field.name()) else {
                if crate::schema::ADDED_COLUMNS.contains(&field.name().as_str()) {
                    continue;
                }
                return Err(self.column_error(field.name(), "missing (required by schema v1)"));
            };
            if !same_shape(found.data_type(), field.data_type()) {
                return Err(self.column_error(
                    field.name(),
                    format!(
                        "expected {}, found {}",
                        type_name(field.data_type()),
                        type_name(found.data_type())
                    ),
                ));
            }
        }
        for field in actual.fields() {
            if expected.column_with_name(field.name()).is_none() {
                return Err(self.column_error(field.name(), "not a schema v1 column"));
            }
        }
        Ok(())
    }
}

/// The range of child indices of list row `row` (offsets were validated by Arrow).
fn list_range(a: &ListArray, row: usize) -> std::ops::Range<usize> {
    let offsets = a.value_offsets();
    let start = usize::try_from(offsets[row]).unwrap_or(0);
    let end = usize::try_from(offsets[row + 1]).unwrap_or(start);
    start..end.max(start)
}
