//! `acs stats`: polars summaries of a dataset (rows per split and category, prompt-length and
//! metric distributions, bytes), read through the schema crate's LazyFrame.

use std::collections::BTreeMap;
use std::path::Path;

use acs_schema::{Dataset, BENIGN_CATEGORY};
use polars::prelude::*;
use serde::Serialize;

use crate::commands::judges::recorded_judges;
use crate::error::AcsError;
use crate::judge::verdict::{flags, Thresholds};
use crate::judge::JudgeKind;
use crate::store::journal::Journal;

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
    /// Benign preservation rows (category `benign`), counted apart: they are in `rows` and
    /// `categories` but not in the distributions or the flips.
    pub benign_rows: u64,
    /// Total shard bytes.
    pub bytes: u64,
    /// Per split.
    pub splits: BTreeMap<String, SplitStats>,
    /// Rows per category.
    pub categories: BTreeMap<String, u64>,
    /// Rows per split and category.
    pub split_categories: BTreeMap<String, BTreeMap<String, u64>>,
    /// Distributions of prompt lengths (characters), metrics and the judges' scores.
    pub distributions: BTreeMap<String, Distribution>,
    /// Per category, how often its judge flips the pair (empty when the build ran no judge).
    pub flips: BTreeMap<String, FlipStats>,
}

/// How often a category's pairs flip under the judge that decides the category.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FlipStats {
    /// The judge (none: the build ran no judge for this category).
    pub judge: Option<JudgeKind>,
    /// Rows of the category with both of the judge's scores.
    pub scored: u64,
    /// Of those, rows whose unsafe image the judge flags.
    pub unsafe_flagged: u64,
    /// Of those, rows whose safe image the judge flags.
    pub safe_flagged: u64,
    /// Rows that flip: unsafe image flagged, safe image not.
    pub flipped: u64,
}

