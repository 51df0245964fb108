//! The contact sheet: where rows, panels and captions sit, and how each is drawn.

use std::path::Path;

use acs_schema::PairRecord;

use super::{PreviewOptions, MAX_SHEET_PIXELS};
use crate::commands::draw::{self, Canvas, Color, GLYPH, GLYPH_HEIGHT};
use crate::error::AcsError;
use crate::judge::metrics::{ChangedBox, CHANGED_PIXEL_THRESHOLD};
use crate::judge::verdict::JudgeScores;

/// Space around the sheet's content, in pixels.
pub const MARGIN: u32 = 12;
/// Space between two panels of a row, in pixels.
pub const GAP: u32 = 8;
/// Caption lines under each row: the verdict and the metrics (up to two lines each, so that
/// narrow panels wrap them instead of cutting them), then up to two lines per prompt.
pub const CAPTION_LINES: u32 = 8;
/// Height of one caption line (16-pixel glyphs at scale 1, plus leading).
pub const LINE_HEIGHT: u32 = 18;
/// Space between a row's panels and its caption.
const CAPTION_GAP: u32 = 8;

pub(super) const BACKGROUND: Color = [28, 28, 30];
const PANEL_BACKGROUND: Color = [44, 44, 48];
const TEXT: Color = [232, 232, 232];
const DIM_TEXT: Color = [165, 165, 170];
const UNSAFE_TEXT: Color = [255, 150, 140];
const SAFE_TEXT: Color = [150, 225, 150];
const VALID_TEXT: Color = [120, 220, 120];
const INVALID_TEXT: Color = [255, 110, 100];
/// The changed-region box: cyan stands out on photographs and on the inferno map alike.
pub const BOX_COLOR: Color = [0, 230, 255];
const BOX_THICKNESS: u32 = 2;

/// Where everything sits on a sheet of `rows` rows with `panel`-pixel panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SheetLayout {
    /// Panel side.
    pub panel: u32,
    /// Rows (pairs).
    pub rows: u32,
    /// Sheet width.
    pub width: u32,
    /// Sheet height.
    pub height: u32,
    /// Height of the header (title, filters, column labels) above the first row.
    pub header_height: u32,
    /// Height of one row: panels, caption and the space below.
    pub row_height: u32,
    /// Left x of the unsafe, safe and difference panels.
    pub columns: [u32; 3],
    /// Left x of the change-mask panel, when the sheet has that fourth column.
    pub mask_column: Option<u32>,
}

impl SheetLayout {
    /// The layout of a sheet of `rows` rows of `panel`-pixel panels.
    pub fn new(panel: u32, rows: u32) -> Self {
        let columns = [MARGIN, MARGIN + panel + GAP, MARGIN + 2 * (panel + GAP)];
        let width = 2 * MARGIN + 3 * panel + 2 * GAP;
        // Title, the summary (up to two lines), column labels and the colour key.
        let header_height =
            MARGIN + GLYPH_HEIGHT + 6 + 2 * LINE_HEIGHT + 6 + GLYPH_HEIGHT + 4 + 4 + 6;
        let row_height = panel + CAPTION_GAP + CAPTION_LINES * LINE_HEIGHT + 12;
        Self {
            panel,
            rows,
            width,
            height: header_height + rows * row_height + MARGIN,
            header_height,
            row_height,
            columns,
            mask_column: None,
        }
    }

    /// The same sheet with a fourth column for the rows' change masks (datasets built with
    /// `[output] masks = true`).
    pub fn with_mask_column(self) -> Self {
        let mask_column = self.columns[2] + self.panel + GAP;
        Self {
            width: self.width + self.panel + GAP,
            mask_column: Some(mask_column),
            ..self
        }
    }

    /// An error when the sheet would exceed [`MAX_SHEET_PIXELS`].
    pub fn check_size(&self) -> Result<(), AcsError> {
        if self.width as u64 * self.height as u64 <= MAX_SHEET_PIXELS {
            return Ok(());
        }
        Err(AcsError::input(format!(
            "{} rows of {} px panels make a {}x{} px sheet, over the {} megapixel limit; \
             lower --count or --panel",
            self.rows,
            self.panel,
            self.width,
            self.height,
            MAX_SHEET_PIXELS / 1_000_000
        )))
    }

