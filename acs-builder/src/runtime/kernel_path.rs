//! The CPU code path of the runtime's float kernels, which is part of a build's identity.
//!
//! The matrix products (the `gemm` crate's AVX-512, AVX2 + FMA or scalar micro-kernels) sum in
//! a different order on each path, so one model, seed and prompt give other float bits on a
//! CPU with AVX-512 than on one with AVX2 only. acs names the path it runs
//! ([`KernelPath::name`]: `cpu-avx512`, `cpu-avx2`, `cpu-generic`), records it with every
//! rendered row, and lets a user force any path the CPU supports (`ACS_KERNEL_PATH`, or
//! `[model] kernel_path` in a build manifest), so one machine can produce every path it can run.
//!
//! The path is a process-wide setting read by [`super::model::gemm`] and the vectorised kernels
//! of [`super::model::vector_math`]: [`activate`] sets it; until then [`active`] is the
//! environment's choice or the best path of this CPU.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::runtime::error::{RuntimeError, Setting};

/// The environment variable that forces a path (a [`KernelPath`] name or `auto`).
pub const ENV_VAR: &str = "ACS_KERNEL_PATH";

/// A CPU code path, from the least to the most demanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KernelPath {
    /// Scalar matrix products, 128-bit vectors elsewhere: any x86-64 (or other) CPU.
    #[serde(rename = "cpu-generic")]
    CpuGeneric,
    /// 256-bit AVX2 + FMA kernels.
    #[serde(rename = "cpu-avx2")]
    CpuAvx2,
    /// 512-bit AVX-512F kernels.
    #[serde(rename = "cpu-avx512")]
    CpuAvx512,
}

impl KernelPath {
    /// Every path, least demanding first.
    pub const ALL: [KernelPath; 3] = [Self::CpuGeneric, Self::CpuAvx2, Self::CpuAvx512];

    /// The path's name as recorded in datasets (`cpu-avx512`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::CpuGeneric => "cpu-generic",
            Self::CpuAvx2 => "cpu-avx2",
            Self::CpuAvx512 => "cpu-avx512",
        }
    }

    /// Parses a path's name.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|path| path.name() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a kernel path (expected auto, {})",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Self::CpuGeneric => true,
            #[cfg(target_arch = "x86_64")]
            Self::CpuAvx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Self::CpuAvx512 => {
                Self::CpuAvx2.supported() && std::is_x86_feature_detected!("avx512f")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::CpuAvx2 | Self::CpuAvx512 => false,
        }
    }

    /// The path itself where this CPU runs it, else why not.
    fn check(self) -> Result<Self, String> {
        if self.supported() {
            return Ok(self);
        }
        Err(format!(
            "`{self}` needs a CPU with {}; this one supports {}",
            self.needs(),
            supported_paths()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The most demanding path this CPU supports (what `auto` means).
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|path| path.supported())
            .unwrap_or(Self::CpuGeneric)
    }

    /// The CPU features the path needs, for messages.
    fn needs(self) -> &'static str {
        match self {
            Self::CpuGeneric => "nothing",
            Self::CpuAvx2 => "AVX2 and FMA",
            Self::CpuAvx512 => "AVX-512F, AVX2 and FMA",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|path| path.code() == code)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a manifest or the environment asks for: a named path, or `auto` (the best one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelPathChoice {
    /// The most demanding path this CPU supports.
    #[default]
    Auto,
    /// This path (refused where the CPU cannot run it).
    Path(KernelPath),
}

impl KernelPathChoice {
    /// Parses `auto` or a path's name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            name => KernelPath::parse(name).map(Self::Path),
        }
    }

    /// The path chosen on this CPU, or why it cannot run here.
    pub fn resolve(self) -> Result<KernelPath, String> {
        match self {
            Self::Auto => Ok(KernelPath::best()),
            Self::Path(path) => path.check(),
        }
    }

    /// Whether this is `auto`.
    pub fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// The choice in `ACS_KERNEL_PATH` (`Auto` when unset or empty).
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var(ENV_VAR) {
            Ok(text) if !text.trim().is_empty() => Self::parse(text.trim()).map_err(|reason| {
                RuntimeError::setting(Setting::KernelPath, format!("{ENV_VAR}: {reason}"))
            }),
            _ => Ok(Self::Auto),
        }
    }
}

impl fmt::Display for KernelPathChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Path(path) => path.fmt(f),
        }
    }
}

impl Serialize for KernelPathChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelPathChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The paths this CPU can run, least demanding first.
pub fn supported_paths() -> Vec<KernelPath> {
    KernelPath::ALL
        .into_iter()
        .filter(|path| path.supported())
        .collect()
}

/// The path that this process runs: 0 while nothing was activated.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The environment's path, read once (`auto` where it is unset or cannot run here; commands
/// report a bad value through [`choose`] before any kernel runs).
fn default_path() -> KernelPath {
    static DEFAULT: OnceLock<KernelPath> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        KernelPathChoice::from_env()
            .ok()
            .and_then(|choice| choice.resolve().ok())
            .unwrap_or_else(KernelPath::best)
    })
}

