//! Reading the objects of an RGB8 image of flat coloured shapes on a plain background.
//!
//! The background is the mean of the 1-pixel border. A pixel is foreground when its CIE76
//! distance from it exceeds [`FOREGROUND_DELTA_E`]; foreground pixels form 8-connected
//! components, and those of at least [`MIN_AREA_PER_4096`] pixels (per 64 x 64) are objects.
//! A blurred rim blends object and background, so a component's colour and shape are read
//! from its pixels by coverage: a pixel's contrast (CIE76 from the background) over the
//! component's full contrast. Colour is the nearest palette hue of the mean of the pixels of
//! at least [`COLOUR_COVERAGE`] (HSV hue does not move when a colour mixes with a grey); shape
//! comes from the pixels of at least [`SHAPE_COVERAGE`], where an unblurred edge would be.
//!
//! Shape thresholds sit halfway between the classes as measured on generator scenes (seeds
//! 0..2000, 64 px, every size) clean and 3 x 3 box-blurred (`measure_shape_statistics`):
//!
//! | shape    | solidity     | extent       | offset = abs(drop - 0.5) |
//! |----------|--------------|--------------|--------------------------|
//! | circle   | 0.948..0.964 | 0.778..0.815 | 0.000                    |
//! | square   | 0.990..1.000 | 0.980..1.000 | 0.000                    |
//! | triangle | 0.891..0.937 | 0.565..0.679 | 0.116..0.151             |
//! | star     | 0.529..0.815 | 0.426..0.688 | 0.007..0.062             |
//!
//! Solidity alone cannot tell a blurred small star (up to 0.815) from a small triangle (from
//! 0.891 clean, 0.828 blurred and noisy), so triangles are told by where their mass sits.
//! Noise of +-8 a channel leaves every figure as it is clean.

use super::colour::{delta_e76, hue_distance, hue_saturation, lab, lab_image};
use super::scene::{Background, Colour, Position, Shape};

/// A named background must lie within this CIE76 distance of the border's mean colour
/// (white, gray and black are 46 and 54 apart).
pub const BACKGROUND_MAX_DELTA_E: f64 = 30.0;
/// A pixel is foreground when its CIE76 distance from the background's mean exceeds this.
/// Every palette colour is at least 80 from every background, a half-and-half blend at least
/// 42 and a one-third blend 27..47: 25 takes in the whole blurred rim of an object (its shape
/// is then read by coverage) and stays well above +-8 noise on a background (at most 11).
pub const FOREGROUND_DELTA_E: f64 = 25.0;
/// Components smaller than this many pixels per 64 x 64 pixels are dropped as noise (the
/// smallest generator object, a small star, has 50).
pub const MIN_AREA_PER_4096: f64 = 12.0;
/// A component's shape is read from its pixels of at least this coverage.
pub const SHAPE_COVERAGE: f64 = 0.5;
/// A component's colour is the mean of its pixels of at least this coverage.
pub const COLOUR_COVERAGE: f64 = 0.75;
/// A component whose mean colour has a lower HSV saturation has no colour name (the
/// palette's lowest is 0.78, green).
pub const MIN_SATURATION: f64 = 0.25;
/// At or above this extent a component is a square (squares 0.980 and up, every other shape
/// 0.815 and below).
pub const SQUARE_MIN_EXTENT: f64 = 0.9;
/// At or above this offset of its drop from 0.5 a component that is not a square is a
/// triangle (triangles 0.116 and up, every other shape 0.062 and below).
pub const TRIANGLE_MIN_OFFSET: f64 = 0.09;
/// Below this solidity a component that is neither square nor triangle is a star, else a
/// circle (stars 0.815 and below, circles 0.948 and up).
pub const STAR_MAX_SOLIDITY: f64 = 0.88;
/// An object whose box centre lies within this many pixels (of 64) of the image centre on
/// both axes is in the center.
pub const CENTER_HALF_WIDTH: f64 = 8.0;

