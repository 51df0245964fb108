//! `acs detect`: the NudeNet detections of image files, as the nudenet package reports them,
//! one JSON object per image.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::AcsError;
use crate::judge::nudenet::{locate_model, postprocess, NudeDetector, LABELS};
use crate::store::imaging::decode_png;

/// One detection of an image.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionLine {
    /// The class label.
    pub class: &'static str,
    /// Its score.
    pub score: f32,
    /// `[x, y, width, height]` in pixels, as the package reports it.
    #[serde(rename = "box")]
    pub bbox: [i32; 4],
}

/// What the detector found in one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetections {
    /// The image file.
    pub image: String,
    /// Detections after non-maximum suppression.
    pub detections: Vec<DetectionLine>,
    /// Each class's highest raw score over all anchors.
    pub class_max: Vec<f32>,
}

/// The detections of every image, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct DetectReport(pub Vec<ImageDetections>);

impl fmt::Display for DetectReport {
    /// One JSON object per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for image in &self.0 {
            let line = serde_json::to_string(image).map_err(|_| fmt::Error)?;
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Runs the NudeNet model `model` (a path, or "installed") on PNG `images`.
pub fn detect(images: &[PathBuf], model: &str) -> Result<DetectReport, AcsError> {
    let path =
        locate_model(model, Path::new(".")).map_err(|e| e.with_note(" (--nudenet-model)"))?;
    let detector = NudeDetector::load(&path)?;
    images
        .iter()
        .map(|image| detect_one(&detector, image))
        .collect::<Result<_, _>>()
        .map(DetectReport)
}

fn detect_one(detector: &NudeDetector, path: &Path) -> Result<ImageDetections, AcsError> {
    let bytes = std::fs::read(path).map_err(|e| AcsError::io(path, e))?;
    let (rgb, width, height) =
        decode_png(&bytes).map_err(|e| AcsError::input(format!("{}: {e}", path.display())))?;
    let (width, height) = (width as usize, height as usize);
    let raw = detector.raw_output(&rgb, width, height)?;
    let anchors = raw.len() / (4 + LABELS.len());
    let class_max = (0..LABELS.len())
        .map(|c| {
            raw[(4 + c) * anchors..(5 + c) * anchors]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let detections = postprocess(&raw, width, height)
        .iter()
        .map(|d| DetectionLine {
            class: d.label(),
            score: d.score,
            bbox: d.int_box(),
        })
        .collect();
    Ok(ImageDetections {
        image: path.display().to_string(),
        detections,
        class_max,
    })
}
