//! Model weights read from memory-mapped safetensors files, each tensor's file pages given
//! back to the kernel once the tensor is copied out.
//!
//! candle's `VarBuilder::from_mmaped_safetensors` keeps the whole file mapped while a model is
//! built, and every page read stays in the process's resident set beside the copy made of it:
//! loading the full SD 1.5 UNet (3.3 GB of float32) counted the file twice, and that was a
//! whole pair's peak memory (6.4 GiB at load against 5.5 GiB at any later point of a 512 px
//! pair; docs/performance.md). Here each tensor's pages are dropped from the mapping as soon
//! as the tensor is loaded (`madvise(MADV_DONTNEED)`; the file stays in the page cache, and a
//! later read of the same range faults it back in), so loading holds the copies and at most
//! one tensor's pages.

use std::path::PathBuf;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// A `VarBuilder` over the safetensors `files`, giving each tensor's pages back once loaded.
///
/// # Safety
/// The files are memory-mapped: they must not be modified while the builder lives (acs never
/// writes model files while loading).
pub unsafe fn mapped_var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let tensors = MmapedSafetensors::multi(files)?;
    Ok(VarBuilder::from_backend(
        Box::new(PageReleasing(tensors)),
        dtype,
        device.clone(),
    ))
}

/// candle's memory-mapped safetensors, releasing a tensor's pages after each load.
struct PageReleasing(MmapedSafetensors);

impl PageReleasing {
    /// Drops the pages of tensor `name`'s bytes from the mapping (not from the file).
    fn release(&self, name: &str) {
        let Ok(view) = self.0.get(name) else {
            return;
        };
        let data = view.data();
        let page = page_size();
        let start = data.as_ptr() as usize;
        // Whole pages inside the tensor's bytes and the pages it shares with its neighbours:
        // a neighbour not yet loaded reads its pages back from the page cache.
        let first = start - start % page;
        let end = (start + data.len()).next_multiple_of(page);
        #[cfg(unix)]
        // SAFETY: [first, end) lies inside the read-only private file mapping (the mapping
        // covers whole pages); MADV_DONTNEED on such a mapping only drops resident pages,
        // which later reads fault back in with the file's unchanged contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
        }
        #[cfg(not(unix))]
        let _ = (first, end);
    }
}

fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as usize;
        }
    }
    4096
}

impl SimpleBackend for PageReleasing {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let tensor = SimpleBackend::get(&self.0, s, name, h, dtype, dev)?;
        self.release(name);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let tensor = SimpleBackend::get_unchecked(&self.0, name, dtype, dev)?;
        self.release(name);
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.0, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_read_back_after_their_pages_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..5).map(|i| -(i as f32)).collect();
        let tensors = std::collections::HashMap::from([
            (
                "a".to_string(),
                Tensor::from_vec(a.clone(), (30, 100), &Device::Cpu).unwrap(),
            ),
            (
                "b".to_string(),
                Tensor::from_vec(b.clone(), 5, &Device::Cpu).unwrap(),
            ),
        ]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let vb = unsafe { mapped_var_builder(&[path], DType::F32, &Device::Cpu) }.unwrap();
        // Each read twice: the second comes after the first released the pages.
        for _ in 0..2 {
            let got = vb.get((30, 100), "a").unwrap();
            assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a);
            let got = vb.get(5, "b").unwrap();
            assert_eq!(got.to_vec1::<f32>().unwrap(), b);
        }
        assert!(vb.contains_tensor("a") && !vb.contains_tensor("c"));
        assert!(vb.get((2, 2), "a").is_err(), "a wrong shape is refused");
    }
}
