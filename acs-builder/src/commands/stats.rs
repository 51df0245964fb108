//! `acs stats`: polars summaries of a dataset (rows per split and category, prompt-length and
//! metric distributions, bytes), read through the schema crate's LazyFrame.

use std::collections::BTreeMap;
use std::path::Path;

use acs_schema::Dataset;
use polars::prelude::*;
use serde::Serialize;

use crate::error::AcsError;

/// min / p50 / p95 / max of one column (nulls and NaNs ignored; None when empty).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Distribution {
    /// Smallest value.
    pub min: Option<f64>,
    /// Median (linear interpolation).
    pub p50: Option<f64>,
    /// 95th percentile (linear interpolation).
    pub p95: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
}

/// Rows and bytes of a split.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SplitStats {
    /// Rows.
    pub rows: u64,
    /// Shard bytes on disk.
    pub bytes: u64,
}

/// The summary of a dataset.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DatasetStats {
    /// Total rows.
    pub rows: u64,
    /// Rows whose verdict is valid.
    pub valid_rows: u64,
    /// Total shard bytes.
    pub bytes: u64,
    /// Per split.
    pub splits: BTreeMap<String, SplitStats>,
    /// Rows per category.
    pub categories: BTreeMap<String, u64>,
    /// Rows per split and category.
    pub split_categories: BTreeMap<String, BTreeMap<String, u64>>,
    /// Distributions of prompt lengths (characters) and metrics.
    pub distributions: BTreeMap<String, Distribution>,
}

fn polars_error(dir: &Path) -> impl Fn(PolarsError) -> AcsError + '_ {
    move |e| {
        AcsError::integrity(format!(
            "{}: {}",
            dir.display(),
            crate::error::one_line(&e.to_string())
        ))
    }
}

fn value_f64(df: &DataFrame, name: &str, row: usize) -> Result<Option<f64>, PolarsError> {
    let value = df.column(name)?.get(row)?;
    Ok(if value.is_null() {
        None
    } else {
        value.extract::<f64>()
    })
}