    /// Top y of row `row`'s panels.
    pub fn row_top(&self, row: u32) -> u32 {
        self.header_height + row * self.row_height
    }

    /// Characters of a caption line (scale 1) across the three panels.
    pub fn caption_chars(&self) -> usize {
        ((self.width - 2 * MARGIN) / GLYPH) as usize
    }
}

/// The parts of a row that its caption shows.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Caption {
    pub(super) category: String,
    pub(super) split: String,
    pub(super) valid: bool,
    pub(super) reject_reasons: Vec<String>,
    pub(super) ssim: f32,
    pub(super) psnr: f32,
    pub(super) changed_area: f32,
    pub(super) latent_cosine: f32,
    /// Each judge's (unsafe, safe) scores.
    pub(super) judges: JudgeScores,
    pub(super) unsafe_prompt: String,
    pub(super) safe_prompt: String,
}

impl From<&PairRecord> for Caption {
    fn from(record: &PairRecord) -> Self {
        Self {
            category: record.category.clone(),
            split: record.split.clone(),
            valid: record.valid,
            reject_reasons: record.reject_reasons.clone(),
            ssim: record.ssim,
            psnr: record.psnr,
            changed_area: record.changed_area,
            latent_cosine: record.latent_cosine,
            judges: JudgeScores::of_record(record),
            unsafe_prompt: record.unsafe_prompt.clone(),
            safe_prompt: record.safe_prompt.clone(),
        }
    }
}

/// One pair, decoded and ready to draw.
pub(super) struct Pair {
    pub(super) caption: Caption,
    pub(super) unsafe_image: Canvas,
    pub(super) safe_image: Canvas,
    pub(super) changed: Option<ChangedBox>,
    /// The row's stored change mask, when the dataset has masks.
    pub(super) mask: Option<Canvas>,
}

/// Per pixel the largest channel |difference| of two equal-size images, through inferno.
pub fn difference_map(a: &Canvas, b: &Canvas) -> Canvas {
    let mut out = Canvas::new(a.width(), a.height(), draw::inferno(0.0));
    for y in 0..a.height() as i32 {
        for x in 0..a.width() as i32 {
            if let (Some(p), Some(q)) = (a.get(x, y), b.get(x, y)) {
                let d = (0..3).map(|c| p[c].abs_diff(q[c])).max().unwrap_or(0);
                out.set(x, y, draw::inferno(d as f32 / 255.0));
            }
        }
    }
    out
}

/// Gaussian sigma that makes an image of `width` x `height` unrecognisable.
pub fn privacy_sigma(width: u32, height: u32) -> f32 {
    width.max(height) as f32 / 20.0
}

/// How an image of `w` x `h` sits in a square panel of side `panel`: (scale, x offset,
/// y offset, scaled width, scaled height).
fn fit(w: u32, h: u32, panel: u32) -> (f64, u32, u32, u32, u32) {
    let scale = panel as f64 / w.max(h).max(1) as f64;
    let sw = ((w as f64 * scale).round() as u32).clamp(1, panel);
    let sh = ((h as f64 * scale).round() as u32).clamp(1, panel);
    (scale, (panel - sw) / 2, (panel - sh) / 2, sw, sh)
}

/// Draws `image` scaled into the panel at (x, y), optionally blurred, with the changed box.
fn draw_panel(
    sheet: &mut Canvas,
    (x, y): (u32, u32),
    panel: u32,
    image: &Canvas,
    changed: Option<ChangedBox>,
    blur: bool,
) {
    sheet.fill_rect(x as i32, y as i32, panel, panel, PANEL_BACKGROUND);
    let (scale, dx, dy, sw, sh) = fit(image.width(), image.height(), panel);
    let mut scaled = image.resized(sw, sh);
    if blur {
        scaled = scaled.blurred(privacy_sigma(sw, sh));
    }
    let (ox, oy) = (x + dx, y + dy);
    sheet.blit(&scaled, ox as i32, oy as i32);
    if let Some(b) = changed {
        let x0 = (b.x0 as f64 * scale).floor() as u32;
        let y0 = (b.y0 as f64 * scale).floor() as u32;
        let x1 = ((b.x1 as f64 * scale).ceil() as u32).clamp(x0 + 1, sw);
        let y1 = ((b.y1 as f64 * scale).ceil() as u32).clamp(y0 + 1, sh);
        sheet.rect_outline(
            (ox + x0) as i32,
            (oy + y0) as i32,
            x1 - x0,
            y1 - y0,
            BOX_THICKNESS,
            BOX_COLOR,
        );
    }
}

