//! What one layer range or tensor pattern of a topology may set: its ISQ
//! type (the names mistral.rs knows, written once here) and its device.

use serde::Deserialize;

use crate::device::DeviceSpec;

/// ISQ types as mistral.rs spells them (`parse_isq_value`), numeric shorthands aside.
pub const ISQ_NAMES: &[&str] = &[
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2K", "Q3K", "Q4K", "Q5K", "Q6K", "Q8K",
    "HQQ8", "HQQ4", "FP8", "AFQ8", "AFQ6", "AFQ4", "AFQ3", "AFQ2", "F8Q8", "MXFP4",
];

/// The canonical spelling of an ISQ name (matched case-insensitively).
pub fn canonical_isq(name: &str) -> Result<&'static str, String> {
    ISQ_NAMES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| format!("isq '{name}' is not one of {}", ISQ_NAMES.join(", ")))
}

/// Check a device specifier in mistral.rs's syntax: `cpu`, `cuda[N]`, `metal[N]`.
fn check_device(device: &str) -> Result<String, String> {
    DeviceSpec::parse(device).map(|_| device.to_string())
}

pub fn check_layer_settings(
    isq: Option<&str>,
    device: Option<&str>,
) -> Result<(Option<String>, Option<String>), String> {
    let isq = isq.map(canonical_isq).transpose()?.map(str::to_string);
    let device = device.map(check_device).transpose()?;
    Ok((isq, device))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSettings {
    pub isq: Option<String>,
    pub device: Option<String>,
}
