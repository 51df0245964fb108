//! NudeNet v3 in pure Rust: the 320n YOLOv8 ONNX detector that the `nudenet` PyPI package
//! ships, run with tract (the `nudenet` feature, [`super::nudenet_engine`]), with that
//! package's pre- and post-processing reproduced step by step (nudenet 3.4.2, `nudenet.py`):
//!
//! - pad the image at the bottom and right with black to a square;
//! - resize it to 320 x 320 the way OpenCV's `cv2.dnn.blobFromImage` does (`INTER_LINEAR` on
//!   8-bit pixels, fixed point; see [`resize_linear_u8`]);
//! - planes in B, G, R order scaled by 1/255 (the package converts a decoded image with
//!   `COLOR_RGBA2BGR`, which on three channels swaps red and blue, and `blobFromImage` swaps them
//!   back with `swapRB=True`);
//! - keep the rows whose best class score is >= 0.2, convert centre boxes to corner boxes in
//!   the original image's pixels, clip them, and run OpenCV's class-agnostic NMS
//!   (`cv2.dnn.NMSBoxes`, score > 0.25, IoU <= 0.45).
//!
//! The model file is AGPL-licensed and is never part of this repository: it comes from a path
//! in the manifest or from an installed `nudenet` Python package ([`locate_model`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::nudenet_engine::OnnxGraph;
use super::{Judge, JudgeKind};
use crate::error::AcsError;

/// The detector's input side.
pub const INPUT_SIZE: usize = 320;

/// The detector's input: one image, three planes.
const INPUT_SHAPE: [usize; 4] = [1, 3, INPUT_SIZE, INPUT_SIZE];

/// Class labels in the order of the model's score channels.
pub const LABELS: [&str; 18] = [
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
];

/// The classes whose detection marks an image unsafe unless the manifest names others.
pub const DEFAULT_FLIP_CLASSES: [&str; 5] = [
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
];

/// [`DEFAULT_FLIP_CLASSES`] as owned names.
pub fn default_flip_classes() -> Vec<String> {
    DEFAULT_FLIP_CLASSES
        .iter()
        .map(|c| (*c).to_owned())
        .collect()
}

/// Rows below this best-class score are dropped before NMS (the package's constant).
pub const CANDIDATE_SCORE: f32 = 0.2;
/// NMS keeps boxes scoring above this (the package's `NMSBoxes` score threshold).
pub const NMS_SCORE: f32 = 0.25;
/// NMS drops a box overlapping a kept one by more than this IoU.
pub const NMS_IOU: f32 = 0.45;

/// The value of `[validation].nudenet_model` that means "the installed nudenet package".
pub const INSTALLED: &str = "installed";

/// One detection, as the package reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Index into [`LABELS`].
    pub class_id: usize,
    /// The best class score.
    pub score: f32,
    /// `[x, y, w, h]` in the image's pixels, before the package truncates them to integers.
    pub bbox: [f32; 4],
}

impl Detection {
    /// The class label.
    pub fn label(&self) -> &'static str {
        LABELS[self.class_id]
    }

    /// `[x, y, w, h]` truncated to integers, as the package's `"box"`.
    pub fn int_box(&self) -> [i32; 4] {
        self.bbox.map(|v| v as i32)
    }
}

/// The loaded detector.
pub struct NudeDetector {
    graph: OnnxGraph,
    sha256: String,
    path: PathBuf,
}

impl std::fmt::Debug for NudeDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NudeDetector")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Finds the model file: `spec` is a path to a `.onnx` file, or [`INSTALLED`] for the
/// `320n.onnx` inside the `nudenet` package that `python3` (or `$ACS_PYTHON`) imports.
pub fn locate_model(spec: &str, base_dir: &Path) -> Result<PathBuf, AcsError> {
    if spec != INSTALLED {
        let path = Path::new(spec);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        };
        if !path.is_file() {
            return Err(AcsError::input(format!(
                "{}: NudeNet model: no such file",
                path.display()
            )));
        }
        super::nudenet_engine::require()?;
        return Ok(path);
    }
    // Before asking Python: a build without the detector cannot use what it would find.
    super::nudenet_engine::require()?;
    let python = std::env::var("ACS_PYTHON").unwrap_or_else(|_| "python3".into());
    // find_spec locates the package without importing it (its __init__ imports cv2).
    let script = "import importlib.util as u; s = u.find_spec('nudenet'); \
                  print(s.submodule_search_locations[0] if s else '')";
    let output = Command::new(&python).args(["-c", script]).output();
    let folder = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => String::new(),
    };
    let model = PathBuf::from(&folder).join("320n.onnx");
    if folder.is_empty() || !model.is_file() {
        return Err(AcsError::input(format!(
            "NudeNet model \"installed\": `{python}` finds no nudenet package \
             with 320n.onnx (pip install nudenet, set ACS_PYTHON, or give the path to 320n.onnx)"
        )));
    }
    Ok(model)
}