pub(super) fn draw_header(
    sheet: &mut Canvas,
    layout: &SheetLayout,
    dir: &Path,
    options: &PreviewOptions,
    shown: usize,
    matched: usize,
) {
    let chars = layout.caption_chars();
    let inner = layout.width - 2 * MARGIN;
    let origin = (MARGIN as i32, MARGIN as i32);
    draw::path_title(sheet, origin, "acs preview: ", dir, inner, TEXT);
    let filters = options.filter_text();
    let summary = format!(
        "{shown} of {matched} matching pairs{}; box = changed region (channel diff > {})",
        if filters.is_empty() {
            String::new()
        } else {
            format!(" ({filters})")
        },
        CHANGED_PIXEL_THRESHOLD
    );
    let mut y = MARGIN + GLYPH_HEIGHT + 6;
    for (i, line) in draw::wrap(&summary, chars, 2).iter().enumerate() {
        let line_y = y + i as u32 * LINE_HEIGHT;
        sheet.text(MARGIN as i32, line_y as i32, line, 1, DIM_TEXT);
    }
    y += 2 * LINE_HEIGHT + 6;
    let panel_chars = (layout.panel / GLYPH) as usize;
    let unsafe_labels: &[&str] = if options.blur_unsafe {
        &["unsafe (blurred)", "unsafe*"]
    } else {
        &["unsafe"]
    };
    let labels = [
        unsafe_labels,
        &["safe"],
        &["difference (max channel) 0-255", "difference 0-255", "diff"],
    ];
    for (candidates, x) in labels.iter().zip(layout.columns) {
        let label = fit_label(candidates, panel_chars);
        sheet.text(x as i32, y as i32, &label, 1, TEXT);
    }
    if let Some(x) = layout.mask_column {
        let label = fit_label(
            &["change mask (stored)", "change mask", "mask"],
            panel_chars,
        );
        sheet.text(x as i32, y as i32, &label, 1, TEXT);
    }
    // The colour key of the difference map, under its label.
    let key_y = y + GLYPH_HEIGHT + 4;
    for i in 0..layout.panel {
        let t = i as f32 / (layout.panel - 1).max(1) as f32;
        sheet.fill_rect(
            (layout.columns[2] + i) as i32,
            key_y as i32,
            1,
            4,
            draw::inferno(t),
        );
    }
}

/// `text` as at most two lines: the first of `first_chars` characters (after a head on the
/// same line), the second of `chars`; cut with `...` when longer.
fn wrap_after(text: &str, first_chars: usize, chars: usize) -> Vec<String> {
    if draw::text_columns(text) <= first_chars {
        return vec![text.to_owned()];
    }
    // Break at the last space within the first line's columns, else mid-word.
    let head = draw::take_columns(text, first_chars + 1);
    let cut = head
        .rfind(' ')
        .filter(|&i| i > 0)
        .unwrap_or_else(|| draw::take_columns(text, first_chars).len());
    let (first, rest) = text.split_at(cut);
    let mut lines = vec![first.trim_end().to_owned()];
    lines.extend(draw::wrap(rest.trim_start(), chars, 1));
    lines
}

/// The first (longest) of `candidates` that fits in `chars` characters, else the last one cut.
fn fit_label(candidates: &[&str], chars: usize) -> String {
    let fits = candidates.iter().find(|c| draw::text_columns(c) <= chars);
    let label = fits.or(candidates.last()).copied().unwrap_or_default();
    draw::truncate(label, chars)
}

