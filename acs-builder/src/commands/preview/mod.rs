//! `acs preview`: a contact sheet of a dataset's pairs, one row per pair with three panels —
//! the unsafe image, the safe image and a heat map of their difference (per pixel the largest
//! channel |difference|, through the inferno colormap) — with the changed-region box drawn on
//! all three, and a caption with the pair's category, split, verdict, metrics and prompts.

mod sheet;

use std::path::{Path, PathBuf};

use acs_schema::{Dataset, PairRecord};
use polars::prelude::*;

use crate::commands::draw::Canvas;
use crate::error::{one_line, AcsError};
use crate::judge::metrics::{changed_box, CHANGED_PIXEL_THRESHOLD};
use crate::store::imaging::decode_png;

pub use sheet::{
    difference_map, privacy_sigma, SheetLayout, BOX_COLOR, CAPTION_LINES, GAP, LINE_HEIGHT, MARGIN,
};
use sheet::{draw_header, draw_row, Caption, Pair, BACKGROUND};

/// Pairs shown when `--count` is not given.
pub const DEFAULT_COUNT: usize = 12;
/// Panel side in pixels when `--panel` is not given (images are scaled to fit it).
pub const DEFAULT_PANEL: u32 = 256;
/// Smallest and largest `--panel`.
pub const PANEL_RANGE: std::ops::RangeInclusive<u32> = 64..=1024;
/// Most pairs one sheet shows.
pub const MAX_COUNT: usize = 500;
/// Largest sheet, in pixels (three bytes each in memory).
pub const MAX_SHEET_PIXELS: u64 = 200_000_000;

/// What to show and where to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewOptions {
    /// The PNG file to write.
    pub out: PathBuf,
    /// Most pairs to show (the first ones in dataset order that match the filters).
    pub count: usize,
    /// Only pairs of this category.
    pub category: Option<String>,
    /// Only valid (`true`) or invalid (`false`) pairs.
    pub valid: Option<bool>,
    /// Only pairs of this split.
    pub split: Option<String>,
    /// Blur the unsafe panel so that its content is not recognisable.
    pub blur_unsafe: bool,
    /// Panel side in pixels.
    pub panel: u32,
}

impl PreviewOptions {
    /// The defaults, writing to `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            count: DEFAULT_COUNT,
            category: None,
            valid: None,
            split: None,
            blur_unsafe: false,
            panel: DEFAULT_PANEL,
        }
    }

    /// The filters as `key=value` words, e.g. `category=violence valid=true`.
    pub(super) fn filter_text(&self) -> String {
        let mut words = Vec::new();
        if let Some(c) = &self.category {
            words.push(format!("category={c}"));
        }
        if let Some(s) = &self.split {
            words.push(format!("split={s}"));
        }
        if let Some(v) = self.valid {
            words.push(format!("valid={v}"));
        }
        words.join(" ")
    }

    pub(super) fn matches(&self, split: &str, category: &str, valid: bool) -> bool {
        self.split.as_deref().is_none_or(|s| s == split)
            && self.category.as_deref().is_none_or(|c| c == category)
            && self.valid.is_none_or(|v| v == valid)
    }

    pub(super) fn check(&self) -> Result<(), AcsError> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(AcsError::input(format!(
                "--count: must be between 1 and {MAX_COUNT} (got {})",
                self.count
            )));
        }
        if !PANEL_RANGE.contains(&self.panel) {
            return Err(AcsError::input(format!(
                "--panel: must be between {} and {} pixels (got {})",
                PANEL_RANGE.start(),
                PANEL_RANGE.end(),
                self.panel
            )));
        }
        Ok(())
    }
}

/// What [`preview`] wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PreviewReport {
    /// The PNG file.
    pub out: PathBuf,
    /// Pairs shown.
    pub shown: usize,
    /// Pairs that match the filters.
    pub matched: usize,
    /// Rows in the dataset.
    pub total: usize,
    /// Sheet width in pixels.
    pub width: u32,
    /// Sheet height in pixels.
    pub height: u32,
}

impl std::fmt::Display for PreviewReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote {} ({}x{} px): {} of {} matching pairs ({} rows in the dataset)",
            self.out.display(),
            self.width,
            self.height,
            self.shown,
            self.matched,
            self.total
        )
    }
}

/// Writes a contact sheet of the first `options.count` pairs of `dir` that match the filters
/// (dataset order: shards in manifest order) to `options.out`, atomically.
///
/// Bad options, a dataset that cannot be read and filters that match no row are errors (exit 2);
/// nothing is written then.
pub fn preview(dir: &Path, options: &PreviewOptions) -> Result<PreviewReport, AcsError> {
    options.check()?;
    let dataset = Dataset::open(dir)?;
    crate::commands::stats::check_shard_footers(&dataset)?;
    let rows = filter_columns(&dataset)?;
    let total = rows.len();
    let matched = rows
        .iter()
        .filter(|(split, category, valid)| options.matches(split, category, *valid))
        .count();
    if matched == 0 {
        return Err(no_match_error(dir, &rows, options));
    }
    let rows = matched.min(options.count) as u32;
    SheetLayout::new(options.panel, rows).check_size()?;
    let pairs = first_matches(&dataset, options)?;
    let mut layout = SheetLayout::new(options.panel, pairs.len() as u32);
    if pairs.iter().any(|p| p.mask.is_some()) {
        layout = layout.with_mask_column();
        layout.check_size()?;
    }
    let mut sheet = Canvas::new(layout.width, layout.height, BACKGROUND);
    draw_header(&mut sheet, &layout, dir, options, pairs.len(), matched);
    for (i, pair) in pairs.iter().enumerate() {
        draw_row(&mut sheet, &layout, i as u32, pair, options.blur_unsafe);
    }
    sheet.write_png(&options.out)?;
    Ok(PreviewReport {
        out: options.out.clone(),
        shown: pairs.len(),
        matched,
        total,
        width: layout.width,
        height: layout.height,
    })
}