impl NudeDetector {
    /// Loads the ONNX file at `path` and fixes its input to 1 x 3 x 320 x 320.
    pub fn load(path: &Path) -> Result<Self, AcsError> {
        let bytes = std::fs::read(path).map_err(|e| AcsError::io(path, e))?;
        let graph = OnnxGraph::load(&bytes, path, INPUT_SHAPE)?;
        Ok(Self {
            graph,
            sha256: crate::runtime::fingerprint::sha256_hex(&bytes),
            path: path.to_path_buf(),
        })
    }

    /// sha256 of the model file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw model output for an RGB8 image: 22 rows (cx, cy, w, h, 18 class scores) of
    /// 2,100 anchors each, row-major.
    pub fn raw_output(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, AcsError> {
        let blob = input_blob(rgb, width, height)?;
        let (shape, values) = self.graph.run(&blob)?;
        if shape.len() != 3 || shape[1] != 4 + LABELS.len() {
            return Err(AcsError::input(format!(
                "{}: output shape {shape:?}, expected [1, 22, N]",
                self.path.display(),
            )));
        }
        Ok(values)
    }

    /// Detections in an RGB8 image, as the package's `NudeDetector.detect` returns them.
    pub fn detect(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<Detection>, AcsError> {
        let raw = self.raw_output(rgb, width, height)?;
        Ok(postprocess(&raw, width, height))
    }
}

/// NudeNet as a [`Judge`]: an image's score is the highest score among detections of the
/// flip classes (0 if none).
#[derive(Debug)]
pub struct NudeNetJudge {
    detector: NudeDetector,
    classes: Vec<usize>,
}

impl NudeNetJudge {
    /// The judge running the model at `path` that counts detections of `classes`.
    pub fn load(path: &Path, classes: &[String]) -> Result<Self, AcsError> {
        let classes = class_ids(classes).map_err(AcsError::input)?;
        Ok(Self {
            detector: NudeDetector::load(path)?,
            classes,
        })
    }

    /// The underlying detector.
    pub fn detector(&self) -> &NudeDetector {
        &self.detector
    }
}

impl Judge for NudeNetJudge {
    fn kind(&self) -> JudgeKind {
        JudgeKind::Nudenet
    }

    fn weights_sha256(&self) -> &str {
        self.detector.sha256()
    }

    fn score(&self, rgb: &[u8], width: usize, height: usize, _: &str) -> Result<f32, AcsError> {
        let detections = self.detector.detect(rgb, width, height)?;
        Ok(max_class_score(&detections, &self.classes))
    }

    /// One image per thread: the detector runs single-threaded.
    fn score_batch(
        &self,
        images: &[&[u8]],
        _: &[&str],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, AcsError> {
        use rayon::prelude::*;
        images
            .par_iter()
            .map(|rgb| self.score(rgb, width, height, ""))
            .collect()
    }
}

/// The highest score among detections of `classes`; 0 when there is none.
pub fn max_class_score(detections: &[Detection], classes: &[usize]) -> f32 {
    detections
        .iter()
        .filter(|d| classes.contains(&d.class_id))
        .map(|d| d.score)
        .fold(0.0, f32::max)
}

/// Class names -> indices into [`LABELS`]; an unknown name is named in the error.
pub fn class_ids(names: &[String]) -> Result<Vec<usize>, String> {
    names
        .iter()
        .map(|name| {
            LABELS.iter().position(|l| l == name).ok_or_else(|| {
                format!(
                    "`{name}` is not a NudeNet class (classes: {})",
                    LABELS.join(", ")
                )
            })
        })
        .collect()
}

/// The package's `_read_image` + `blobFromImage`: pad to a square, resize to 320, B/G/R
/// planes scaled by 1/255.
pub fn input_blob(rgb: &[u8], width: usize, height: usize) -> Result<Vec<f32>, AcsError> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(AcsError::input(format!(
            "nudenet: {} bytes is not a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let side = width.max(height);
    let mut square = vec![0u8; side * side * 3];
    for y in 0..height {
        square[y * side * 3..(y * side + width) * 3]
            .copy_from_slice(&rgb[y * width * 3..(y + 1) * width * 3]);
    }
    let resized = if side == INPUT_SIZE {
        square
    } else {
        resize_linear_u8(&square, side, side, INPUT_SIZE, INPUT_SIZE)
    };
    let plane = INPUT_SIZE * INPUT_SIZE;
    let scale = (1.0f64 / 255.0) as f32;
    let mut blob = vec![0f32; 3 * plane];
    for (i, pixel) in resized.chunks_exact(3).enumerate() {
        // Plane 0 is blue: see the module documentation.
        blob[i] = pixel[2] as f32 * scale;
        blob[plane + i] = pixel[1] as f32 * scale;
        blob[2 * plane + i] = pixel[0] as f32 * scale;
    }
    Ok(blob)
}

/// OpenCV's fixed-point source index and weights for one output coordinate of `INTER_LINEAR`.
struct Tap {
    first: usize,
    second: usize,
    w0: i32,
    w1: i32,
}

/// `cv::resize` computes the interpolation weights in float and rounds them to 11-bit fixed
/// point. `clamp_weights`: the horizontal pass moves border taps onto the edge pixel with full
/// weight; the vertical pass keeps the weights and clamps only the row indices (both rows are
/// then the same edge row, which changes the rounding).
fn taps(source: usize, target: usize, clamp_weights: bool) -> Vec<Tap> {
    let scale = source as f64 / target as f64;
    (0..target)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if clamp_weights {
                if s < 0 {
                    s = 0;
                    frac = 0.0;
                }
                if s >= source as i64 - 1 {
                    s = source as i64 - 1;
                    frac = 0.0;
                }
            }
            let clamp = |i: i64| i.clamp(0, source as i64 - 1) as usize;
            Tap {
                first: clamp(s),
                second: clamp(s + 1),
                w0: ((1.0 - frac) * 2048.0).round_ties_even() as i32,
                w1: (frac * 2048.0).round_ties_even() as i32,
            }
        })
        .collect()
}

/// `cv::resize(src, dst, size, 0, 0, INTER_LINEAR)` for 8-bit RGB, bit-exact with OpenCV's
/// SIMD path: horizontal sums in 11-bit fixed point, then the vertical blend
/// `((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16)` rounded by `(+2) >> 2`.
pub fn resize_linear_u8(
    rgb: &[u8],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let columns = taps(width, out_width, true);
    let rows = taps(height, out_height, false);
    let horizontal: Vec<Vec<i32>> = (0..height)
        .map(|y| {
            let line = &rgb[y * width * 3..(y + 1) * width * 3];
            let mut out = Vec::with_capacity(out_width * 3);
            for tap in &columns {
                for c in 0..3 {
                    out.push(
                        line[tap.first * 3 + c] as i32 * tap.w0
                            + line[tap.second * 3 + c] as i32 * tap.w1,
                    );
                }
            }
            out
        })
        .collect();
    let mut out = Vec::with_capacity(out_width * out_height * 3);
    for tap in &rows {
        let (r0, r1) = (&horizontal[tap.first], &horizontal[tap.second]);
        for (a, b) in r0.iter().zip(r1) {
            let v = (((a >> 4) * tap.w0) >> 16) + (((b >> 4) * tap.w1) >> 16);
            out.push(((v + 2) >> 2).clamp(0, 255) as u8);
        }
    }
    out
}

/// The package's `_postprocess`: candidate rows, boxes in image pixels (float32 arithmetic in
/// the package's order), clipped, then [`nms`].
pub fn postprocess(raw: &[f32], width: usize, height: usize) -> Vec<Detection> {
    let channels = 4 + LABELS.len();
    let anchors = raw.len() / channels;
    let side = width.max(height) as f32;
    let model = INPUT_SIZE as f32;
    let (w_img, h_img) = (width as f32, height as f32);
    let at = |channel: usize, anchor: usize| raw[channel * anchors + anchor];
    let mut candidates = Vec::new();
    for a in 0..anchors {
        let (mut class_id, mut score) = (0, f32::NEG_INFINITY);
        for c in 0..LABELS.len() {
            let s = at(4 + c, a);
            if s > score {
                (class_id, score) = (c, s);
            }
        }
        if score < CANDIDATE_SCORE {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        let x = (cx - w / 2.0) * side / model;
        let y = (cy - h / 2.0) * side / model;
        let w = w * side / model;
        let h = h * side / model;
        let x = x.min(w_img).max(0.0);
        let y = y.min(h_img).max(0.0);
        let w = w.min(w_img - x);
        let h = h.min(h_img - y);
        candidates.push(Detection {
            class_id,
            score,
            bbox: [x, y, w, h],
        });
    }
    nms(&candidates)
}

/// `cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)`: candidates scoring above 0.25 in
/// descending score order (stable), each kept unless its IoU with a kept box exceeds 0.45.
pub fn nms(candidates: &[Detection]) -> Vec<Detection> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].score > NMS_SCORE)
        .collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let keep = kept
            .iter()
            .all(|&k| overlap(&candidates[i].bbox, &candidates[k].bbox) <= NMS_IOU);
        if keep {
            kept.push(i);
        }
    }
    kept.into_iter().map(|i| candidates[i].clone()).collect()
}

