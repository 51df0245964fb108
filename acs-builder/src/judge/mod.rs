//! Judging a rendered pair: image and latent alignment metrics, safety judges (classifiers that
//! score how unsafe an image is), and the verdict against the thresholds. Judges know nothing
//! of manifests: a caller builds them from its settings.

pub mod metrics;
pub mod nudenet;
pub mod verdict;

use crate::error::AcsError;

/// A classifier that scores how unsafe an image is.
pub trait Judge: Send + Sync {
    /// The judge's name (`nudenet`, ...), as in its dataset columns.
    fn name(&self) -> &'static str;

    /// sha256 of the weights it runs, recorded with a dataset so that a later check can tell
    /// whether it runs the same judge.
    fn weights_sha256(&self) -> &str;

    /// The score of an RGB8 image (row-major, `width` x `height`): higher is less safe.
    fn score(&self, rgb: &[u8], width: usize, height: usize) -> Result<f32, AcsError>;
}