fn polars_error(dir: &Path) -> impl Fn(PolarsError) -> AcsError + '_ {
    move |e| AcsError::integrity(format!("{}: {}", dir.display(), one_line(&e.to_string())))
}

/// The filter columns of every row (split, category, valid), read with polars without
/// touching the image columns.
fn filter_columns(dataset: &Dataset) -> Result<Vec<(String, String, bool)>, AcsError> {
    if dataset.manifest().shards.is_empty() {
        return Ok(Vec::new());
    }
    let err = polars_error(dataset.root());
    let frame = dataset
        .lazy()?
        .select([col("split"), col("category"), col("valid")])
        .collect()
        .map_err(&err)?;
    let splits = frame.column("split").map_err(&err)?.str().map_err(&err)?;
    let categories = frame
        .column("category")
        .map_err(&err)?
        .str()
        .map_err(&err)?;
    let valids = frame.column("valid").map_err(&err)?.bool().map_err(&err)?;
    Ok(splits
        .iter()
        .zip(categories.iter())
        .zip(valids.iter())
        .map(|((s, c), v)| {
            (
                s.unwrap_or_default().to_owned(),
                c.unwrap_or_default().to_owned(),
                v.unwrap_or(false),
            )
        })
        .collect())
}

/// The "no row matches" error, naming the values the dataset does have.
fn no_match_error(
    dir: &Path,
    rows: &[(String, String, bool)],
    options: &PreviewOptions,
) -> AcsError {
    if rows.is_empty() {
        return AcsError::input(format!(
            "{}: the dataset has no rows to preview",
            dir.display()
        ));
    }
    let mut categories: Vec<&str> = rows.iter().map(|(_, c, _)| c.as_str()).collect();
    let mut splits: Vec<&str> = rows.iter().map(|(s, _, _)| s.as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    splits.sort_unstable();
    splits.dedup();
    AcsError::input(format!(
        "{}: no row of {} matches {} (categories: {}; splits: {})",
        dir.display(),
        rows.len(),
        options.filter_text(),
        categories.join(", "),
        splits.join(", ")
    ))
}

/// The first `options.count` matching rows, decoded, reading shards in manifest order only
/// until enough are found.
fn first_matches(dataset: &Dataset, options: &PreviewOptions) -> Result<Vec<Pair>, AcsError> {
    let mut pairs = Vec::new();
    for shard in &dataset.manifest().shards {
        if pairs.len() >= options.count {
            break;
        }
        if options.split.as_deref().is_some_and(|s| s != shard.split) {
            continue;
        }
        // One row group at a time, stopping as soon as enough pairs are found.
        let name = dataset.location().name_of(&shard.path);
        let mut reader = dataset.open_shard(shard)?;
        let mut row = 0;
        while pairs.len() < options.count {
            let Some(group) = reader.next_row_group()? else {
                break;
            };
            for record in group {
                if pairs.len() < options.count
                    && options.matches(&record.split, &record.category, record.valid)
                {
                    let place = format!("{}: row {row}", name.display());
                    pairs.push(decode_pair(record, &place)?);
                }
                row += 1;
            }
        }
    }
    Ok(pairs)
}

/// Decodes both images of a row; `place` names the shard and row in errors.
fn decode_pair(record: PairRecord, place: &str) -> Result<Pair, AcsError> {
    let decode = |bytes: &[u8], column: &str| -> Result<Canvas, AcsError> {
        let (rgb, w, h) = decode_png(bytes)
            .map_err(|e| AcsError::integrity(format!("{place}: {column}: {e}")))?;
        Canvas::from_rgb(rgb, w, h)
            .ok_or_else(|| AcsError::integrity(format!("{place}: {column}: bad pixel buffer")))
    };
    let unsafe_image = decode(&record.unsafe_image.bytes, "unsafe_image")?;
    let safe_image = decode(&record.safe_image.bytes, "safe_image")?;
    let sizes = |c: &Canvas| (c.width(), c.height());
    if sizes(&unsafe_image) != sizes(&safe_image) {
        return Err(AcsError::integrity(format!(
            "{place}: unsafe_image is {:?} pixels but safe_image is {:?}",
            sizes(&unsafe_image),
            sizes(&safe_image)
        )));
    }
    let changed = changed_box(
        unsafe_image.pixels(),
        safe_image.pixels(),
        unsafe_image.width() as usize,
        CHANGED_PIXEL_THRESHOLD,
    );
    let mask = match &record.change_mask {
        Some(blob) => Some(decode(&blob.bytes, "change_mask")?),
        None => None,
    };
    Ok(Pair {
        caption: Caption::from(&record),
        unsafe_image,
        safe_image,
        changed,
        mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let mut options = PreviewOptions::new("x.png");
        assert!(options.check().is_ok());
        options.count = 0;
        assert!(options.check().unwrap_err().to_string().contains("--count"));
        options.count = 3;
        options.panel = 8;
        assert!(options.check().unwrap_err().to_string().contains("--panel"));
    }

    #[test]
    fn filters_combine() {
        let mut options = PreviewOptions::new("x.png");
        assert!(options.matches("train", "violence", false));
        options.category = Some("violence".into());
        options.valid = Some(true);
        assert!(options.matches("test", "violence", true));
        assert!(!options.matches("test", "violence", false));
        assert!(!options.matches("test", "hate", true));
        options.split = Some("train".into());
        assert!(!options.matches("test", "violence", true));
        assert_eq!(
            options.filter_text(),
            "category=violence split=train valid=true"
        );
    }
}