/// The path the kernels take now.
pub fn active() -> KernelPath {
    KernelPath::from_code(ACTIVE.load(Ordering::Relaxed)).unwrap_or_else(default_path)
}

/// Makes `path` the one the kernels take from now on (refused where the CPU cannot run it).
/// Call it between renders, not during one.
pub fn activate(path: KernelPath) -> Result<(), RuntimeError> {
    path.check()
        .map_err(|reason| RuntimeError::setting(Setting::KernelPath, reason))?;
    ACTIVE.store(path.code(), Ordering::Relaxed);
    Ok(())
}

/// Resolves a command's choice against the environment's and activates the result: an explicit
/// `requested` path wins over `ACS_KERNEL_PATH`, which wins over `auto`. Both explicit and
/// different is an error, as is a path this CPU cannot run.
pub fn choose(requested: KernelPathChoice) -> Result<KernelPath, RuntimeError> {
    let from_env = KernelPathChoice::from_env()?;
    let choice = match (requested, from_env) {
        (KernelPathChoice::Path(a), KernelPathChoice::Path(b)) if a != b => {
            return Err(RuntimeError::setting(
                Setting::KernelPath,
                format!("`{a}` was asked for, but {ENV_VAR} asks for `{b}`; unset one of them"),
            ))
        }
        (KernelPathChoice::Path(path), _)
        | (KernelPathChoice::Auto, KernelPathChoice::Path(path)) => KernelPathChoice::Path(path),
        (KernelPathChoice::Auto, KernelPathChoice::Auto) => KernelPathChoice::Auto,
    };
    let path = match choice {
        KernelPathChoice::Auto => KernelPath::best(),
        KernelPathChoice::Path(path) => path,
    };
    activate(path)?;
    Ok(path)
}

/// The code path that renders on `device`, as recorded with every row: on the CPU the active
/// path's name, on an NVIDIA GPU `cuda-sm<major><minor>` and the device's name (for example
/// `cuda-sm90 NVIDIA H100 80GB HBM3`: the kernels cuBLAS picks follow the architecture), on an
/// Apple GPU `metal`.
pub fn identity(device: &candle_core::Device) -> String {
    match device {
        candle_core::Device::Cpu => active().name().to_owned(),
        candle_core::Device::Cuda(_) => cuda_identity(device),
        candle_core::Device::Metal(_) => "metal".to_owned(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_identity(device: &candle_core::Device) -> String {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as Attribute;
    let Ok(cuda) = device.as_cuda_device() else {
        return "cuda".to_owned();
    };
    let stream = cuda.cuda_stream();
    let context = stream.context();
    let capability = |attribute| context.attribute(attribute).ok();
    let sm = match (
        capability(Attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        capability(Attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    ) {
        (Some(major), Some(minor)) => format!("cuda-sm{major}{minor}"),
        _ => "cuda".to_owned(),
    };
    match context.name() {
        Ok(name) => format!("{sm} {name}"),
        Err(_) => sm,
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_identity(_device: &candle_core::Device) -> String {
    "cuda".to_owned()
}

/// Whether `ACS_KERNEL_PATH` names a path (a replay then runs every row on it).
pub fn forced_by_env() -> bool {
    matches!(KernelPathChoice::from_env(), Ok(KernelPathChoice::Path(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_by_demand() {
        for path in KernelPath::ALL {
            assert_eq!(KernelPath::parse(path.name()), Ok(path));
            let json = serde_json::to_string(&path).unwrap();
            assert_eq!(json, format!("\"{}\"", path.name()));
        }
        assert!(KernelPath::CpuGeneric < KernelPath::CpuAvx2);
        assert!(KernelPath::CpuAvx2 < KernelPath::CpuAvx512);
        let err = KernelPath::parse("avx2").unwrap_err();
        assert!(err.contains("cpu-avx2"), "{err}");
        assert_eq!(KernelPathChoice::parse("auto"), Ok(KernelPathChoice::Auto));
    }

    #[test]
    fn the_generic_path_runs_everywhere_and_best_is_supported() {
        assert!(KernelPath::CpuGeneric.supported());
        assert!(KernelPath::best().supported());
        assert_eq!(supported_paths().last(), Some(&KernelPath::best()));
        // A CPU with AVX-512 has AVX2 too: the supported paths have no gaps.
        let supported = supported_paths();
        assert_eq!(supported, KernelPath::ALL[..supported.len()].to_vec());
    }

    #[test]
    fn an_unsupported_path_is_refused_with_the_reason() {
        for path in KernelPath::ALL.into_iter().filter(|p| !p.supported()) {
            let err = KernelPathChoice::Path(path).resolve().unwrap_err();
            assert!(err.contains("needs a CPU with"), "{err}");
            assert!(activate(path).is_err());
        }
    }
}