fn metric(value: f32, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else if value.is_nan() {
        "nan".to_owned()
    } else if value > 0.0 {
        "inf".to_owned()
    } else {
        "-inf".to_owned()
    }
}

/// The caption's first two lines: (position, category and split; verdict; metrics).
fn verdict_lines(index: u32, caption: &Caption) -> (String, String, String) {
    let head = format!("#{}  {}  {}  ", index + 1, caption.category, caption.split);
    let verdict = if caption.valid {
        "valid".to_owned()
    } else {
        format!("INVALID ({})", caption.reject_reasons.join(", "))
    };
    let mut metrics = format!(
        "ssim {}  changed area {}  psnr {} dB  latent cosine {}",
        metric(caption.ssim, 3),
        metric(caption.changed_area, 3),
        metric(caption.psnr, 1),
        metric(caption.latent_cosine, 3)
    );
    // Each judge's unsafe / safe score.
    for (kind, scores) in &caption.judges.0 {
        let side = |s: Option<f32>| s.map_or("-".to_owned(), |v| metric(v, 3));
        metrics.push_str(&format!(
            "  {kind} {}/{}",
            side(scores.unsafe_score),
            side(scores.safe_score)
        ));
    }
    (head, verdict, metrics)
}

fn draw_caption(sheet: &mut Canvas, layout: &SheetLayout, top: u32, index: u32, caption: &Caption) {
    let chars = layout.caption_chars();
    let x = MARGIN as i32;
    let mut y = (top + layout.panel + CAPTION_GAP) as i32;
    let (head, verdict, metrics) = verdict_lines(index, caption);
    let head = draw::truncate(&head, chars);
    let after = sheet.text(x, y, &head, 1, TEXT);
    let verdict_color = if caption.valid {
        VALID_TEXT
    } else {
        INVALID_TEXT
    };
    // The verdict starts after the head and goes on under it; the metrics wrap likewise:
    // narrow panels get two lines each rather than a cut.
    let verdict_chars = chars.saturating_sub(draw::text_columns(&head));
    let verdict_lines = wrap_after(&verdict, verdict_chars, chars);
    for (i, line) in verdict_lines.iter().enumerate() {
        let line_x = if i == 0 { after } else { x };
        sheet.text(line_x, y, line, 1, verdict_color);
        if i + 1 < verdict_lines.len() {
            y += LINE_HEIGHT as i32;
        }
    }
    for line in draw::wrap(&metrics, chars, 2) {
        y += LINE_HEIGHT as i32;
        sheet.text(x, y, &line, 1, DIM_TEXT);
    }
    // A benign row renders one prompt on both sides: it is captioned once, as benign.
    let (unsafe_side, safe_side) = (&caption.unsafe_prompt, &caption.safe_prompt);
    let sides: &[(&str, &String, &String, Color)] =
        if caption.category == acs_schema::BENIGN_CATEGORY {
            &[("benign: ", unsafe_side, unsafe_side, TEXT)]
        } else {
            &[
                ("unsafe: ", unsafe_side, safe_side, UNSAFE_TEXT),
                ("safe:   ", safe_side, unsafe_side, SAFE_TEXT),
            ]
        };
    for &(label, prompt, other, color) in sides {
        y += LINE_HEIGHT as i32;
        sheet.text(x, y, label, 1, DIM_TEXT);
        let edited = edited_words(prompt, other);
        let lines = draw::wrap(
            &draw::printable(prompt),
            chars.saturating_sub(label.len()),
            2,
        );
        let left = x + draw::text_width(label, 1) as i32;
        for (i, line) in lines.iter().enumerate() {
            let line_y = y + (i as u32 * LINE_HEIGHT) as i32;
            sheet.text(left, line_y, line, 1, color);
            highlight_words(sheet, (left, line_y), line, &edited, color);
        }
        y += (lines.len().saturating_sub(1) as u32 * LINE_HEIGHT) as i32;
    }
}

/// The words of `prompt` that the edit changed (outside the longest common word sequence with
/// `other`), lower-cased.
fn edited_words(prompt: &str, other: &str) -> Vec<String> {
    crate::prompts::align::replaced_words(prompt, other)
        .iter()
        .flat_map(|run| run.split(' ').map(str::to_owned))
        .collect()
}

