//! Access to candle's CPU storage for the runtime's custom operations.

use candle_core::{CpuStorage, Layout, Result};

/// The float32 values of a contiguous CPU tensor; `op` and `name` go into the error.
pub fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    name: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: {name} must be f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: {name} must be contiguous");
    };
    Ok(&data[start..end])
}