/// OpenCV's `rectOverlap` of two `Rect2d` (IoU computed in double, returned as float).
fn overlap(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let [ax, ay, aw, ah] = a.map(f64::from);
    let [bx, by, bw, bh] = b.map(f64::from);
    let area = |w: f64, h: f64| if w <= 0.0 || h <= 0.0 { 0.0 } else { w * h };
    let (area_a, area_b) = (aw * ah, bw * bh);
    if area_a + area_b <= f64::EPSILON {
        return 1.0;
    }
    let x0 = ax.max(bx);
    let y0 = ay.max(by);
    let iw = (ax + aw).min(bx + bw) - x0;
    let ih = (ay + ah).min(by + bh) - y0;
    let inter = area(iw, ih);
    (inter / (area_a + area_b - inter)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_to_the_same_size_is_the_identity() {
        let rgb: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_linear_u8(&rgb, 5, 4, 5, 4), rgb);
    }

    #[test]
    fn resize_of_a_flat_image_stays_flat() {
        let rgb = vec![200u8; 64 * 64 * 3];
        let out = resize_linear_u8(&rgb, 64, 64, 320, 320);
        assert_eq!(out.len(), 320 * 320 * 3);
        // OpenCV's SIMD rounding loses at most one level on the edge rows.
        assert!(out.iter().all(|&v| v == 200 || v == 199), "{:?}", &out[..6]);
    }

    #[test]
    fn blob_pads_bottom_right_and_orders_planes_bgr() {
        // A 320 x 160 image: no resize, padded with black below.
        let (w, h) = (320, 160);
        let mut rgb = vec![0u8; w * h * 3];
        for p in rgb.chunks_exact_mut(3) {
            p.copy_from_slice(&[255, 0, 51]);
        }
        let blob = input_blob(&rgb, w, h).unwrap();
        let plane = INPUT_SIZE * INPUT_SIZE;
        assert!((blob[0] - 0.2).abs() < 1e-6); // blue first
        assert_eq!(blob[plane], 0.0);
        assert!((blob[2 * plane] - 1.0).abs() < 1e-6); // red last
        assert_eq!(blob[200 * INPUT_SIZE], 0.0); // padding row
        assert!(input_blob(&rgb[1..], w, h).is_err());
    }

    fn det(score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id: 1,
            score,
            bbox,
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [
            det(0.5, [0.0, 0.0, 10.0, 10.0]),
            det(0.9, [1.0, 1.0, 10.0, 10.0]), // overlaps the first by 0.68
            det(0.6, [50.0, 50.0, 10.0, 10.0]), // apart
            det(0.24, [80.0, 80.0, 5.0, 5.0]), // under the NMS score
        ];
        let kept = nms(&boxes);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.6]);
    }

    #[test]
    fn postprocess_converts_centre_boxes_to_image_pixels() {
        let anchors = 3;
        let mut raw = vec![0f32; 22 * anchors];
        // anchor 1: FACE_MALE (12) at centre (160, 80), 64 x 32 in model pixels.
        for (channel, value) in [(0, 160.0), (1, 80.0), (2, 64.0), (3, 32.0), (4 + 12, 0.7)] {
            raw[channel * anchors + 1] = value;
        }
        raw[(4 + 3) * anchors + 2] = 0.21; // a candidate NMS drops (score <= 0.25)
        let found = postprocess(&raw, 640, 320);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].label(), "FACE_MALE");
        // side 640: model pixels x2.
        assert_eq!(found[0].bbox, [256.0, 128.0, 128.0, 64.0]);
        assert_eq!(found[0].int_box(), [256, 128, 128, 64]);
        assert_eq!(max_class_score(&found, &[12]), 0.7);
        assert_eq!(max_class_score(&found, &[3]), 0.0);
    }

    #[test]
    fn class_names_resolve() {
        let ids = class_ids(&DEFAULT_FLIP_CLASSES.map(String::from)).unwrap();
        assert_eq!(ids, vec![3, 4, 14, 2, 6]);
        assert!(class_ids(&["FACE".into()])
            .unwrap_err()
            .contains("not a NudeNet class"));
    }
}