/// One object (connected foreground component) read from an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadObject {
    /// Its colour by hue; `None` for a greyish blob.
    pub colour: Option<Colour>,
    /// Its shape by extent, drop and solidity; `None` when its half-coverage pixels span fewer
    /// than three rows or columns.
    pub shape: Option<Shape>,
    /// The mean of its pixel centres (x, y), in pixels.
    pub centroid: (f64, f64),
    /// Its pixel count.
    pub area: usize,
    /// Its bounding box `[x_min, y_min, x_max, y_max]`, inclusive, in pixels.
    pub bbox: [usize; 4],
    /// Its pixels: `width * height` flags, row-major.
    pub mask: Vec<bool>,
    /// Its mean colour (sRGB, 0..=255) over its pixels of at least [`COLOUR_COVERAGE`].
    pub mean_rgb: [f64; 3],
    /// Of its pixels of at least [`SHAPE_COVERAGE`]: their area over the area of the convex
    /// hull of their pixel squares.
    pub solidity: f64,
    /// Of the same pixels: their area over their box's (the box of the rows and columns
    /// holding at least two of them).
    pub extent: f64,
    /// Of the same pixels: how far down that box their mean lies (0 top, 1 bottom).
    pub drop: f64,
}

impl ReadObject {
    /// The centre of its bounding box (x, y), in pixels.
    pub fn box_centre(&self) -> (f64, f64) {
        let [x0, y0, x1, y1] = self.bbox;
        ((x0 + x1 + 1) as f64 / 2.0, (y0 + y1 + 1) as f64 / 2.0)
    }

    /// Its position as the only object of a `width` x `height` image: center when its box
    /// centre is near the image centre, else the dominant axis' side. The box centre, not the
    /// centroid, because it is the generator's object centre (a triangle's centroid sits r/3
    /// below it).
    pub fn position(&self, width: usize, height: usize) -> Position {
        let (x, y) = self.box_centre();
        let dx = (x - width as f64 / 2.0) * 64.0 / width as f64;
        let dy = (y - height as f64 / 2.0) * 64.0 / height as f64;
        if dx.abs() < CENTER_HALF_WIDTH && dy.abs() < CENTER_HALF_WIDTH {
            Position::Center
        } else if dx.abs() >= dy.abs() {
            if dx < 0.0 {
                Position::Left
            } else {
                Position::Right
            }
        } else if dy < 0.0 {
            Position::Top
        } else {
            Position::Bottom
        }
    }

    /// Which half it is in as one of two objects: left when its box centre is left of the
    /// image's middle.
    pub fn side(&self, width: usize) -> Position {
        if self.box_centre().0 < width as f64 / 2.0 {
            Position::Left
        } else {
            Position::Right
        }
    }
}

/// The objects of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadScene {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// The nearest named background; `None` if none is within [`BACKGROUND_MAX_DELTA_E`].
    pub background: Option<Background>,
    /// The mean colour of the 1-pixel border (sRGB, 0..=255).
    pub background_rgb: [f64; 3],
    /// The components of at least the minimum area, largest first.
    pub objects: Vec<ReadObject>,
}

/// Reads an RGB8 image (row-major, `width * height * 3` bytes).
pub fn read_scene(rgb: &[u8], width: usize, height: usize) -> Result<ReadScene, String> {
    let (w, h) = (width, height);
    if w < 3 || h < 3 {
        return Err(format!("a {w} x {h} image is too small to read"));
    }
    let bytes = w.checked_mul(h).and_then(|n| n.checked_mul(3));
    if bytes != Some(rgb.len()) {
        return Err(format!(
            "a {w} x {h} RGB8 image has {} bytes, not {}",
            w.saturating_mul(h).saturating_mul(3),
            rgb.len()
        ));
    }
    let labs = lab_image(rgb);
    let border: Vec<usize> = (0..w * h)
        .filter(|&i| i % w == 0 || i % w == w - 1 || i / w == 0 || i / w == h - 1)
        .collect();
    let background_rgb = mean_rgb(rgb, &border);
    let background_lab = lab(background_rgb);
    let background = Background::ALL
        .into_iter()
        .map(|b| (b, delta_e76(lab(b.rgb().map(f64::from)), background_lab)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, d)| *d <= BACKGROUND_MAX_DELTA_E)
        .map(|(b, _)| b);
    let contrast: Vec<f64> = labs.iter().map(|&p| delta_e76(p, background_lab)).collect();
    let foreground: Vec<bool> = contrast.iter().map(|&d| d > FOREGROUND_DELTA_E).collect();
    let min_area = MIN_AREA_PER_4096 * (w * h) as f64 / 4096.0;
    let mut objects: Vec<ReadObject> = components(&foreground, w, h)
        .into_iter()
        .filter(|c| c.len() as f64 >= min_area)
        .map(|pixels| read_object(rgb, &contrast, w, h, pixels))
        .collect();
    // Stable: equal areas keep their raster order.
    objects.sort_by_key(|o| std::cmp::Reverse(o.area));
    Ok(ReadScene {
        width: w,
        height: h,
        background,
        background_rgb,
        objects,
    })
}

