//! Finding out what a model path holds before the engine is asked to load it,
//! so a wrong path gets an error that names it.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use mistralrs::core::MultimodalLoaderType;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// One `.gguf` file: quantized weights, tokenizer and chat template inside.
    Gguf,
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    Plain,
    /// A directory that mistral.rs wrote with `write_uqff`: config.json,
    /// tokenizer.json, pre-quantized `*.uqff` weights and residual.safetensors.
    Uqff,
}

impl ModelFormat {
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Plain => "safetensors",
            ModelFormat::Uqff => "uqff",
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
    /// The chat template the model ships, if any (GGUF metadata or tokenizer_config.json).
    pub chat_template: Option<String>,
    /// Token ids run from 0 to this (the GGUF's token list, or config.json's vocab_size).
    pub vocab_size: Option<usize>,
    /// A sentence-transformers directory (modules.json): the model turns text
    /// into embeddings, not chat.
    pub embedding: bool,
    /// A directory of one of mistral.rs's multimodal architectures with a
    /// vision tower (config.json's `vision_config`): the model reads images.
    pub vision: bool,
}

fn has_extension(path: &Path, wanted: &str) -> bool {
    path.extension().is_some_and(|ext| ext == wanted)
}

/// Files in `dir` whose name ends in `.{extension}`, sorted by name.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && has_extension(p, extension))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
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

    /// Bytes of weights on disk: the GGUF file, or the directory's safetensors and UQFF files.
    pub fn size_bytes(&self) -> u64 {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        match self.format {
            ModelFormat::Gguf => size(&self.path),
            ModelFormat::Plain | ModelFormat::Uqff => ["safetensors", "uqff"]
                .iter()
                .flat_map(|ext| files_with_extension(&self.path, ext))
                .map(|p| size(&p))
                .sum(),
        }
    }

    /// Directory that holds the model files.
    pub fn dir(&self) -> &Path {
        match self.format {
            ModelFormat::Gguf => self.path.parent().unwrap_or(Path::new(".")),
            ModelFormat::Plain | ModelFormat::Uqff => &self.path,
        }
    }

    /// Names of the UQFF weight files (empty unless the format is UQFF).
    pub fn uqff_files(&self) -> Vec<PathBuf> {
        match self.format {
            ModelFormat::Uqff => files_with_extension(&self.path, "uqff")
                .into_iter()
                .filter_map(|p| p.file_name().map(PathBuf::from))
                .collect(),
            _ => Vec::new(),
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
        let chat_template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let vocab_size = content
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(Vec::len);
        Ok(Self {
            path,
            format: ModelFormat::Gguf,
            architecture,
            num_layers: num_layers as usize,
            chat_template,
            vocab_size,
            embedding: false,
            vision: false,
        })
    }

    /// What the model is for: "chat" or "embedding".
    pub fn task(&self) -> &'static str {
        if self.embedding {
            "embedding"
        } else {
            "chat"
        }
    }

    fn inspect_dir(path: PathBuf) -> Result<Self, String> {
        let shown = path.display();
        let config_path = path.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            format!("{shown}: not a model directory: cannot read config.json ({e}); expected config.json, *.safetensors and tokenizer.json, or a .gguf file")
        })?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid JSON ({e})", config_path.display()))?;
        std::fs::read_dir(&path).map_err(|e| format!("{shown}: cannot list directory ({e})"))?;
        let format = if !files_with_extension(&path, "uqff").is_empty() {
            ModelFormat::Uqff
        } else if !files_with_extension(&path, "safetensors").is_empty() {
            ModelFormat::Plain
        } else {
            return Err(format!(
                "{shown}: no *.safetensors (or *.uqff) weights in the model directory"
            ));
        };
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
        let vision = config.get("vision_config").is_some()
            && MultimodalLoaderType::from_causal_lm_name(&architecture).is_ok();
        // A multimodal config keeps the language model's numbers in text_config.
        let text_config = config
            .get("text_config")
            .filter(|_| vision)
            .unwrap_or(&config);
        let num_layers = text_config
            .get("num_hidden_layers")
            .and_then(|n| n.as_u64())
            .ok_or_else(|| {
                let field = if vision {
                    "text_config.num_hidden_layers"
                } else {
                    "num_hidden_layers"
                };
                format!(
                    "{}: {field}: expected a positive integer",
                    config_path.display()
                )
            })?;
        let chat_template = dir_chat_template(&path);
        let embedding = path.join("modules.json").is_file();
        let vocab_size = text_config
            .get("vocab_size")
            .and_then(|n| n.as_u64())
            .map(|n| n as usize);
        Ok(Self {
            path,
            format,
            architecture,
            num_layers: num_layers as usize,
            chat_template,
            vocab_size,
            embedding,
            vision,
        })
    }
}

/// A model directory's chat template: mistral.rs reads it from
/// chat_template.jinja or tokenizer_config.json.
fn dir_chat_template(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("chat_template.jinja"))
        .ok()
        .or_else(|| {
            let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
            let config: serde_json::Value = serde_json::from_str(&text).ok()?;
            config.get("chat_template")?.as_str().map(str::to_string)
        })
}

/// What a model path holds, without loading it: path, format, architecture,
/// number of layers, size of the weights, task ("chat" or "embedding") and
/// whether it reads images (`vision`).
#[pyfunction]
pub fn inspect_model<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let files = ModelFiles::inspect(&path).map_err(Error::ModelLoad)?;
    let found = PyDict::new(py);
    found.set_item("path", files.path.to_string_lossy())?;
    found.set_item("format", files.format.name())?;
    found.set_item("architecture", &files.architecture)?;
    found.set_item("num_layers", files.num_layers)?;
    found.set_item("size_bytes", files.size_bytes())?;
    found.set_item("task", files.task())?;
    found.set_item("vision", files.vision)?;
    found.set_item("chat_template", files.chat_template)?;
    found.set_item("vocab_size", files.vocab_size)?;
    Ok(found)
}
