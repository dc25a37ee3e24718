//! Which device models run on: `auto` (the first CUDA GPU when the binary has the `cuda`
//! feature and one is present, else the CPU), `cpu`, or `cuda[:N]`.

use crate::error::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A device as asked for on the command line (`--device`) or in an experiment file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The first GPU when there is one this binary can use, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number `N`.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::Device {
                    name: s.to_string(),
                    reason: "expected auto, cpu, cuda or cuda:N".into(),
                }),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `cuda` fails with a clear message when this binary was built
    /// without the `cuda` feature or the GPU cannot be opened; `auto` falls back to the CPU.
    pub fn open(&self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                #[cfg(feature = "cuda")]
                {
                    if candle_core::utils::cuda_is_available() {
                        if let Ok(d) = Device::new_cuda(0) {
                            return Ok(d);
                        }
                    }
                }
                Ok(Device::Cpu)
            }
            Self::Cuda(n) => open_cuda(*n).map_err(|reason| Error::Device {
                name: self.to_string(),
                reason,
            }),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> std::result::Result<Device, String> {
    Device::new_cuda(n).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: usize) -> std::result::Result<Device, String> {
    Err("this binary was built without the `cuda` feature (cargo build --features cuda)".into())
}

/// A device in words: `cpu`, `cuda:0`.
pub fn describe(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(describe(&DeviceChoice::Cpu.open().unwrap()), "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(
            err.contains("cuda:0") && err.contains("--features cuda"),
            "{err}"
        );
        assert_eq!(describe(&DeviceChoice::Auto.open().unwrap()), "cpu");
    }
}