fn mean_rgb(rgb: &[u8], pixels: &[usize]) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for &i in pixels {
        for (s, &v) in sum.iter_mut().zip(&rgb[3 * i..3 * i + 3]) {
            *s += f64::from(v);
        }
    }
    sum.map(|s| s / pixels.len().max(1) as f64)
}

/// The 8-connected components of a mask, each as its pixel indices, in raster order of their
/// first pixel.
fn components(mask: &[bool], w: usize, h: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut found = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        pixels.sort_unstable();
        found.push(pixels);
    }
    found
}

/// The features of one component of `pixels` (raster-sorted indices).
fn read_object(rgb: &[u8], contrast: &[f64], w: usize, h: usize, pixels: Vec<usize>) -> ReadObject {
    let mut mask = vec![false; w * h];
    let mut bbox = [usize::MAX, usize::MAX, 0, 0];
    let (mut sx, mut sy) = (0.0, 0.0);
    for &i in &pixels {
        mask[i] = true;
        let (x, y) = (i % w, i / w);
        bbox = [
            bbox[0].min(x),
            bbox[1].min(y),
            bbox[2].max(x),
            bbox[3].max(y),
        ];
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
    }
    let area = pixels.len();
    let centroid = (sx / area as f64, sy / area as f64);
    // A blurred rim blends object and background: a pixel's contrast over the object's full
    // contrast estimates how much of it the object covers. The full contrast is the 90th
    // percentile, robust to noise and to the few pure pixels of a small blurred star.
    let mut sorted: Vec<f64> = pixels.iter().map(|&i| contrast[i]).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let full = sorted[(sorted.len() - 1) * 9 / 10];
    let covering = |coverage: f64| -> Vec<usize> {
        let floor = coverage * full;
        pixels
            .iter()
            .copied()
            .filter(|&i| contrast[i] >= floor)
            .collect()
    };
    let mean_rgb = mean_rgb(rgb, &covering(COLOUR_COVERAGE));
    let (hue, saturation) = hue_saturation(mean_rgb);
    let colour = (saturation >= MIN_SATURATION).then(|| palette_colour(hue));
    let (solidity, extent, drop) = shape_features(&covering(SHAPE_COVERAGE), w, h);
    let shape = (solidity > 0.0).then(|| classify_shape(solidity, extent, drop));
    ReadObject {
        colour,
        shape,
        centroid,
        area,
        bbox,
        mask,
        mean_rgb,
        solidity,
        extent,
        drop,
    }
}

/// The palette colour of the nearest hue.
fn palette_colour(hue: f64) -> Colour {
    let distance = |c: Colour| hue_distance(hue, hue_saturation(c.rgb().map(f64::from)).0);
    Colour::ALL
        .into_iter()
        .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
        .unwrap_or(Colour::Red)
}

/// Solidity, extent and drop of a raster-sorted pixel set; all 0 when it spans fewer than
/// three rows or columns. Extent and drop use the box of the rows and columns holding at
/// least two pixels, so that a stray rim pixel (noise) does not stretch the box.
fn shape_features(pixels: &[usize], w: usize, h: usize) -> (f64, f64, f64) {
    let (mut rows, mut cols) = (vec![0usize; h], vec![0usize; w]);
    for &i in pixels {
        rows[i / w] += 1;
        cols[i % w] += 1;
    }
    let span = |counts: &[usize]| {
        let dense = |min: usize| {
            let first = counts.iter().position(|&n| n >= min)?;
            let last = counts.iter().rposition(|&n| n >= min)?;
            Some((first, last))
        };
        dense(2).or_else(|| dense(1)).unwrap_or((0, 0))
    };
    let ((y0, y1), (x0, x1)) = (span(&rows), span(&cols));
    if y1 < y0 + 2 || x1 < x0 + 2 {
        return (0.0, 0.0, 0.0);
    }
    let (mut inside, mut sum_y) = (0usize, 0.0);
    for &i in pixels {
        let (x, y) = (i % w, i / w);
        if (y0..=y1).contains(&y) && (x0..=x1).contains(&x) {
            inside += 1;
            sum_y += y as f64 + 0.5;
        }
    }
    let (height, width) = ((y1 + 1 - y0) as f64, (x1 + 1 - x0) as f64);
    let solidity = pixels.len() as f64 / hull_area(pixels, w).max(1.0);
    let extent = inside as f64 / (height * width);
    let drop = (sum_y / inside.max(1) as f64 - y0 as f64) / height;
    (solidity, extent, drop)
}

