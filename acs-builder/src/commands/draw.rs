//! A small RGB8 canvas for the contact sheet (`acs preview`) and the metric histograms
//! (`acs stats --plot`): filled and outlined rectangles, image blits, resizing and blurring,
//! bitmap text in GNU Unifont (8 x 16 glyphs, 16 x 16 for wide characters such as CJK; every
//! character of Unicode's basic plane) and two perceptual colormaps (inferno, viridis).
//!
//! The font: GNU Unifont 15.1.05 through the `unifont` crate (MIT), whose glyph data Unifoundry
//! publishes under the GNU GPL 2+ with the GNU font embedding exception and the SIL Open Font
//! License 1.1. A bitmap font keeps every glyph on the pixel grid at the 64-256 px panel sizes
//! a sheet uses and needs no shaping; prompts are NFC-normalised before they get here.
//!
//! Coordinates are signed pixels with the origin at the top-left corner; everything drawn is
//! clipped to the canvas, so no drawing call can panic on out-of-range input.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::error::AcsError;
use crate::store::imaging::encode_png;

/// An RGB colour.
pub type Color = [u8; 3];

/// Width of one text column at scale 1: a narrow glyph (Latin, digits, ...) takes one, a wide
/// glyph (CJK, full-width forms) two.
pub const GLYPH: u32 = 8;
/// Height of a glyph at scale 1.
pub const GLYPH_HEIGHT: u32 = 16;

/// The glyph drawn for `c`: control characters as a space, characters the font lacks (outside
/// the basic plane, unassigned) as U+FFFD.
fn glyph_of(c: char) -> Option<&'static unifont::Glyph> {
    let c = if c.is_control() { ' ' } else { c };
    unifont::get_glyph(c).or_else(|| unifont::get_glyph('\u{FFFD}'))
}

/// Columns `c` takes (1 narrow, 2 wide).
fn char_columns(c: char) -> usize {
    glyph_of(c).map_or(1, |g| if g.is_fullwidth() { 2 } else { 1 })
}

/// Columns `text` takes when drawn.
pub fn text_columns(text: &str) -> usize {
    text.chars().map(char_columns).sum()
}

