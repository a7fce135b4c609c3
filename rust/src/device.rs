//! Devices as mistral.rs writes them (`cpu`, `cuda[N]`, `metal[N]`): parsed
//! for topologies and the session, opened for the loaders, and named back.

use candle_core::DeviceLocation;
use mistralrs::Device;
use pyo3::prelude::*;

use crate::errors::Error;

/// A device as mistral.rs writes it: `cpu`, `cuda[N]` or `metal[N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl DeviceSpec {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let ordinal = |kind: &str| {
            spec.strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('['))
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok())
        };
        if spec == "cpu" {
            Ok(Self::Cpu)
        } else if let Some(n) = ordinal("cuda") {
            Ok(Self::Cuda(n))
        } else if let Some(n) = ordinal("metal") {
            Ok(Self::Metal(n))
        } else {
            Err(format!(
                "device '{spec}' is not valid; expected 'cpu', 'cuda[N]' or 'metal[N]'"
            ))
        }
    }
}

/// `cpu`, `cuda[N]` or `metal[N]` → an open device.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    Ok(match DeviceSpec::parse(spec).map_err(anyhow::Error::msg)? {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => Device::new_cuda(n)?,
        DeviceSpec::Metal(n) => Device::new_metal(n)?,
    })
}

pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".to_string(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda[{gpu_id}]"),
        DeviceLocation::Metal { gpu_id } => format!("metal[{gpu_id}]"),
    }
}

/// Check a device written as mistral.rs writes it (`cpu`, `cuda[N]`,
/// `metal[N]`): the one definition of the syntax, for Python's config too.
#[pyfunction]
pub fn check_device(spec: &str) -> PyResult<()> {
    DeviceSpec::parse(spec).map_err(Error::Config)?;
    Ok(())
}