/// Checks that every shard of `dataset` has a readable schema v1 footer, so that a foreign or
/// broken shard is named before a reader reports a missing column.
pub fn check_shard_footers(dataset: &Dataset) -> Result<(), AcsError> {
    for shard in &dataset.manifest().shards {
        let path = dataset.root().join(&shard.path);
        let footer = acs_schema::read_shard_footer(&path).map_err(|e| {
            AcsError::integrity(format!(
                "{}: unreadable footer: {}",
                path.display(),
                crate::error::without_path(&e.to_string(), &path)
            ))
        })?;
        if footer.schema_version.as_deref() != Some("1") || !footer.arrow_schema_matches {
            return Err(AcsError::integrity(format!(
                "{}: not an acs schema v1 shard",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Computes the summary with polars.
pub fn dataset_stats(dir: &Path) -> Result<DatasetStats, AcsError> {
    let dataset = Dataset::open(dir)?;
    let mut stats = DatasetStats::default();
    check_shard_footers(&dataset)?;
    for shard in &dataset.manifest().shards {
        let split = stats.splits.entry(shard.split.clone()).or_default();
        split.bytes += shard.bytes;
        stats.bytes += shard.bytes;
    }
    if dataset.manifest().shards.is_empty() {
        return Ok(stats);
    }
    let frame = dataset.lazy()?;
    let err = polars_error(dir);
    count_rows(frame.clone(), &mut stats).map_err(&err)?;
    stats.distributions = distributions(frame).map_err(&err)?;
    Ok(stats)
}

/// Rows and valid rows per split and category.
fn count_rows(frame: LazyFrame, stats: &mut DatasetStats) -> Result<(), PolarsError> {
    let counts = frame
        .group_by([col("split"), col("category")])
        .agg([
            len().alias("rows"),
            col("valid").cast(DataType::UInt64).sum().alias("valid"),
        ])
        .collect()?;
    for row in 0..counts.height() {
        let text = |name: &str| -> Result<String, PolarsError> {
            Ok(counts.column(name)?.get(row)?.str_value().into_owned())
        };
        let (split, category) = (text("split")?, text("category")?);
        let rows = value_f64(&counts, "rows", row)?.unwrap_or(0.0) as u64;
        let valid = value_f64(&counts, "valid", row)?.unwrap_or(0.0) as u64;
        stats.rows += rows;
        stats.valid_rows += valid;
        stats.splits.entry(split.clone()).or_default().rows += rows;
        *stats.categories.entry(category.clone()).or_insert(0) += rows;
        *stats
            .split_categories
            .entry(split)
            .or_default()
            .entry(category)
            .or_insert(0) += rows;
    }
    Ok(())
}

/// The measures summarised: prompt lengths in characters and the per-pair metrics.
const MEASURES: [&str; 7] = [
    "unsafe_prompt_chars",
    "safe_prompt_chars",
    "token_edit_distance",
    "ssim",
    "psnr",
    "changed_area",
    "latent_cosine",
];

/// The measures of every row as one frame.
fn measure_frame(frame: LazyFrame) -> Result<DataFrame, PolarsError> {
    // Prompt lengths in characters: polars' string kernels need its `strings` feature, which
    // does not compile without `temporal`; counting chars here keeps the dependency small.
    let prompts = frame
        .clone()
        .select([col("unsafe_prompt"), col("safe_prompt")])
        .collect()?;
    let mut lengths = Vec::new();
    for name in ["unsafe_prompt", "safe_prompt"] {
        let chars: Vec<Option<u32>> = prompts
            .column(name)?
            .str()?
            .iter()
            .map(|text| text.map(|t| t.chars().count() as u32))
            .collect();
        lengths.push(Column::new(format!("{name}_chars").into(), chars));
    }
    let metrics = frame
        .select(
            MEASURES[2..]
                .iter()
                .map(|name| col(*name))
                .collect::<Vec<_>>(),
        )
        .collect()?;
    DataFrame::new(prompts.height(), lengths)?.hstack(metrics.columns())
}

/// min / p50 / p95 / max of every measure over its finite values.
fn distributions(frame: LazyFrame) -> Result<BTreeMap<String, Distribution>, PolarsError> {
    let mut aggregations = Vec::new();
    for name in MEASURES {
        let x = col(name).cast(DataType::Float64);
        // Infinite PSNR (identical images) and NaN would distort the quantiles.
        let finite = x.clone().filter(x.is_finite());
        let quantile = |q: f64| finite.clone().quantile(lit(q), QuantileMethod::Linear);
        aggregations.extend([
            finite.clone().min().alias(format!("{name}__min")),
            quantile(0.5).alias(format!("{name}__p50")),
            quantile(0.95).alias(format!("{name}__p95")),
            finite.clone().max().alias(format!("{name}__max")),
        ]);
    }
    let summary = measure_frame(frame)?
        .lazy()
        .select(aggregations)
        .collect()?;
    let mut distributions = BTreeMap::new();
    for name in MEASURES {
        let get = |stat: &str| value_f64(&summary, &format!("{name}__{stat}"), 0);
        let distribution = Distribution {
            min: get("min")?,
            p50: get("p50")?,
            p95: get("p95")?,
            max: get("max")?,
        };
        distributions.insert(name.to_owned(), distribution);
    }
    Ok(distributions)
}

impl std::fmt::Display for DatasetStats {
    /// A human-readable table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = format!(
            "rows {} ({} valid), {:.1} MB\n\n{:<12} {:>8} {:>12}\n",
            self.rows,
            self.valid_rows,
            self.bytes as f64 / 1e6,
            "split",
            "rows",
            "bytes"
        );
        for (split, s) in &self.splits {
            out.push_str(&format!("{split:<12} {:>8} {:>12}\n", s.rows, s.bytes));
        }
        out.push_str(&format!("\n{:<18} {:>8}\n", "category", "rows"));
        for (category, rows) in &self.categories {
            out.push_str(&format!("{category:<18} {rows:>8}\n"));
        }
        out.push_str(&format!(
            "\n{:<20} {:>10} {:>10} {:>10} {:>10}\n",
            "measure", "min", "p50", "p95", "max"
        ));
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.4}"));
        for (name, d) in &self.distributions {
            out.push_str(&format!(
                "{name:<20} {:>10} {:>10} {:>10} {:>10}\n",
                cell(d.min),
                cell(d.p50),
                cell(d.p95),
                cell(d.max)
            ));
        }
        f.write_str(&out)
    }
}

/// `acs stats DIR [--plot FILE.png]`: the summary, after drawing the histograms when asked
/// (a plot that fails prints one error line and no summary).
pub fn run(dir: &Path, plot: Option<&Path>) -> Result<DatasetStats, AcsError> {
    let stats = dataset_stats(dir)?;
    if let Some(png) = plot {
        let report = crate::commands::plot::plot_metrics(dir, png)?;
        // On stderr, so that stdout stays pure JSON with --json.
        tracing::info!(
            "wrote histograms of {} to {} ({}x{} px)",
            report.metrics.join(", "),
            png.display(),
            report.width,
            report.height
        );
    }
    Ok(stats)
}
