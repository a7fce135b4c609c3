//! `Topology`: per-layer ISQ type and device, validated at the boundary and
//! converted to `mistralrs::Topology` at load time.
//!
//! The file format is the one mistral.rs reads (YAML): keys are `"START-END"`
//! (end exclusive), a single layer `"N"`, or a `/regex/` over tensor names;
//! values are `{isq: Q4K, device: cuda[0]}`. Unlike mistral.rs, overlapping
//! ranges are rejected instead of letting a later range silently win.

use crate::errors::{Error, Result};
use crate::layer_settings::{check_layer_settings, LayerSettings};
use indexmap::IndexMap;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One layer range `[start, end)` with its ISQ type and device.
#[pyclass(module = "mistralvllm._core", frozen, eq, get_all)]
#[derive(Clone, Debug, PartialEq)]
pub struct TopologyRange {
    pub start: usize,
    pub end: usize,
    pub isq: Option<String>,
    pub device: Option<String>,
}

#[pymethods]
impl TopologyRange {
    /// The range as a topology file writes it: `"START-END"` (end exclusive).
    #[getter]
    fn selector(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }

    fn __repr__(&self) -> String {
        format!(
            "TopologyRange(start={}, end={}, isq={}, device={})",
            self.start,
            self.end,
            py_repr_opt(&self.isq),
            py_repr_opt(&self.device)
        )
    }
}

/// ISQ type and device for every tensor whose name matches a regex.
#[derive(Clone, Debug, PartialEq)]
struct TopologyPattern {
    regex: String,
    isq: Option<String>,
    device: Option<String>,
}

fn py_repr_opt(value: &Option<String>) -> String {
    value
        .as_ref()
        .map_or_else(|| "None".to_string(), |v| format!("'{v}'"))
}

/// Per-layer quantization and placement: chain `with_range` calls, or read
/// mistral.rs's topology file with `from_file`.
#[pyclass(module = "mistralvllm._core", frozen, eq)]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    ranges: Vec<TopologyRange>,
    patterns: Vec<TopologyPattern>,
}

impl Topology {
    fn add_range(
        &self,
        start: usize,
        end: usize,
        isq: Option<&str>,
        device: Option<&str>,
    ) -> Result<Self, String> {
        let selector = format!("{start}-{end}");
        if start >= end {
            return Err(format!(
                "topology range {selector}: start must be below end (ranges are end-exclusive)"
            ));
        }
        let (isq, device) = check_layer_settings(isq, device)
            .map_err(|e| format!("topology range {selector}: {e}"))?;
        if let Some(other) = self.ranges.iter().find(|r| start < r.end && r.start < end) {
            return Err(format!(
                "topology range {selector} overlaps range {}; each layer may appear in one range only",
                other.selector()
            ));
        }
        let mut next = self.clone();
        next.ranges.push(TopologyRange {
            start,
            end,
            isq,
            device,
        });
        next.ranges.sort_by_key(|r| r.start);
        Ok(next)
    }

    fn add_pattern(
        &self,
        regex: &str,
        isq: Option<&str>,
        device: Option<&str>,
    ) -> Result<Self, String> {
        regex::Regex::new(regex).map_err(|e| format!("topology pattern /{regex}/: {e}"))?;
        let (isq, device) = check_layer_settings(isq, device)
            .map_err(|e| format!("topology pattern /{regex}/: {e}"))?;
        let mut next = self.clone();
        next.patterns.push(TopologyPattern {
            regex: regex.to_string(),
            isq,
            device,
        });
        Ok(next)
    }

