//! The `[model].device` setting: parsing `cpu`, `cuda[:N]` and `metal[:N]`, and opening the
//! device with a message that says what is missing when it cannot be opened.

use candle_core::Device;

use crate::error::AcsError;

/// A device named in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The host CPU.
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

    /// Opens the device.
    pub fn open(self) -> Result<Device, AcsError> {
        let (name, feature) = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => (format!("cuda:{n}"), "cuda"),
            Self::Metal(n) => (format!("metal:{n}"), "metal"),
        };
        if !self.compiled_in() {
            return Err(AcsError::input(format!(
                "[model].device: `{name}` needs a build with GPU support: \
                 cargo build --release --features {feature}"
            )));
        }
        let opened = match self {
            Self::Cuda(n) => Device::new_cuda(n),
            Self::Metal(n) => Device::new_metal(n),
            Self::Cpu => Ok(Device::Cpu),
        };
        opened.map_err(|e| {
            AcsError::input(format!(
                "[model].device: `{name}` cannot be opened: {}",
                crate::error::candle_message(&e)
            ))
        })
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
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_without_the_feature_says_how_to_build() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