/// An RGB8 image held row-major, three bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A `width` x `height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Color) -> Self {
        let count = width as usize * height as usize;
        let mut pixels = Vec::with_capacity(count * 3);
        for _ in 0..count {
            pixels.extend_from_slice(&background);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Wraps RGB8 pixels; `None` when the buffer does not hold `width * height * 3` bytes.
    pub fn from_rgb(pixels: Vec<u8>, width: u32, height: u32) -> Option<Self> {
        (pixels.len() == width as usize * height as usize * 3).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The RGB8 pixels, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at (x, y); `None` outside the canvas.
    pub fn get(&self, x: i32, y: i32) -> Option<Color> {
        let i = self.index(x, y)?;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    /// Sets the pixel at (x, y); does nothing outside the canvas.
    pub fn set(&mut self, x: i32, y: i32, color: Color) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    fn index(&self, x: i32, y: i32) -> Option<usize> {
        let inside = x >= 0 && y >= 0 && (x as u32) < self.width && (y as u32) < self.height;
        inside.then(|| (y as usize * self.width as usize + x as usize) * 3)
    }

    /// Fills the `w` x `h` rectangle whose top-left corner is (x, y).
    pub fn fill_rect(&mut self, x: i32, y: i32, w: u32, h: u32, color: Color) {
        let x0 = x.max(0) as i64;
        let y0 = y.max(0) as i64;
        let x1 = (x as i64 + w as i64).min(self.width as i64);
        let y1 = (y as i64 + h as i64).min(self.height as i64);
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.set(xx as i32, yy as i32, color);
            }
        }
    }

    /// Draws the outline of the `w` x `h` rectangle at (x, y), `thickness` pixels wide, inside
    /// the rectangle's bounds.
    pub fn rect_outline(&mut self, x: i32, y: i32, w: u32, h: u32, thickness: u32, color: Color) {
        let t = thickness.min(w).min(h);
        if t == 0 {
            return;
        }
        self.fill_rect(x, y, w, t, color);
        self.fill_rect(x, y + (h - t) as i32, w, t, color);
        self.fill_rect(x, y, t, h, color);
        self.fill_rect(x + (w - t) as i32, y, t, h, color);
    }

    /// Copies `image` with its top-left corner at (x, y), clipped to this canvas.
    pub fn blit(&mut self, image: &Canvas, x: i32, y: i32) {
        for yy in 0..image.height as i32 {
            for xx in 0..image.width as i32 {
                if let Some(color) = image.get(xx, yy) {
                    self.set(x + xx, y + yy, color);
                }
            }
        }
    }

    /// Draws `text` from (x, y), its top-left corner, with glyphs `scale` times 8 (or 16) x 16
    /// pixels; returns the x just after the last glyph.
    pub fn text(&mut self, x: i32, y: i32, text: &str, scale: u32, color: Color) -> i32 {
        let scale = scale.max(1);
        let mut pen = x;
        for c in text.chars() {
            let Some(glyph) = glyph_of(c) else {
                pen += (GLYPH * scale) as i32;
                continue;
            };
            let width = glyph.get_width();
            for row in 0..GLYPH_HEIGHT as usize {
                for col in 0..width {
                    if glyph.get_pixel(col, row) {
                        let px = pen + (col as u32 * scale) as i32;
                        let py = y + (row as u32 * scale) as i32;
                        self.fill_rect(px, py, scale, scale, color);
                    }
                }
            }
            pen += (width as u32 * scale) as i32;
        }
        pen
    }

    /// This image scaled to `width` x `height`: nearest neighbour when enlarging (keeps the
    /// pixels of small images crisp), a triangle filter when shrinking.
    pub fn resized(&self, width: u32, height: u32) -> Canvas {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        if [self.width, self.height, width, height].contains(&0) {
            return Canvas::new(width, height, [0, 0, 0]);
        }
        let filter = if width >= self.width && height >= self.height {
            FilterType::Nearest
        } else {
            FilterType::Triangle
        };
        let resized = imageops::resize(&self.to_image(), width, height, filter);
        Canvas::from_image(resized)
    }

    /// This image with a Gaussian blur of standard deviation `sigma` pixels.
    pub fn blurred(&self, sigma: f32) -> Canvas {
        if self.width == 0 || self.height == 0 || sigma.is_nan() || sigma <= 0.0 {
            return self.clone();
        }
        Canvas::from_image(imageops::blur(&self.to_image(), sigma))
    }

    fn to_image(&self) -> RgbImage {
        let (w, h) = (self.width, self.height);
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(self.get(x as i32, y as i32).unwrap_or([0, 0, 0]))
        })
    }

    fn from_image(image: RgbImage) -> Canvas {
        let (width, height) = image.dimensions();
        Canvas {
            width,
            height,
            pixels: image.into_raw(),
        }
    }

    /// The canvas as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, AcsError> {
        encode_png(&self.pixels, self.width, self.height)
    }

    /// Writes the canvas as a PNG file, atomically (temporary sibling, then rename).
    pub fn write_png(&self, path: &Path) -> Result<(), AcsError> {
        let bytes = self.to_png()?;
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            return Err(AcsError::input(format!(
                "{}: the folder {} does not exist",
                path.display(),
                folder.display()
            )));
        }
        acs_schema::write_atomic(path, &bytes)
            .map_err(|e| AcsError::input(crate::error::one_line(&e.to_string())))
    }
}

/// Draws the title `prefix` + `path` at (x, y) within `max_width` pixels, the path cut from its
/// start (`...`) when it does not fit.
pub fn path_title(
    canvas: &mut Canvas,
    (x, y): (i32, i32),
    prefix: &str,
    path: &Path,
    max_width: u32,
    color: Color,
) {
    let path = printable(&path.display().to_string());
    let columns = (max_width / GLYPH) as usize;
    let room = columns.saturating_sub(text_columns(prefix));
    let title = truncate(&format!("{prefix}{}", truncate_start(&path, room)), columns);
    canvas.text(x, y, &title, 1, color);
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text_columns(text) as u32 * GLYPH * scale.max(1)
}

/// `text` with its control characters (tabs, newlines) as spaces: one line of drawable text.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The longest prefix of `text` that fits in `columns` columns.
pub fn take_columns(text: &str, columns: usize) -> &str {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += char_columns(c);
        if used > columns {
            return &text[..i];
        }
    }
    text
}

/// The longest suffix of `text` that fits in `columns` columns.
fn take_last_columns(text: &str, columns: usize) -> &str {
    let mut used = 0;
    for (i, c) in text.char_indices().rev() {
        used += char_columns(c);
        if used > columns {
            return &text[i + c.len_utf8()..];
        }
    }
    text
}