    /// Add one entry of the file format: `"0-8"`, `"5"` or `"/regex/"`.
    fn add_selector(
        &self,
        selector: &str,
        isq: Option<&str>,
        device: Option<&str>,
    ) -> Result<Self, String> {
        if let Some(regex) = selector.strip_prefix('/').and_then(|s| s.strip_suffix('/')) {
            return self.add_pattern(regex, isq, device);
        }
        let parse = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                format!(
                    "topology key '{selector}' is not a layer range; expected 'START-END' (end exclusive), 'N' or '/regex/'"
                )
            })
        };
        let (start, end) = match selector.split_once('-') {
            Some((start, end)) => (parse(start)?, parse(end)?),
            None => {
                let layer = parse(selector)?;
                (layer, layer + 1)
            }
        };
        self.add_range(start, end, isq, device)
    }

    fn from_entries(entries: IndexMap<String, LayerSettings>) -> Result<Self, String> {
        entries
            .iter()
            .try_fold(Self::default(), |topology, (selector, settings)| {
                topology.add_selector(
                    selector,
                    settings.isq.as_deref(),
                    settings.device.as_deref(),
                )
            })
    }

    pub fn ranges(&self) -> &[TopologyRange] {
        &self.ranges
    }

    /// Whether any range or pattern asks for in-situ quantization.
    pub fn has_isq(&self) -> bool {
        self.ranges.iter().any(|r| r.isq.is_some()) || self.patterns.iter().any(|p| p.isq.is_some())
    }

    /// Reject ranges that reach past the model's last layer.
    pub fn check_layers(&self, num_layers: usize) -> Result<(), String> {
        match self.ranges.iter().find(|r| r.end > num_layers) {
            Some(r) => Err(format!(
                "topology range {} exceeds the model's {num_layers} layers (layers 0-{} exist; the last range may end at {num_layers})",
                r.selector(),
                num_layers.saturating_sub(1)
            )),
            None => Ok(()),
        }
    }

    /// The engine's own topology type.
    pub fn to_mistralrs(&self) -> anyhow::Result<mistralrs::Topology> {
        let layer = |isq: &Option<String>, device: &Option<String>| -> anyhow::Result<_> {
            Ok(mistralrs::LayerTopology {
                isq: isq
                    .as_deref()
                    .map(|name| mistralrs::core::parse_isq_value(name, None))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                device: device
                    .as_deref()
                    .map(crate::device::parse_device)
                    .transpose()?,
            })
        };
        let mut topology = mistralrs::Topology::empty();
        for r in &self.ranges {
            topology = topology.with_range(r.start..r.end, layer(&r.isq, &r.device)?);
        }
        for p in &self.patterns {
            topology
                .patterns
                .push((regex::Regex::new(&p.regex)?, layer(&p.isq, &p.device)?));
        }
        Ok(topology)
    }

    fn entries(&self) -> Vec<(String, &Option<String>, &Option<String>)> {
        let ranges = self
            .ranges
            .iter()
            .map(|r| (r.selector(), &r.isq, &r.device));
        let patterns = self
            .patterns
            .iter()
            .map(|p| (format!("/{}/", p.regex), &p.isq, &p.device));
        ranges.chain(patterns).collect()
    }
}

#[pymethods]
impl Topology {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// A new topology with layers `[start, end)` set to `isq` (e.g. "Q4K") on `device`.
    #[pyo3(signature = (start, end, isq=None, device=None))]
    fn with_range(
        &self,
        start: usize,
        end: usize,
        isq: Option<&str>,
        device: Option<&str>,
    ) -> Result<Self> {
        self.add_range(start, end, isq, device)
            .map_err(Error::Config)
    }

    /// A new topology where tensors whose name matches `regex` use `isq` on `device`.
    #[pyo3(signature = (regex, isq=None, device=None))]
    fn with_pattern(&self, regex: &str, isq: Option<&str>, device: Option<&str>) -> Result<Self> {
        self.add_pattern(regex, isq, device).map_err(Error::Config)
    }

