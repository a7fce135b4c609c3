//! What a session was asked for and what is in effect, as `Session.info()`
//! reports it.

use mistralrs::{Model, ModelCategory};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::device::device_name;
use crate::errors::{Error, Result};
use crate::loader::{build_features, dtype_name};
use crate::model_files::ModelFiles;
use crate::session_settings::ResolvedSettings;
use crate::topology::Topology;

#[derive(Clone)]
pub struct SessionInfo {
    files: ModelFiles,
    device: String,
    dtype: String,
    isq: Option<String>,
    topology: Option<Topology>,
    paged_attention: bool,
    block_size: Option<usize>,
    kv_mem: Option<(String, f64)>,
    max_num_seqs: usize,
    prefix_cache_n: Option<usize>,
    prefix_cache_bytes: Option<usize>,
    max_seq_len: Option<usize>,
    lora_adapters: Vec<String>,
    draft: Option<(ModelFiles, usize)>,
    paged_cache_type: String,
    /// What the engine made of the model (a multimodal model's prompt prefixer inside).
    category: ModelCategory,
}

impl SessionInfo {
    /// The settings of a loaded `model`, with what its engine put in effect
    /// (`paged`: whether paged attention is on).
    pub fn of_loaded(settings: ResolvedSettings, model: &Model, paged: bool) -> Result<Self> {
        let files = settings.files;
        let config = model
            .config()
            .map_err(|e| Error::model_load(format!("{}: {e}", files.path.display())))?;
        let options = settings.options;
        Ok(Self {
            device: device_name(&config.device),
            max_seq_len: config.max_seq_len,
            files,
            dtype: dtype_name(options.dtype).to_string(),
            isq: options.isq,
            topology: options.topology,
            paged_attention: paged,
            block_size: settings.block_size.filter(|_| paged),
            kv_mem: settings.kv_mem.filter(|_| paged),
            max_num_seqs: options.max_num_seqs,
            prefix_cache_n: options.prefix_cache_n,
            prefix_cache_bytes: options.prefix_cache_bytes,
            lora_adapters: options.lora_adapters,
            draft: options.draft,
            paged_cache_type: settings.paged_cache_type,
            category: config.category,
        })
    }

    /// Whether the model makes embeddings (not chat).
    pub fn is_embedding(&self) -> bool {
        self.files.embedding
    }

    /// The engine's category of the model.
    pub fn category(&self) -> &ModelCategory {
        &self.category
    }

    /// Whether the model reads images beside text.
    pub fn reads_images(&self) -> bool {
        self.files.vision && matches!(self.category, ModelCategory::Multimodal { .. })
    }

    /// The model's path, as given to the session.
    pub fn model_path(&self) -> std::path::Display<'_> {
        self.files.path.display()
    }

    /// The dict of `Session.info()` (`closed` is the session's own state).
    pub fn to_dict<'py>(&self, py: Python<'py>, closed: bool) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("model", self.files.path.to_string_lossy())?;
        dict.set_item("format", self.files.format.name())?;
        dict.set_item("task", self.files.task())?;
        dict.set_item("vision", self.reads_images())?;
        dict.set_item("architecture", &self.files.architecture)?;
        dict.set_item("num_layers", self.files.num_layers)?;
        dict.set_item("vocab_size", self.files.vocab_size)?;
        dict.set_item("max_seq_len", self.max_seq_len)?;
        dict.set_item("device", &self.device)?;
        dict.set_item("dtype", &self.dtype)?;
        dict.set_item("isq", &self.isq)?;
        dict.set_item("topology", self.topology.clone())?;
        dict.set_item("paged_attention", self.paged_attention)?;
        dict.set_item("block_size", self.block_size)?;
        dict.set_item("kv_mem", self.kv_mem.clone())?;
        dict.set_item("max_num_seqs", self.max_num_seqs)?;
        dict.set_item("max_running_sequences", self.max_num_seqs)?;
        dict.set_item("prefix_cache_n", self.prefix_cache_n)?;
        dict.set_item("prefix_cache_bytes_limit", self.prefix_cache_bytes)?;
        dict.set_item("paged_cache_type", &self.paged_cache_type)?;
        dict.set_item("lora_adapters", self.lora_adapters.clone())?;
        let (draft, tokens) = self
            .draft
            .as_ref()
            .map(|(files, tokens)| (files.path.to_string_lossy(), *tokens))
            .unzip();
        dict.set_item("draft_model", draft)?;
        dict.set_item("draft_tokens", tokens)?;
        dict.set_item("chat_template", self.files.chat_template.clone())?;
        dict.set_item("build_features", build_features())?;
        dict.set_item("closed", closed)?;
        Ok(dict)
    }
}
