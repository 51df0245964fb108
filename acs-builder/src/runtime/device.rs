//! Where and in what precision the networks run: devices (`cpu`, `cuda[:N]`, `metal[:N]`)
//! and weight dtypes (`f32`, `f16`, `bf16`), parsed from their names and opened with a
//! message that says what is missing when they cannot be.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::runtime::error::{candle_message, RuntimeError, Setting};

/// A device by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
    /// An Apple GPU by ordinal (needs the `metal` cargo feature).
    Metal(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, ordinal) = match text.split_once(':') {
            Some((kind, n)) => (
                kind,
                n.parse::<usize>()
                    .map_err(|_| format!("`{text}`: `{n}` is not a device number"))?,
            ),
            None => (text, 0),
        };
        match (kind, text.contains(':')) {
            ("cpu", false) => Ok(Self::Cpu),
            ("cuda", _) => Ok(Self::Cuda(ordinal)),
            ("metal", _) => Ok(Self::Metal(ordinal)),
            _ => Err(format!(
                "`{text}` is not a device (expected cpu, cuda, cuda:N, metal or metal:N)"
            )),
        }
    }

    /// Whether this build of acs was compiled with support for the device's kind.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda(_) => cfg!(feature = "cuda"),
            Self::Metal(_) => cfg!(feature = "metal"),
        }
    }

    /// The cargo feature a build needs for this device (none for the CPU).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Cpu => None,
            Self::Cuda(_) => Some("cuda"),
            Self::Metal(_) => Some("metal"),
        }
    }

    /// Opens the device.
    pub fn open(self) -> Result<Device, RuntimeError> {
        if let (false, Some(feature)) = (self.compiled_in(), self.feature()) {
            return Err(RuntimeError::setting(
                Setting::Device,
                format!(
                    "`{self}` needs a build with GPU support: cargo build --release --features \
                     {feature}"
                ),
            ));
        }
        let opened = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => Device::new_cuda(n),
            Self::Metal(n) => Device::new_metal(n),
        };
        let hint = match self {
            Self::Cuda(_) => {
                " (is the NVIDIA driver installed and the GPU visible in `nvidia-smi`? `cuda:N` \
                 numbers the visible GPUs from 0)"
            }
            _ => "",
        };
        opened.map_err(|e| {
            RuntimeError::setting(
                Setting::Device,
                format!("`{self}` cannot be opened: {}{hint}", candle_message(&e)),
            )
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The dtype the weights are loaded in and the networks run in, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats (every device).
    #[default]
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16 (GPUs only: candle's CPU matmul has no bf16).
    Bf16,
}

impl Dtype {
    /// candle's dtype.
    pub fn candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(f)
    }
}

impl FromStr for Dtype {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        crate::runtime::parse_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(DeviceSpec::parse("metal"), Ok(DeviceSpec::Metal(0)));
        assert!(DeviceSpec::parse("cpu:1").is_err());
        assert!(DeviceSpec::parse("gpu")
            .unwrap_err()
            .contains("not a device"));
        assert!(DeviceSpec::parse("cuda:x")
            .unwrap_err()
            .contains("not a device number"));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn dtype_names_round_trip() {
        for (dtype, name) in [
            (Dtype::F32, "f32"),
            (Dtype::F16, "f16"),
            (Dtype::Bf16, "bf16"),
        ] {
            assert_eq!(dtype.to_string(), name);
            assert_eq!(name.parse::<Dtype>(), Ok(dtype));
        }
        let err = "f64".parse::<Dtype>().unwrap_err();
        assert!(err.contains("`f64`") && err.contains("`bf16`"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_without_the_feature_says_how_to_build() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