    /// Read a topology file in mistral.rs's YAML format.
    #[staticmethod]
    fn from_file(path: std::path::PathBuf) -> Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::config(format!("{shown}: cannot read topology file: {e}")))?;
        let entries: IndexMap<String, LayerSettings> = serde_saphyr::from_str(&text).map_err(|e| {
            Error::config(format!(
                "{shown}: not a topology file (expected a mapping of 'START-END' to {{isq, device}}): {e}"
            ))
        })?;
        Self::from_entries(entries).map_err(|e| Error::config(format!("{shown}: {e}")))
    }

    /// Build from the same mapping `to_dict` returns.
    #[staticmethod]
    fn from_dict(mapping: &Bound<'_, PyDict>) -> Result<Self> {
        let mut entries = IndexMap::new();
        for (key, value) in mapping.iter() {
            let selector: String = key.extract().map_err(|_| {
                Error::config(format!("topology key {key}: expected a string like '0-8'"))
            })?;
            let settings: &Bound<'_, PyDict> = value.downcast().map_err(|_| {
                Error::config(format!(
                    "topology '{selector}': expected a mapping with 'isq' and/or 'device'"
                ))
            })?;
            let field = |name: &str| -> Result<Option<String>> {
                settings
                    .get_item(name)?
                    .filter(|v| !v.is_none())
                    .map(|v| v.extract())
                    .transpose()
                    .map_err(|_| {
                        Error::config(format!("topology '{selector}'.{name}: expected a string"))
                    })
            };
            if let Some(unknown) = settings.keys().iter().find(|k| {
                !k.extract::<String>()
                    .is_ok_and(|k| k == "isq" || k == "device")
            }) {
                return Err(Error::config(format!(
                    "topology '{selector}': unknown key {unknown}; expected 'isq' and/or 'device'"
                )));
            }
            entries.insert(
                selector.clone(),
                LayerSettings {
                    isq: field("isq")?,
                    device: field("device")?,
                },
            );
        }
        Self::from_entries(entries).map_err(Error::Config)
    }

    /// `{"0-8": {"isq": "Q3K", "device": None}, "/regex/": {...}}`, the file format as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (selector, isq, device) in self.entries() {
            let settings = PyDict::new(py);
            settings.set_item("isq", isq)?;
            settings.set_item("device", device)?;
            dict.set_item(selector, settings)?;
        }
        Ok(dict)
    }

    /// The layer ranges, in layer order.
    #[getter(ranges)]
    fn py_ranges(&self) -> Vec<TopologyRange> {
        self.ranges.clone()
    }

    fn __len__(&self) -> usize {
        self.ranges.len() + self.patterns.len()
    }

    fn __repr__(&self) -> String {
        let body = self
            .entries()
            .iter()
            .map(|(selector, isq, device)| {
                format!(
                    "'{selector}': {{'isq': {}, 'device': {}}}",
                    py_repr_opt(isq),
                    py_repr_opt(device)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("Topology({{{body}}})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_topology() -> Topology {
        Topology::default()
            .add_range(0, 8, Some("Q3K"), None)
            .and_then(|t| t.add_range(8, 16, Some("Q4K"), None))
            .and_then(|t| t.add_range(16, 24, Some("Q6K"), None))
            .and_then(|t| t.add_range(24, 32, Some("Q8_0"), None))
            .unwrap()
    }

    #[test]
    fn chained_ranges_keep_layer_order() {
        let t = Topology::default()
            .add_range(8, 16, Some("q4k"), None)
            .and_then(|t| t.add_range(0, 8, Some("Q3K"), Some("cpu")))
            .unwrap();
        let starts: Vec<_> = t.ranges().iter().map(|r| r.start).collect();
        assert_eq!(starts, vec![0, 8]);
        assert_eq!(t.ranges()[1].isq.as_deref(), Some("Q4K"));
    }

    #[test]
    fn overlap_is_rejected_naming_both_ranges() {
        let err = seed_topology()
            .add_range(20, 26, Some("Q4K"), None)
            .unwrap_err();
        assert!(err.contains("20-26") && err.contains("16-24"), "{err}");
    }

    #[test]
    fn empty_or_reversed_range_is_rejected() {
        assert!(Topology::default().add_range(4, 4, None, None).is_err());
        assert!(Topology::default().add_range(5, 2, None, None).is_err());
    }

    #[test]
    fn unknown_isq_lists_allowed_names() {
        let err = Topology::default()
            .add_range(0, 2, Some("Q5X"), None)
            .unwrap_err();
        assert!(
            err.contains("'Q5X'") && err.contains("Q4K") && err.contains("Q8_0"),
            "{err}"
        );
    }

    #[test]
    fn bad_device_is_rejected() {
        assert!(Topology::default()
            .add_range(0, 2, None, Some("gpu0"))
            .is_err());
        assert!(Topology::default()
            .add_range(0, 2, None, Some("cuda[x]"))
            .is_err());
        assert!(Topology::default()
            .add_range(0, 2, None, Some("cuda[1]"))
            .is_ok());
    }

    #[test]
    fn layer_count_check_names_the_range() {
        let err = seed_topology().check_layers(30).unwrap_err();
        assert!(err.contains("24-32") && err.contains("30 layers"), "{err}");
        assert!(seed_topology().check_layers(32).is_ok());
    }

    #[test]
    fn file_format_round_trips_through_selectors() {
        let yaml = "'0-8':\n  isq: Q3K\n'8':\n  isq: Q4K\n'/mlp/':\n  isq: Q8_0\n";
        let entries: IndexMap<String, LayerSettings> = serde_saphyr::from_str(yaml).unwrap();
        let t = Topology::from_entries(entries).unwrap();
        let selectors: Vec<_> = t.entries().into_iter().map(|e| e.0).collect();
        assert_eq!(selectors, vec!["0-8", "8-9", "/mlp/"]);
        assert!(t.has_isq());
    }

    #[test]
    fn converts_to_engine_topology() {
        let engine = seed_topology().to_mistralrs().unwrap();
        assert_eq!(engine.layers.len(), 32);
        assert!(engine
            .layers
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.isq.is_some())));
    }
}
