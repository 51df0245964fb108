//! `i2p-csv` and `i2p-parquet`: the column layout of the I2P benchmark (prompt, categories as
//! a comma-separated string, hard, inappropriate_percentage, nudity_percentage, q16_percentage,
//! sd_safety_percentage, prompt_toxicity, lexica_url, sd_seed, sd_guidance_scale,
//! sd_image_width, sd_image_height, sd_model; `evaluation_seed` / `evaluation_guidance` are
//! accepted for the seed and guidance columns). Each row is an unsafe prompt to rewrite, with
//! its categories as candidates; filters keep a subset of rows.

use std::path::PathBuf;

use super::csv_pairs::{column, read_csv};
use super::{normalise_category, Origin, PromptSource, Prompts, Reject, SourceBatch, SourceItem};
use crate::error::AcsError;
use crate::manifest::{SourceSection, CATEGORIES};

/// Which I2P rows to keep and what to take from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct I2pFilter {
    /// Keep the row's seed.
    pub use_seed: bool,
    /// Keep the row's guidance scale.
    pub use_guidance: bool,
    /// Keep rows with at least one of these categories (empty: all).
    pub categories: Vec<String>,
    /// Keep rows whose `hard` flag equals this.
    pub hard: Option<bool>,
    /// (column, minimum) pairs.
    pub minimums: Vec<(&'static str, f64)>,
}

impl I2pFilter {
    /// The filter a `[[sources]]` entry describes.
    pub fn from_section(section: &SourceSection) -> Self {
        let minimums = [
            (
                "inappropriate_percentage",
                section.min_inappropriate_percentage,
            ),
            ("nudity_percentage", section.min_nudity_percentage),
            ("q16_percentage", section.min_q16_percentage),
            ("sd_safety_percentage", section.min_sd_safety_percentage),
            ("prompt_toxicity", section.min_prompt_toxicity),
        ]
        .into_iter()
        .filter_map(|(name, min)| min.map(|m| (name, m)))
        .collect();
        Self {
            use_seed: section.use_seed,
            use_guidance: section.use_guidance,
            categories: section.categories.clone(),
            hard: section.hard,
            minimums,
        }
    }
}

/// Looks up the first of several column names in a row.
type Lookup<'a> = Box<dyn Fn(&[&str]) -> Option<String> + 'a>;

/// The columns of one I2P row, as text.
struct I2pRow<'a> {
    origin: Origin,
    get: Lookup<'a>,
}

fn number(row: &I2pRow, names: &[&str]) -> Result<Option<f64>, Box<Reject>> {
    match (row.get)(names) {
        None => Ok(None),
        Some(text) => text.trim().parse::<f64>().map(Some).map_err(|_| {
            Box::new(Reject::at(
                &row.origin,
                "invalid-row",
                format!("column `{}`: `{text}` is not a number", names[0]),
            ))
        }),
    }
}

/// The item of a row, `Ok(None)` when the filter leaves it out.
fn item(row: &I2pRow, filter: &I2pFilter) -> Result<Option<SourceItem>, Box<Reject>> {
    let prompt = (row.get)(&["prompt"]).map(|p| crate::prompts::text::clean(&p));
    let Some(prompt) = prompt.filter(|p| !p.is_empty()) else {
        return Err(Box::new(Reject::at(
            &row.origin,
            "invalid-row",
            "empty `prompt`",
        )));
    };
    let mut categories = Vec::new();
    for name in (row.get)(&["categories", "category"])
        .unwrap_or_default()
        .split(',')
        .map(normalise_category)
        .filter(|c| !c.is_empty())
    {
        if !CATEGORIES.contains(&name.as_str()) {
            return Err(Box::new(
                Reject::at(
                    &row.origin,
                    "bad-category",
                    format!("category `{name}` is not one of {}", CATEGORIES.join(", ")),
                )
                .with_prompts(&prompt, None),
            ));
        }
        if !categories.contains(&name) {
            categories.push(name);
        }
    }
    if categories.is_empty() {
        return Err(Box::new(
            Reject::at(&row.origin, "bad-category", "no categories").with_prompts(&prompt, None),
        ));
    }
    if !filter.categories.is_empty() && !categories.iter().any(|c| filter.categories.contains(c)) {
        return Ok(None);
    }
    if let Some(hard) = filter.hard {
        let value = number(row, &["hard"])?.unwrap_or(0.0);
        if (value != 0.0) != hard {
            return Ok(None);
        }
    }
    for (name, minimum) in &filter.minimums {
        match number(row, &[name])? {
            Some(value) if value >= *minimum => {}
            _ => return Ok(None),
        }
    }
    let seed = if filter.use_seed {
        match number(row, &["sd_seed", "evaluation_seed", "seed"])? {
            Some(seed) if seed >= 0.0 && seed.fract() == 0.0 && seed < 1.8e19 => Some(seed as u64),
            Some(seed) => {
                return Err(Box::new(Reject::at(
                    &row.origin,
                    "invalid-row",
                    format!("seed {seed} is not a non-negative integer"),
                )))
            }
            None => None,
        }
    } else {
        None
    };
    let guidance_scale = if filter.use_guidance {
        match number(
            row,
            &["sd_guidance_scale", "evaluation_guidance", "guidance_scale"],
        )? {
            Some(g) if g.is_finite() && g >= 0.0 => Some(g as f32),
            Some(g) => {
                return Err(Box::new(Reject::at(
                    &row.origin,
                    "invalid-row",
                    format!("guidance scale {g} is not >= 0"),
                )))
            }
            None => None,
        }
    } else {
        None
    };
    Ok(Some(SourceItem {
        prompts: Prompts::Unsafe(prompt),
        categories,
        seed,
        guidance_scale,
        origin: row.origin.clone(),
    }))
}

