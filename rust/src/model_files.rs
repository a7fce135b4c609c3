//! Finding out what a model path holds before the engine is asked to load it,
//! so a wrong path gets an error that names it.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::ModelLoadError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// One `.gguf` file: quantized weights, tokenizer and chat template inside.
    Gguf,
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    Plain,
}

impl ModelFormat {
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Plain => "safetensors",
        }
    }
}

/// A model on disk: its format, architecture and number of layers.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub path: PathBuf,
    pub format: ModelFormat,
    pub architecture: String,
    pub num_layers: usize,
}

impl ModelFiles {
    pub fn inspect(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let path = path
            .canonicalize()
            .map_err(|e| format!("{shown}: no such model file or directory ({e})"))?;
        if path.is_dir() {
            Self::inspect_dir(path)
        } else {
            Self::inspect_gguf(path)
        }
    }

    /// Bytes of weights on disk: the GGUF file, or the directory's safetensors.
    pub fn size_bytes(&self) -> u64 {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        match self.format {
            ModelFormat::Gguf => size(&self.path),
            ModelFormat::Plain => std::fs::read_dir(&self.path)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|ext| ext == "safetensors"))
                        .map(|p| size(&p))
                        .sum()
                })
                .unwrap_or(0),
        }
    }

    /// Directory that holds the model files.
    pub fn dir(&self) -> &Path {
        match self.format {
            ModelFormat::Gguf => self.path.parent().unwrap_or(Path::new(".")),
            ModelFormat::Plain => &self.path,
        }
    }

    fn inspect_gguf(path: PathBuf) -> Result<Self, String> {
        let shown = path.display();
        let mut file = File::open(&path).map_err(|e| format!("{shown}: cannot open ({e})"))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            format!("{shown}: not a readable GGUF file ({e}); expected a .gguf model or a Hugging Face model directory")
        })?;
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| format!("{shown}: GGUF metadata has no general.architecture"))?;
        let num_layers = content
            .metadata
            .get(&format!("{architecture}.block_count"))
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| format!("{shown}: GGUF metadata has no {architecture}.block_count"))?;
        Ok(Self {
            path,
            format: ModelFormat::Gguf,
            architecture,
            num_layers: num_layers as usize,
        })
    }

    fn inspect_dir(path: PathBuf) -> Result<Self, String> {
        let shown = path.display();
        let config_path = path.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            format!("{shown}: not a model directory: cannot read config.json ({e}); expected config.json, *.safetensors and tokenizer.json, or a .gguf file")
        })?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid JSON ({e})", config_path.display()))?;
        let has_weights = std::fs::read_dir(&path)
            .map_err(|e| format!("{shown}: cannot list directory ({e})"))?
            .filter_map(Result::ok)
            .any(|entry| {
                entry
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "safetensors")
            });
        if !has_weights {
            return Err(format!(
                "{shown}: no *.safetensors weights in the model directory"
            ));
        }
        if !path.join("tokenizer.json").is_file() {
            return Err(format!("{shown}: no tokenizer.json in the model directory"));
        }
        let architecture = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| {
                format!(
                    "{}: architectures: expected a list like [\"LlamaForCausalLM\"]",
                    config_path.display()
                )
            })?
            .to_string();
        let num_layers = config
            .get("num_hidden_layers")
            .and_then(|n| n.as_u64())
            .ok_or_else(|| {
                format!(
                    "{}: num_hidden_layers: expected a positive integer",
                    config_path.display()
                )
            })?;
        Ok(Self {
            path,
            format: ModelFormat::Plain,
            architecture,
            num_layers: num_layers as usize,
        })
    }
}

/// What a model path holds, without loading it: path, format, architecture,
/// number of layers and size of the weights.
#[pyfunction]
pub fn inspect_model<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let files = ModelFiles::inspect(&path).map_err(ModelLoadError::new_err)?;
    let found = PyDict::new(py);
    found.set_item("path", files.path.to_string_lossy())?;
    found.set_item("format", files.format.name())?;
    found.set_item("architecture", &files.architecture)?;
    found.set_item("num_layers", files.num_layers)?;
    found.set_item("size_bytes", files.size_bytes())?;
    Ok(found)
}