/// Cuts `text` to at most `max_columns` columns, ending in `...` when it was longer.
pub fn truncate(text: &str, max_columns: usize) -> String {
    if text_columns(text) <= max_columns {
        return text.to_owned();
    }
    if max_columns <= 3 {
        return take_columns(text, max_columns).to_owned();
    }
    format!("{}...", take_columns(text, max_columns - 3).trim_end())
}

/// Cuts `text` to at most `max_columns` columns from its start, beginning with `...` when it
/// was longer (for paths, whose end says most).
pub fn truncate_start(text: &str, max_columns: usize) -> String {
    if text_columns(text) <= max_columns {
        return text.to_owned();
    }
    if max_columns <= 3 {
        return take_last_columns(text, max_columns).to_owned();
    }
    format!("...{}", take_last_columns(text, max_columns - 3))
}

/// Word-wraps `text` into at most `max_lines` lines of at most `max_columns` columns; words
/// longer than a line are broken (text without spaces, such as Chinese, breaks anywhere), and
/// the last line ends in `...` when text was left over.
pub fn wrap(text: &str, max_columns: usize, max_lines: usize) -> Vec<String> {
    if max_columns == 0 || max_lines == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word = word;
        loop {
            let used = text_columns(&current);
            let needed = text_columns(word) + usize::from(used > 0);
            if used + needed <= max_columns {
                if used > 0 {
                    current.push(' ');
                }
                current.push_str(word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            // A word longer than a line: break it (at least one character a line).
            let mut head = take_columns(word, max_columns);
            if head.is_empty() {
                head = &word[..word.chars().next().map_or(0, char::len_utf8)];
            }
            lines.push(head.to_owned());
            word = &word[head.len()..];
            if word.is_empty() {
                break;
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let (Some(last), true) = (lines.last_mut(), max_columns > 3) {
            *last = format!("{}...", take_columns(last, max_columns - 3).trim_end());
        }
    }
    lines
}

/// matplotlib's inferno at nine evenly spaced points (black -> purple -> orange -> pale yellow).
const INFERNO: [Color; 9] = [
    [0, 0, 4],
    [31, 12, 72],
    [85, 15, 109],
    [136, 34, 106],
    [186, 54, 85],
    [227, 89, 51],
    [249, 140, 10],
    [249, 201, 50],
    [252, 255, 164],
];

/// matplotlib's viridis at nine evenly spaced points (purple -> blue -> green -> yellow).
const VIRIDIS: [Color; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

fn colormap(table: &[Color; 9], t: f32) -> Color {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let position = t * (table.len() - 1) as f32;
    let i = (position.floor() as usize).min(table.len() - 2);
    let f = position - i as f32;
    let (a, b) = (table[i], table[i + 1]);
    let mix = |p: u8, q: u8| (p as f32 + (q as f32 - p as f32) * f).round() as u8;
    [mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2])]
}

/// The inferno colormap at `t` in [0, 1] (clamped; NaN is 0), linearly interpolated.
pub fn inferno(t: f32) -> Color {
    colormap(&INFERNO, t)
}

/// The viridis colormap at `t` in [0, 1] (clamped; NaN is 0), linearly interpolated.
pub fn viridis(t: f32) -> Color {
    colormap(&VIRIDIS, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BG: Color = [10, 20, 30];
    const INK: Color = [200, 100, 50];

    fn count(canvas: &Canvas, color: Color) -> usize {
        canvas
            .pixels()
            .chunks_exact(3)
            .filter(|p| *p == color)
            .count()
    }

    #[test]
    fn new_canvas_has_its_size_and_background() {
        let canvas = Canvas::new(7, 5, BG);
        assert_eq!((canvas.width(), canvas.height()), (7, 5));
        assert_eq!(canvas.pixels().len(), 7 * 5 * 3);
        assert_eq!(count(&canvas, BG), 35);
        assert_eq!(canvas.get(6, 4), Some(BG));
        assert_eq!(canvas.get(7, 0), None);
        assert_eq!(canvas.get(-1, 0), None);
        assert!(Canvas::from_rgb(vec![0; 5], 2, 1).is_none());
        assert!(Canvas::from_rgb(vec![0; 6], 2, 1).is_some());
    }

    #[test]
    fn fill_rect_clips_and_covers_exactly_its_area() {
        let mut canvas = Canvas::new(10, 10, BG);
        canvas.fill_rect(2, 3, 4, 5, INK);
        assert_eq!(count(&canvas, INK), 20);
        assert_eq!(canvas.get(2, 3), Some(INK));
        assert_eq!(canvas.get(5, 7), Some(INK));
        assert_eq!(canvas.get(6, 7), Some(BG));
        assert_eq!(canvas.get(5, 8), Some(BG));
        let mut clipped = Canvas::new(10, 10, BG);
        clipped.fill_rect(-5, 8, 100, 100, INK);
        assert_eq!(count(&clipped, INK), 20);
        clipped.fill_rect(i32::MAX, i32::MIN, u32::MAX, u32::MAX, INK);
    }

    #[test]
    fn outline_draws_the_border_only() {
        let mut canvas = Canvas::new(10, 10, BG);
        canvas.rect_outline(1, 1, 6, 4, 1, INK);
        assert_eq!(count(&canvas, INK), 2 * 6 + 2 * 2);
        assert_eq!(canvas.get(1, 1), Some(INK));
        assert_eq!(canvas.get(6, 4), Some(INK));
        assert_eq!(canvas.get(3, 2), Some(BG));
        let mut thick = Canvas::new(10, 10, BG);
        thick.rect_outline(0, 0, 10, 10, 2, INK);
        assert_eq!(count(&thick, INK), 100 - 36);
        thick.rect_outline(0, 0, 0, 5, 3, BG);
    }

    #[test]
    fn blit_copies_and_clips() {
        let mut image = Canvas::new(3, 2, INK);
        image.set(0, 0, [1, 2, 3]);
        let mut canvas = Canvas::new(5, 5, BG);
        canvas.blit(&image, 3, 4);
        assert_eq!(canvas.get(3, 4), Some([1, 2, 3]));
        assert_eq!(canvas.get(4, 4), Some(INK));
        assert_eq!(count(&canvas, INK), 1);
    }

    #[test]
    fn text_puts_glyph_pixels_where_the_font_has_them() {
        for (c, width) in [('I', 8), ('é', 8), ('中', 16), ('ж', 8)] {
            let mut canvas = Canvas::new(40, 20, BG);
            let end = canvas.text(2, 3, &c.to_string(), 1, INK);
            assert_eq!(end, 2 + width, "{c}");
            let glyph = unifont::get_glyph(c).unwrap();
            let mut lit = 0;
            for row in 0..16 {
                for col in 0..width as usize {
                    let on = glyph.get_pixel(col, row);
                    let pixel = canvas.get(2 + col as i32, 3 + row as i32);
                    assert_eq!(pixel == Some(INK), on, "{c}: col {col} row {row}");
                    lit += usize::from(on);
                }
            }
            assert!(lit > 0, "{c}");
            assert_eq!(count(&canvas, INK), lit, "{c}");
            let mut big = Canvas::new(80, 40, BG);
            assert_eq!(big.text(0, 0, &c.to_string(), 2, INK), 2 * width);
            assert_eq!(count(&big, INK), 4 * lit, "{c}");
        }
        // A space and a tab draw nothing; a character the font lacks draws U+FFFD.
        let mut blank = Canvas::new(40, 20, BG);
        blank.text(0, 0, " \t", 1, INK);
        assert_eq!(count(&blank, INK), 0);
        let mut missing = Canvas::new(40, 20, BG);
        missing.text(0, 0, "\u{1F600}", 1, INK);
        let mut replacement = Canvas::new(40, 20, BG);
        replacement.text(0, 0, "\u{FFFD}", 1, INK);
        assert_eq!(missing, replacement);
        assert_eq!(text_width("abc", 2), 48);
        assert_eq!(text_width("安全な画像", 1), 80);
        assert_eq!(text_columns("a猫b"), 4);
    }

    #[test]
    fn path_titles_keep_the_end_of_the_path() {
        let ink_columns = |canvas: &Canvas| {
            (0..canvas.width() as i32)
                .filter(|&x| (0..canvas.height() as i32).any(|y| canvas.get(x, y) == Some(INK)))
                .max()
        };
        let path = Path::new("/data/sets/acs");
        let mut wide = Canvas::new(400, 20, BG);
        path_title(&mut wide, (0, 0), "t: ", path, 400, INK);
        // 17 glyphs of 8 px, the whole path.
        assert!(ink_columns(&wide).unwrap() >= 16 * 8);
        let mut narrow = Canvas::new(100, 20, BG);
        path_title(&mut narrow, (0, 0), "t: ", path, 100, INK);
        assert!(ink_columns(&narrow).unwrap() < 100);
        // 12 columns: the prefix, then the path's end behind "...".
        let mut expected = Canvas::new(100, 20, BG);
        expected.text(0, 0, "t: ...ts/acs", 1, INK);
        assert!(narrow == expected, "the narrow title is not `t: ...ts/acs`");
    }

    #[test]
    fn printable_and_truncation_count_columns() {
        assert_eq!(printable("café\tbar"), "café bar");
        assert_eq!(truncate("hello world", 8), "hello...");
        assert_eq!(truncate("short", 8), "short");
        assert_eq!(truncate_start("/a/long/path/name", 10), "...th/name");
        assert_eq!(truncate_start("abcdefghijkl", 6), "...jkl");
        // Wide characters take two columns each.
        assert_eq!(truncate("一个血腥的场景", 9), "一个血...");
        assert_eq!(truncate_start("数据/安全", 7), "...安全");
    }

    #[test]
    fn wrap_breaks_on_words_and_marks_leftovers() {
        assert_eq!(
            wrap("a photo of a red car", 10, 3),
            vec!["a photo of", "a red car"]
        );
        assert_eq!(wrap("abcdefghijkl", 5, 5), vec!["abcde", "fghij", "kl"]);
        let cut = wrap("one two three four five six", 9, 2);
        assert_eq!(cut.len(), 2);
        assert!(cut[1].ends_with("..."), "{cut:?}");
        assert!(cut.iter().all(|l| l.chars().count() <= 9), "{cut:?}");
        assert!(wrap("", 10, 2).is_empty());
        assert!(wrap("text", 0, 2).is_empty());
        // Text without spaces (Chinese) breaks anywhere, by columns.
        assert_eq!(wrap("一个血腥的场景", 6, 3), vec!["一个血", "腥的场", "景"]);
        let cut = wrap("一个血腥的场景在夜里", 6, 2);
        assert_eq!(cut, vec!["一个血", "腥..."]);
        assert_eq!(wrap("a 猫", 2, 2), vec!["a", "猫"]);
    }

    #[test]
    fn colormaps_hit_their_endpoints_and_clamp() {
        assert_eq!(inferno(0.0), INFERNO[0]);
        assert_eq!(inferno(1.0), INFERNO[8]);
        assert_eq!(inferno(0.5), INFERNO[4]);
        assert_eq!(inferno(-3.0), INFERNO[0]);
        assert_eq!(inferno(7.0), INFERNO[8]);
        assert_eq!(inferno(f32::NAN), INFERNO[0]);
        assert_eq!(viridis(0.0), VIRIDIS[0]);
        assert_eq!(viridis(1.0), VIRIDIS[8]);
        // Inferno gets brighter along the map (perceptually ordered).
        let luma = |c: Color| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
        let mut last = -1.0;
        for i in 0..=32 {
            let l = luma(inferno(i as f32 / 32.0));
            assert!(l >= last - 0.5, "step {i}");
            last = l;
        }
    }

    #[test]
    fn resize_enlarges_with_nearest_and_blur_smooths() {
        let mut image = Canvas::new(2, 2, [0, 0, 0]);
        image.set(1, 0, [255, 255, 255]);
        let big = image.resized(8, 8);
        assert_eq!((big.width(), big.height()), (8, 8));
        assert_eq!(big.get(7, 0), Some([255, 255, 255]));
        assert_eq!(big.get(4, 3), Some([255, 255, 255]));
        assert_eq!(big.get(3, 3), Some([0, 0, 0]));
        assert_eq!(count(&big, [255, 255, 255]), 16);
        let small = big.resized(2, 2);
        assert_eq!((small.width(), small.height()), (2, 2));
        let blurred = big.blurred(2.0);
        assert_eq!((blurred.width(), blurred.height()), (8, 8));
        assert_ne!(blurred, big);
        assert_eq!(big.blurred(0.0), big);
    }

    #[test]
    fn png_round_trips() {
        let mut canvas = Canvas::new(6, 4, BG);
        canvas.set(5, 3, INK);
        let (rgb, w, h) = crate::store::imaging::decode_png(&canvas.to_png().unwrap()).unwrap();
        assert_eq!((w, h), (6, 4));
        assert_eq!(rgb, canvas.pixels());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        canvas.write_png(&path).unwrap();
        assert!(path.is_file());
        let err = canvas
            .write_png(&dir.path().join("missing").join("c.png"))
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