/// The shape of a component from its solidity, extent and drop (see the thresholds).
pub fn classify_shape(solidity: f64, extent: f64, drop: f64) -> Shape {
    if extent >= SQUARE_MIN_EXTENT {
        Shape::Square
    } else if (drop - 0.5).abs() >= TRIANGLE_MIN_OFFSET {
        Shape::Triangle
    } else if solidity < STAR_MAX_SOLIDITY {
        Shape::Star
    } else {
        Shape::Circle
    }
}

/// The area of the convex hull of the unit squares of a set of pixels (raster-sorted indices).
fn hull_area(pixels: &[usize], w: usize) -> f64 {
    // Only each row's outermost squares can reach the hull.
    let mut points: Vec<(i64, i64)> = Vec::new();
    let mut row_start = 0;
    while row_start < pixels.len() {
        let y = pixels[row_start] / w;
        let mut row_end = row_start;
        while row_end + 1 < pixels.len() && pixels[row_end + 1] / w == y {
            row_end += 1;
        }
        let (x0, x1) = (pixels[row_start] % w, pixels[row_end] % w);
        let (x0, x1, y) = (x0 as i64, x1 as i64 + 1, y as i64);
        points.extend([(x0, y), (x0, y + 1), (x1, y), (x1, y + 1)]);
        row_start = row_end + 1;
    }
    points.sort_unstable();
    points.dedup();
    if points.len() < 3 {
        return 0.0;
    }
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    // Andrew's monotone chain.
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * points.len());
    for pass in 0..2 {
        let floor = hull.len();
        let ordered: Box<dyn Iterator<Item = &(i64, i64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in ordered {
            while hull.len() >= floor + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    let twice: i64 = (0..hull.len())
        .map(|i| {
            let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    twice.abs() as f64 / 2.0
}

#[cfg(test)]
mod tests {
    use super::super::scene::Scene;
    use super::super::test_support::{blur3, noise, Degrade};
    use super::*;

    /// The generator's objects at 64 px, each with what was read for it (matched by x order).
    fn read_generator_objects(
        degrade: Degrade,
    ) -> Vec<(super::super::scene::SceneObject, ReadObject)> {
        let mut pairs = Vec::new();
        for seed in 0..2000u64 {
            let scene = Scene::draw(seed);
            let read = read_scene(&degrade(&scene.render(64), seed), 64, 64).unwrap();
            assert_eq!(read.objects.len(), scene.objects.len(), "seed {seed}");
            let mut objects = read.objects;
            objects.sort_by(|a, b| a.box_centre().0.total_cmp(&b.box_centre().0));
            pairs.extend(scene.objects.iter().copied().zip(objects));
        }
        pairs
    }

    /// Each shape's solidity, extent and |drop - 0.5| ranges on generator scenes (printed with
    /// `--nocapture`): the thresholds must separate the classes in the order the reader tries
    /// them (square by extent, triangle by drop, star by solidity, else circle).
    #[test]
    fn the_thresholds_separate_the_shapes() {
        let cases: [(&str, Degrade); 4] = [
            ("clean", &|img, _| img.to_vec()),
            ("blurred", &|img, _| blur3(img, 64, 64)),
            ("noisy", &|img, seed| noise(img, seed)),
            ("blurred+noisy", &|img, seed| {
                noise(&blur3(img, 64, 64), seed)
            }),
        ];
        for (label, degrade) in cases {
            for shape in Shape::ALL {
                let mut ranges = [(f64::MAX, f64::MIN); 3];
                for (_, read) in read_generator_objects(degrade)
                    .into_iter()
                    .filter(|(o, _)| o.shape == shape)
                {
                    let values = [read.solidity, read.extent, (read.drop - 0.5).abs()];
                    for (range, v) in ranges.iter_mut().zip(values) {
                        *range = (range.0.min(v), range.1.max(v));
                    }
                }
                let [s, e, d] = ranges;
                match shape {
                    Shape::Square => assert!(e.0 >= SQUARE_MIN_EXTENT, "{label} square"),
                    _ => assert!(e.1 < SQUARE_MIN_EXTENT, "{label} {shape:?} extent"),
                }
                match shape {
                    Shape::Square => {}
                    Shape::Triangle => assert!(d.0 >= TRIANGLE_MIN_OFFSET, "{label} triangle"),
                    _ => assert!(d.1 < TRIANGLE_MIN_OFFSET, "{label} {shape:?} drop"),
                }
                match shape {
                    Shape::Star => assert!(s.1 < STAR_MAX_SOLIDITY, "{label} star"),
                    Shape::Circle => assert!(s.0 >= STAR_MAX_SOLIDITY, "{label} circle"),
                    _ => {}
                }
                println!(
                    "{label:14} {:8} solidity {:.3}..{:.3} extent {:.3}..{:.3} offset {:.3}..{:.3}",
                    shape.name(),
                    s.0,
                    s.1,
                    e.0,
                    e.1,
                    d.0,
                    d.1
                );
            }
        }
    }

    #[test]
    fn generator_objects_are_read_right() {
        for (object, read) in read_generator_objects(&|img, _| img.to_vec()) {
            assert_eq!(read.colour, Some(object.colour));
            assert_eq!(read.shape, Some(object.shape));
        }
    }

    #[test]
    fn one_object_positions() {
        for seed in 0..400u64 {
            let scene = Scene::draw(seed);
            if scene.objects.len() != 1 {
                continue;
            }
            let read = read_scene(&scene.render(64), 64, 64).unwrap();
            assert_eq!(read.objects[0].position(64, 64), scene.objects[0].position);
            // The same at 128 px: positions scale.
            let read = read_scene(&scene.render(128), 128, 128).unwrap();
            assert_eq!(
                read.objects[0].position(128, 128),
                scene.objects[0].position
            );
            assert_eq!(read.objects[0].shape, Some(scene.objects[0].shape));
        }
    }

    #[test]
    fn backgrounds_are_named_or_not() {
        let grey = [120u8, 130, 125].repeat(64 * 64);
        let read = read_scene(&grey, 64, 64).unwrap();
        assert_eq!(read.background, Some(Background::Gray));
        assert!(read.objects.is_empty());
        let pink = [255u8, 120, 200].repeat(32 * 32);
        assert_eq!(read_scene(&pink, 32, 32).unwrap().background, None);
    }

    #[test]
    fn greyish_and_tiny_blobs() {
        let mut image = [255u8; 3].repeat(64 * 64);
        // A 6 x 6 dark grey block: a colourless object; a 3 x 3 speck: dropped.
        for (x0, y0, n) in [(10, 10, 6), (40, 40, 3)] {
            for y in y0..y0 + n {
                for x in x0..x0 + n {
                    image[3 * (y * 64 + x)..3 * (y * 64 + x) + 3].copy_from_slice(&[60, 60, 60]);
                }
            }
        }
        let read = read_scene(&image, 64, 64).unwrap();
        assert_eq!(read.objects.len(), 1);
        assert_eq!(read.objects[0].colour, None);
        assert_eq!(read.objects[0].shape, Some(Shape::Square));
        assert_eq!(read.objects[0].bbox, [10, 10, 15, 15]);
        assert_eq!(read.objects[0].centroid, (13.0, 13.0));
    }

    #[test]
    fn bad_buffers_are_errors() {
        assert!(read_scene(&[0; 10], 64, 64).is_err());
        assert!(read_scene(&[0; 12], 2, 2).is_err());
        assert!(read_scene(&[], usize::MAX, 3).is_err());
    }

    #[test]
    fn hull_of_pixel_squares() {
        // A 3 x 3 block: hull area 9; an L of three pixels: hull area 3.5.
        let block: Vec<usize> = (0..3)
            .flat_map(|y| (0..3).map(move |x| y * 10 + x))
            .collect();
        assert_eq!(hull_area(&block, 10), 9.0);
        assert_eq!(hull_area(&[0, 10, 11], 10), 3.5);
    }
}