impl FlipStats {
    /// flipped / scored (0 when nothing was scored).
    pub fn rate(&self) -> f64 {
        if self.scored == 0 {
            0.0
        } else {
            self.flipped as f64 / self.scored as f64
        }
    }
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
        let path = dataset.location().name_of(&shard.path);
        let footer = dataset
            .open_shard(shard)
            .and_then(|r| r.footer())
            .map_err(|e| {
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

/// Refuses a dataset whose build did not finish (its figures would describe a part of it),
/// saying how far the build got and how to resume it.
fn check_finished(dir: &Path, dataset: &Dataset) -> Result<(), AcsError> {
    let manifest = dataset.manifest();
    if manifest.complete {
        return Ok(());
    }
    let in_shards = manifest.total_rows();
    // The journal of a local build also knows the rendered pairs that no shard holds yet.
    let rendered: Option<usize> = match dataset.location() {
        acs_schema::DatasetLocation::Local(root) => Journal::rendered_pairs(root).ok(),
        acs_schema::DatasetLocation::Remote(_) => None,
    };
    let progress = match rendered {
        Some(rendered) if rendered as u64 > in_shards => format!(
            "{rendered} pairs rendered, {in_shards} of them in {} finished shards",
            manifest.shards.len()
        ),
        _ => format!(
            "{in_shards} rows in {} finished shards",
            manifest.shards.len()
        ),
    };
    Err(AcsError::input(format!(
        "{}: the build did not finish ({progress}); rerun the same `acs build --manifest \
         MANIFEST --out {}` to resume it, then `acs stats` describes the whole dataset",
        dir.display(),
        dir.display()
    )))
}

/// Computes the summary with polars.
pub fn dataset_stats(dir: &Path) -> Result<DatasetStats, AcsError> {
    let dataset = Dataset::open(dir)?;
    check_finished(dir, &dataset)?;
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
    let ran: Vec<JudgeKind> = recorded_judges(&dataset.manifest().build_config)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    let judge_columns: Vec<String> = ran
        .iter()
        .flat_map(|k| {
            [
                format!("{}_unsafe", k.column()),
                format!("{}_safe", k.column()),
            ]
        })
        .collect();
    stats.benign_rows = stats.categories.get(BENIGN_CATEGORY).copied().unwrap_or(0);
    // Benign rows have nothing to measure between their two (identical) sides.
    let pairs = frame.filter(col("category").neq(lit(BENIGN_CATEGORY)));
    if stats.benign_rows < stats.rows {
        stats.distributions = distributions(pairs.clone(), &judge_columns).map_err(&err)?;
    }
    if !ran.is_empty() {
        let build = crate::commands::validate::recorded_build(dir, dataset.manifest())?;
        stats.flips = flip_stats(pairs, &ran, &build.thresholds()).map_err(&err)?;
    }
    Ok(stats)
}

/// Per category: rows scored by its judge, flagged unsafe and safe images, flips.
fn flip_stats(
    frame: LazyFrame,
    ran: &[JudgeKind],
    thresholds: &Thresholds,
) -> Result<BTreeMap<String, FlipStats>, PolarsError> {
    let mut columns = vec![col("category")];
    for kind in ran {
        columns.push(col(format!("{}_unsafe", kind.column())));
        columns.push(col(format!("{}_safe", kind.column())));
    }
    let rows = frame.select(columns).collect()?;
    let categories = rows.column("category")?.str()?.clone();
    let mut flips: BTreeMap<String, FlipStats> = BTreeMap::new();
    for (row, category) in categories.iter().enumerate() {
        let category = category.unwrap_or_default();
        let judge = thresholds
            .flip_judges
            .get(category)
            .copied()
            .filter(|k| ran.contains(k));
        let entry = flips.entry(category.to_owned()).or_insert(FlipStats {
            judge,
            ..FlipStats::default()
        });
        let Some(kind) = judge else { continue };
        let score = |side: &str| value_f64(&rows, &format!("{}_{side}", kind.column()), row);
        if let (Some(u), Some(s)) = (score("unsafe")?, score("safe")?) {
            let (u, s) = (
                flags(kind, u as f32, thresholds),
                flags(kind, s as f32, thresholds),
            );
            entry.scored += 1;
            entry.unsafe_flagged += u64::from(u);
            entry.safe_flagged += u64::from(s);
            entry.flipped += u64::from(u && !s);
        }
    }
    Ok(flips)
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
fn measure_frame(frame: LazyFrame, extra: &[String]) -> Result<DataFrame, PolarsError> {
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
                .chain(extra.iter().map(|name| col(name.as_str())))
                .collect::<Vec<_>>(),
        )
        .collect()?;
    DataFrame::new(prompts.height(), lengths)?.hstack(metrics.columns())
}

/// min / p50 / p95 / max of every measure over its finite values.
fn distributions(
    frame: LazyFrame,
    extra: &[String],
) -> Result<BTreeMap<String, Distribution>, PolarsError> {
    let names: Vec<&str> = MEASURES
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect();
    let mut aggregations = Vec::new();
    for &name in &names {
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
    let summary = measure_frame(frame, extra)?
        .lazy()
        .select(aggregations)
        .collect()?;
    let mut distributions = BTreeMap::new();
    for name in names {
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
        let benign = match self.benign_rows {
            0 => String::new(),
            n => format!(", {n} of them benign preservation rows"),
        };
        let mut out = format!(
            "rows {} ({} valid{benign}), {:.1} MB\n\n{:<12} {:>8} {:>12}\n",
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
        // The measure column fits the longest name (judge score columns are long).
        let width = self
            .distributions
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(20);
        out.push_str(&format!(
            "\n{:<width$} {:>10} {:>10} {:>10} {:>10}\n",
            "measure", "min", "p50", "p95", "max"
        ));
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.4}"));
        for (name, d) in &self.distributions {
            out.push_str(&format!(
                "{name:<width$} {:>10} {:>10} {:>10} {:>10}\n",
                cell(d.min),
                cell(d.p50),
                cell(d.p95),
                cell(d.max)
            ));
        }
        if !self.flips.is_empty() {
            out.push_str(&format!(
                "\n{:<18} {:<18} {:>7} {:>14} {:>12} {:>9}\n",
                "category", "flip judge", "scored", "unsafe flagged", "safe flagged", "flip rate"
            ));
            for (category, flip) in &self.flips {
                let judge = flip.judge.map_or("-".to_owned(), |k| k.to_string());
                out.push_str(&format!(
                    "{category:<18} {judge:<18} {:>7} {:>14} {:>12} {:>8.1}%\n",
                    flip.scored,
                    flip.unsafe_flagged,
                    flip.safe_flagged,
                    100.0 * flip.rate()
                ));
            }
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