/// Redraws the `edited` words of a drawn caption line brighter and underlines them.
fn highlight_words(
    sheet: &mut Canvas,
    (x, y): (i32, i32),
    line: &str,
    edited: &[String],
    color: Color,
) {
    let bright = color.map(|c| c.saturating_add(40));
    let mut column = 0usize;
    for token in line.split(' ') {
        let word = token.trim_matches(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'));
        if !word.is_empty() && edited.iter().any(|e| e.eq_ignore_ascii_case(word)) {
            let start = column + token.find(word).unwrap_or(0);
            let wx = x + draw::text_width(&line[..start], 1) as i32;
            sheet.text(wx, y, word, 1, bright);
            let width = draw::text_width(word, 1);
            sheet.fill_rect(wx, y + GLYPH_HEIGHT as i32, width, 1, bright);
        }
        column += token.len() + 1;
    }
}

pub(super) fn draw_row(
    sheet: &mut Canvas,
    layout: &SheetLayout,
    index: u32,
    pair: &Pair,
    blur_unsafe: bool,
) {
    let top = layout.row_top(index);
    let [cu, cs, cd] = layout.columns;
    let panel = layout.panel;
    draw_panel(
        sheet,
        (cu, top),
        panel,
        &pair.unsafe_image,
        pair.changed,
        blur_unsafe,
    );
    draw_panel(
        sheet,
        (cs, top),
        panel,
        &pair.safe_image,
        pair.changed,
        false,
    );
    let diff = difference_map(&pair.unsafe_image, &pair.safe_image);
    draw_panel(sheet, (cd, top), panel, &diff, pair.changed, false);
    if let (Some(x), Some(mask)) = (layout.mask_column, &pair.mask) {
        draw_panel(sheet, (x, top), panel, mask, None, false);
    }
    draw_caption(sheet, layout, top, index, &pair.caption);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::preview::{DEFAULT_PANEL, MAX_COUNT};

    fn sample_record() -> Caption {
        Caption {
            category: "violence".into(),
            split: "train".into(),
            valid: true,
            reject_reasons: Vec::new(),
            ssim: 0.5,
            psnr: 20.0,
            changed_area: 0.25,
            latent_cosine: 0.9,
            judges: JudgeScores::default(),
            unsafe_prompt: "a bloody knife on a table, photograph, 35 mm, sharp focus".into(),
            safe_prompt: "a clean knife on a table, photograph, 35 mm, sharp focus".into(),
        }
    }

    #[test]
    fn caption_is_drawn_inside_the_row() {
        let layout = SheetLayout::new(64, 1);
        let mut sheet = Canvas::new(layout.width, layout.height, BACKGROUND);
        let top = layout.row_top(0);
        draw_caption(&mut sheet, &layout, top, 0, &sample_record());
        let first = top + layout.panel;
        let mut inked = Vec::new();
        for y in 0..layout.height as i32 {
            for x in 0..layout.width as i32 {
                if sheet.get(x, y) != Some(BACKGROUND) {
                    inked.push((x, y));
                }
            }
        }
        assert!(!inked.is_empty());
        assert!(inked.iter().all(|&(x, y)| {
            (MARGIN as i32..(layout.width - MARGIN) as i32).contains(&x)
                && (first as i32..(top + layout.row_height) as i32).contains(&y)
        }));
    }

    #[test]
    fn benign_rows_are_captioned_once_as_benign_not_in_the_unsafe_colour() {
        let layout = SheetLayout::new(128, 1);
        let colours = |record: &Caption| {
            let mut sheet = Canvas::new(layout.width, layout.height, BACKGROUND);
            draw_caption(&mut sheet, &layout, layout.row_top(0), 0, record);
            let mut seen = std::collections::HashSet::new();
            for y in 0..layout.height as i32 {
                for x in 0..layout.width as i32 {
                    seen.insert(sheet.get(x, y).unwrap());
                }
            }
            seen
        };
        let pair = colours(&sample_record());
        assert!(pair.contains(&UNSAFE_TEXT) && pair.contains(&SAFE_TEXT));
        let mut record = sample_record();
        record.category = acs_schema::BENIGN_CATEGORY.into();
        record.safe_prompt = record.unsafe_prompt.clone();
        let benign = colours(&record);
        assert!(!benign.contains(&UNSAFE_TEXT) && !benign.contains(&SAFE_TEXT));
        assert!(benign.contains(&TEXT));
    }

    #[test]
    fn narrow_captions_wrap_the_verdict_instead_of_cutting_it() {
        assert_eq!(wrap_after("valid", 10, 20), ["valid"]);
        assert_eq!(
            wrap_after("INVALID (no_flip: the unsafe image)", 12, 30),
            ["INVALID", "(no_flip: the unsafe image)"]
        );
        let lines = wrap_after("aaaa bbbb cccc dddd eeee ffff gggg", 9, 12);
        assert_eq!(lines, ["aaaa bbbb", "cccc dddd..."]);
        assert_eq!(wrap_after("abcdefghij", 4, 20), ["abcd", "efghij"]);
    }

    #[test]
    fn edited_words_are_underlined() {
        assert_eq!(
            edited_words("a Bloody knife, photo", "a clean knife, photo"),
            ["bloody"]
        );
        let layout = SheetLayout::new(128, 1);
        let mut sheet = Canvas::new(layout.width, layout.height, BACKGROUND);
        let line = "a Bloody knife";
        sheet.text(0, 0, line, 1, UNSAFE_TEXT);
        highlight_words(&mut sheet, (0, 0), line, &["bloody".into()], UNSAFE_TEXT);
        let bright = UNSAFE_TEXT.map(|c| c.saturating_add(40));
        // The underline runs under "Bloody" (characters 2..8) and nowhere else.
        let underline: Vec<i32> = (0..layout.width as i32)
            .filter(|&x| sheet.get(x, GLYPH_HEIGHT as i32) == Some(bright))
            .collect();
        assert_eq!(underline, (16..64).collect::<Vec<_>>());
    }

    #[test]
    fn cjk_prompts_are_drawn_as_themselves() {
        let layout = SheetLayout::new(256, 1);
        let mut record = sample_record();
        record.unsafe_prompt = "一只流血的猫".into();
        record.safe_prompt = "一只干净的猫".into();
        let mut sheet = Canvas::new(layout.width, layout.height, BACKGROUND);
        let top = layout.row_top(0);
        draw_caption(&mut sheet, &layout, top, 0, &record);
        // Head, metrics, then the unsafe line: its glyphs, as drawn alone, are on the sheet.
        let y = (top + layout.panel + CAPTION_GAP + 2 * LINE_HEIGHT) as i32;
        let x = (MARGIN + draw::text_width("unsafe: ", 1)) as i32;
        let bright = UNSAFE_TEXT.map(|c| c.saturating_add(40));
        let mut alone = Canvas::new(layout.width, layout.height, BACKGROUND);
        alone.text(x, y, "一只流血的猫", 1, bright);
        let mut ink = 0;
        for py in y..y + GLYPH_HEIGHT as i32 {
            for px in x..x + 6 * 16 {
                if alone.get(px, py) == Some(bright) {
                    assert_eq!(sheet.get(px, py), Some(bright), "({px}, {py})");
                    ink += 1;
                }
            }
        }
        assert!(ink > 100, "{ink}");
    }

    #[test]
    fn a_mask_column_widens_the_sheet_by_one_panel() {
        let three = SheetLayout::new(128, 2);
        let four = three.with_mask_column();
        assert_eq!(four.width, three.width + 128 + GAP);
        assert_eq!(four.mask_column, Some(three.columns[2] + 128 + GAP));
        assert_eq!(four.mask_column.unwrap() + 128 + MARGIN, four.width);
        assert_eq!(
            (four.height, four.row_height),
            (three.height, three.row_height)
        );
        assert!(four.caption_chars() > three.caption_chars());
    }

    #[test]
    fn layout_places_three_panels_side_by_side() {
        let layout = SheetLayout::new(128, 3);
        assert_eq!(layout.width, 2 * MARGIN + 3 * 128 + 2 * GAP);
        assert_eq!(layout.columns[0], MARGIN);
        assert_eq!(layout.columns[1], layout.columns[0] + 128 + GAP);
        assert_eq!(layout.columns[2] + 128 + MARGIN, layout.width);
        assert_eq!(
            layout.height,
            layout.header_height + 3 * layout.row_height + MARGIN
        );
        assert!(layout.row_height >= 128 + CAPTION_LINES * LINE_HEIGHT);
        assert_eq!(layout.row_top(1) - layout.row_top(0), layout.row_height);
        assert_eq!(
            layout.caption_chars(),
            ((layout.width - 2 * MARGIN) / 8) as usize
        );
    }

    #[test]
    fn huge_sheets_are_refused() {
        assert!(SheetLayout::new(DEFAULT_PANEL, MAX_COUNT as u32)
            .check_size()
            .is_ok());
        let err = SheetLayout::new(1024, MAX_COUNT as u32)
            .check_size()
            .unwrap_err();
        assert!(
            err.to_string().contains("lower --count or --panel"),
            "{err}"
        );
    }

    #[test]
    fn difference_map_is_black_where_equal_and_bright_where_changed() {
        let a = Canvas::new(4, 4, [100, 100, 100]);
        let mut b = a.clone();
        b.set(2, 1, [100, 255, 100]);
        b.set(3, 3, [0, 100, 100]);
        let diff = difference_map(&a, &b);
        assert_eq!(diff.get(0, 0), Some(draw::inferno(0.0)));
        assert_eq!(diff.get(2, 1), Some(draw::inferno(155.0 / 255.0)));
        assert_eq!(diff.get(3, 3), Some(draw::inferno(100.0 / 255.0)));
    }

    #[test]
    fn panel_draws_the_box_scaled_to_the_panel() {
        let image = Canvas::new(16, 16, [0, 0, 0]);
        let mut sheet = Canvas::new(100, 100, BACKGROUND);
        let changed = ChangedBox {
            x0: 4,
            y0: 2,
            x1: 8,
            y1: 6,
        };
        draw_panel(&mut sheet, (10, 20), 64, &image, Some(changed), false);
        // Scale 4: the box spans pixels 16..32 x 8..24 of the panel.
        assert_eq!(sheet.get(10 + 16, 20 + 8), Some(BOX_COLOR));
        assert_eq!(sheet.get(10 + 31, 20 + 23), Some(BOX_COLOR));
        assert_eq!(sheet.get(10 + 32, 20 + 23), Some([0, 0, 0]));
        assert_eq!(sheet.get(10 + 20, 20 + 15), Some([0, 0, 0]));
        assert_eq!(sheet.get(10 + 15, 20 + 8), Some([0, 0, 0]));
        // Nothing outside the panel.
        assert_eq!(sheet.get(9, 19), Some(BACKGROUND));
        assert_eq!(sheet.get(74, 84), Some(BACKGROUND));
    }

    #[test]
    fn labels_shorten_to_fit() {
        let candidates = ["difference 0-255", "diff"];
        assert_eq!(fit_label(&candidates, 32), "difference 0-255");
        assert_eq!(fit_label(&candidates, 8), "diff");
        assert_eq!(fit_label(&candidates, 2), "di");
    }

    #[test]
    fn wide_images_are_centred_in_the_panel() {
        assert_eq!(fit(64, 32, 128), (2.0, 0, 32, 128, 64));
        assert_eq!(fit(512, 512, 256), (0.5, 0, 0, 256, 256));
    }

    #[test]
    fn caption_line_shows_verdict_and_metrics() {
        let mut record = sample_record();
        record.valid = false;
        record.reject_reasons = vec!["ssim-below-min".into()];
        record.psnr = f32::INFINITY;
        let (head, verdict, metrics) = verdict_lines(2, &record);
        assert_eq!(head, "#3  violence  train  ");
        assert_eq!(verdict, "INVALID (ssim-below-min)");
        assert!(metrics.contains("psnr inf dB"), "{metrics}");
        assert!(
            metrics.starts_with("ssim 0.500  changed area 0.250"),
            "{metrics}"
        );
    }
}
