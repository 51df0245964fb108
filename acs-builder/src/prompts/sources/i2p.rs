//! The I2P benchmark's filters: rows of the I2P layout (prompt, categories as a comma-separated
//! string, hard, inappropriate_percentage, nudity_percentage, q16_percentage,
//! sd_safety_percentage, prompt_toxicity, sd_seed, sd_guidance_scale, ...) kept by category,
//! `hard` flag and minimum percentages. `i2p-csv` / `i2p-parquet` sources, and any column-mapped
//! source with `preset = "i2p"`, read their rows through [`super::mapped`] with this filter.

use super::table::{Table, TableRow};
use super::Reject;
use crate::manifest::SourceSection;

/// Which I2P rows to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct I2pFilter {
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
            categories: section.categories.clone(),
            hard: section.hard,
            minimums,
        }
    }

    /// Whether the filter keeps a row of `categories`.
    pub fn keeps(
        &self,
        table: &Table,
        row: &TableRow,
        categories: &[String],
    ) -> Result<bool, Box<Reject>> {
        if !self.categories.is_empty() && !categories.iter().any(|c| self.categories.contains(c)) {
            return Ok(false);
        }
        if let Some(hard) = self.hard {
            let value = number(table, row, "hard")?.unwrap_or(0.0);
            if (value != 0.0) != hard {
                return Ok(false);
            }
        }
        for (name, minimum) in &self.minimums {
            match number(table, row, name)? {
                Some(value) if value >= *minimum => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// The number in column `name` of `row`; a reject when it is not one.
fn number(table: &Table, row: &TableRow, name: &str) -> Result<Option<f64>, Box<Reject>> {
    match row.get(table.column(&[name])) {
        None => Ok(None),
        Some(text) => text.trim().parse::<f64>().map(Some).map_err(|_| {
            Box::new(Reject::at(
                &row.origin,
                "invalid-row",
                format!("column `{name}`: `{text}` is not a number"),
            ))
        }),
    }
}