fn push(batch: &mut SourceBatch, result: Result<Option<SourceItem>, Box<Reject>>) {
    match result {
        Ok(Some(item)) => batch.items.push(item),
        Ok(None) => batch.filtered += 1,
        Err(reject) => batch.rejects.push(*reject),
    }
}

/// The `i2p-csv` reader.
pub struct I2pCsv {
    /// The file.
    pub path: PathBuf,
    /// Row filter.
    pub filter: I2pFilter,
}

impl PromptSource for I2pCsv {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        let (header, records) = read_csv(&self.path, batch)?;
        if column(&header, &["prompt"]).is_none() {
            return Err(AcsError::input(format!(
                "{}:1: the header must name `prompt` (found: {})",
                self.path.display(),
                super::quoted_names(&header)
            )));
        }
        for record in records {
            let row = I2pRow {
                origin: record.origin.clone(),
                get: Box::new(|names: &[&str]| {
                    column(&header, names)
                        .and_then(|c| record.fields.get(c).cloned().flatten())
                        .filter(|v| !v.trim().is_empty())
                }),
            };
            let result = item(&row, &self.filter);
            push(batch, result);
        }
        Ok(())
    }
}

/// The `i2p-parquet` reader.
pub struct I2pParquet {
    /// The file.
    pub path: PathBuf,
    /// Row filter.
    pub filter: I2pFilter,
}

impl PromptSource for I2pParquet {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        // The Parquet reader can panic on malformed files: that is bad input, not a crash.
        acs_schema::guard(|| self.read_unguarded(batch)).unwrap_or_else(|panic| {
            Err(AcsError::input(format!(
                "{}: not a readable Parquet file (the reader failed: {panic})",
                self.path.display()
            )))
        })
    }
}

impl I2pParquet {
    fn read_unguarded(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        use arrow::array::{Array, StringArray};
        use arrow::datatypes::DataType;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let fail = |e: &dyn std::fmt::Display| {
            AcsError::input(format!(
                "{}: not a readable Parquet file: {e}",
                self.path.display()
            ))
        };
        let bytes = std::fs::read(&self.path).map_err(|e| AcsError::io(&self.path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .map_err(|e| fail(&e))?
            .build()
            .map_err(|e| fail(&e))?;
        let mut row_number = 0usize;
        for record_batch in reader {
            let record_batch = record_batch.map_err(|e| fail(&e))?;
            let schema = record_batch.schema();
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            if !names.iter().any(|n| n.eq_ignore_ascii_case("prompt")) {
                return Err(AcsError::input(format!(
                    "{}: no `prompt` column (found: {})",
                    self.path.display(),
                    super::quoted_names(&names)
                )));
            }
            for field in schema.fields() {
                let textual = matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                );
                if field.name().eq_ignore_ascii_case("prompt") && !textual {
                    return Err(AcsError::input(format!(
                        "{}: column `{}` is {}, not a string column",
                        self.path.display(),
                        field.name(),
                        field.data_type()
                    )));
                }
            }
            let columns = record_batch
                .columns()
                .iter()
                .map(|array| {
                    arrow::compute::cast(array, &DataType::Utf8)
                        .ok()
                        .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
                })
                .collect::<Vec<_>>();
            for i in 0..record_batch.num_rows() {
                row_number += 1;
                let row = I2pRow {
                    origin: Origin {
                        file: self.path.clone(),
                        line: row_number,
                    },
                    get: Box::new(|wanted: &[&str]| {
                        column(&names, wanted)
                            .and_then(|c| columns[c].as_ref())
                            .filter(|a| a.is_valid(i))
                            .map(|a| a.value(i).to_owned())
                            .filter(|v| !v.trim().is_empty())
                    }),
                };
                let result = item(&row, &self.filter);
                push(batch, result);
            }
        }
        Ok(())
    }
}
