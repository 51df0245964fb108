//! The engine that runs NudeNet's ONNX graph: tract, when acs is built with the `nudenet`
//! feature. Without it, loading a model says how to get a build that has it; everything else
//! of the judge (pre- and post-processing, class names, settings checks) is always built.

#[cfg(not(feature = "nudenet"))]
use std::path::Path;

use crate::error::AcsError;

#[cfg(feature = "nudenet")]
mod tract_engine {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use tract_onnx::prelude::*;

    use crate::error::{one_line, AcsError};

    /// An ONNX graph optimised for one fixed input shape.
    pub struct OnnxGraph {
        plan: Arc<TypedRunnableModel>,
        shape: [usize; 4],
        path: PathBuf,
    }

    impl OnnxGraph {
        /// Loads the graph in `bytes` (read from `path`) with its first input fixed to `shape`.
        pub fn load(bytes: &[u8], path: &Path, shape: [usize; 4]) -> Result<Self, AcsError> {
            let fail = |e: TractError| {
                AcsError::input(format!(
                    "{}: not a loadable NudeNet ONNX model: {}",
                    path.display(),
                    one_line(&format!("{e:#}"))
                ))
            };
            // The file declares a symbolic batch in its value_info and output shapes; tract
            // only unifies it with 1 when told to ignore them.
            let plan = tract_onnx::onnx()
                .with_ignore_output_shapes(true)
                .with_ignore_value_info(true)
                .model_for_read(&mut &bytes[..])
                .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(fail)?;
            Ok(Self {
                plan,
                shape,
                path: path.to_path_buf(),
            })
        }

        /// Runs the graph on `input` (of the load shape): the first output's shape and values.
        pub fn run(&self, input: &[f32]) -> Result<(Vec<usize>, Vec<f32>), AcsError> {
            let input = Tensor::from_shape(&self.shape, input)
                .map_err(|e| AcsError::input(format!("nudenet input: {e}")))?;
            let outputs = self.plan.run(tvec!(input.into())).map_err(|e| {
                AcsError::internal(format!(
                    "{}: nudenet inference failed: {}",
                    self.path.display(),
                    one_line(&format!("{e:#}"))
                ))
            })?;
            let view = outputs[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| AcsError::input(format!("nudenet output: {e}")))?;
            Ok((view.shape().to_vec(), view.iter().copied().collect()))
        }
    }
}

#[cfg(feature = "nudenet")]
pub use tract_engine::OnnxGraph;

/// Stands in for the ONNX engine in a build without the `nudenet` feature: it cannot be
/// loaded, so it is never run.
#[cfg(not(feature = "nudenet"))]
pub enum OnnxGraph {}

#[cfg(not(feature = "nudenet"))]
impl OnnxGraph {
    /// Says that this build cannot run NudeNet and how to build one that can.
    pub fn load(_bytes: &[u8], path: &Path, _shape: [usize; 4]) -> Result<Self, AcsError> {
        Err(AcsError::input(format!(
            "{}: {BUILT_WITHOUT}",
            path.display()
        )))
    }

    /// Never called: no value of this type exists.
    pub fn run(&self, _input: &[f32]) -> Result<(Vec<usize>, Vec<f32>), AcsError> {
        match *self {}
    }
}

/// Whether this build runs NudeNet (the `nudenet` feature).
pub const AVAILABLE: bool = cfg!(feature = "nudenet");

/// Refuses, in a build without the `nudenet` feature, before anything looks for the model.
pub fn require() -> Result<(), AcsError> {
    if AVAILABLE {
        return Ok(());
    }
    Err(AcsError::input(format!("NudeNet: {BUILT_WITHOUT}")))
}

/// Why a build without the `nudenet` feature cannot run the detector, and the fix.
pub const BUILT_WITHOUT: &str = "this acs was built without the NudeNet detector; build it with \
                             `cargo build --release --features nudenet`";
