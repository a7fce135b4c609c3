//! What a `Session` is asked for, checked and turned into the engine's load
//! options before anything is loaded: a setting that cannot work is a
//! `ConfigError` naming it, not an engine failure half-way through a load.

use std::path::{Path, PathBuf};

use mistralrs::{Device, MemoryGpuConfig, ModelDType, PagedAttentionConfig, PagedCacheType};

use crate::device::parse_device;
use crate::errors::{Error, Result};
use crate::layer_settings::canonical_isq;
use crate::loader::{build_features, parse_dtype, parse_kv_mem, LoadOptions};
use crate::model_files::{ModelFiles, ModelFormat};
use crate::topology::Topology;

/// A session's settings as Python gave them (see `Session.__new__`).
pub struct SessionSettings {
    pub model: PathBuf,
    pub topology: Option<Topology>,
    pub isq: Option<String>,
    pub device: String,
    pub paged_attention: String,
    pub block_size: Option<usize>,
    pub kv_mem: Option<(String, f64)>,
    pub max_num_seqs: usize,
    pub prefix_cache_n: Option<usize>,
    pub prefix_cache_bytes: Option<usize>,
    pub dtype: String,
    pub paged_cache_type: String,
    pub write_uqff: Option<PathBuf>,
    pub lora_adapters: Vec<String>,
    pub draft_model: Option<PathBuf>,
    pub draft_tokens: usize,
}

/// Checked settings: the model's files, the engine's load options, and the
/// paged-attention settings reported once the engine says what is in effect.
pub struct ResolvedSettings {
    pub files: ModelFiles,
    pub options: LoadOptions,
    pub block_size: Option<usize>,
    pub kv_mem: Option<(String, f64)>,
    pub paged_cache_type: String,
}

impl SessionSettings {
    /// Check every setting against the model's files and this build.
    pub fn resolve(self) -> Result<ResolvedSettings> {
        let files = ModelFiles::inspect(&self.model).map_err(Error::ModelLoad)?;
        let isq = self
            .isq
            .as_deref()
            .map(canonical_isq)
            .transpose()
            .map_err(Error::Config)?
            .map(str::to_string);
        let quantizes = isq.is_some() || self.topology.as_ref().is_some_and(Topology::has_isq);
        check_model_format(&files, quantizes, !self.lora_adapters.is_empty())?;
        if let Some(out) = &self.write_uqff {
            check_uqff_target(&files, quantizes, out)?;
        }
        if let Some(topology) = &self.topology {
            topology
                .check_layers(files.num_layers)
                .map_err(|e| Error::config(format!("{}: {e}", files.path.display())))?;
        }
        if self.max_num_seqs == 0 {
            return Err(Error::config("max_num_seqs: expected at least 1"));
        }
        let device = session_device(&self.device)?;
        let dtype = model_dtype(parse_dtype(&self.dtype)?, &device);
        let draft = self.draft(&files)?;
        let (paged_attn, prefix_cache_n) = if files.embedding {
            self.check_embedding_settings(&files)?;
            (None, None)
        } else if draft.is_some() {
            // The prefix cache restores the model's KV cache, not the draft's.
            (self.paged_attention_config(&device)?, None)
        } else {
            (self.paged_attention_config(&device)?, self.prefix_cache_n)
        };
        Ok(ResolvedSettings {
            files,
            options: LoadOptions {
                isq,
                write_uqff: self.write_uqff,
                lora_adapters: self.lora_adapters,
                draft,
                topology: self.topology,
                device,
                paged_attn,
                max_num_seqs: self.max_num_seqs,
                prefix_cache_n,
                prefix_cache_bytes: self.prefix_cache_bytes,
                dtype,
            },
            block_size: self.block_size,
            kv_mem: self.kv_mem,
            paged_cache_type: self.paged_cache_type,
        })
    }

    /// The draft model's files and tokens a step, checked against the
    /// model's: a chat model with the same vocabulary.
    fn draft(&self, files: &ModelFiles) -> Result<Option<(ModelFiles, usize)>> {
        let Some(path) = &self.draft_model else {
            return Ok(None);
        };
        let draft = ModelFiles::inspect(path).map_err(Error::ModelLoad)?;
        if !(1..=32).contains(&self.draft_tokens) {
            return Err(Error::config(format!(
                "draft_tokens: {} is not between 1 and 32",
                self.draft_tokens
            )));
        }
        if files.embedding || draft.embedding {
            return Err(Error::config(format!(
                "draft_model: {}: speculative decoding drafts text; an embedding model takes no draft and is none",
                draft.path.display()
            )));
        }
        if draft.vocab_size != files.vocab_size {
            return Err(Error::config(format!(
                "draft_model: {} has a vocabulary of {} tokens, the model {} {}: a draft must share the model's tokenizer",
                draft.path.display(),
                draft.vocab_size.map_or("unknown".to_string(), |n| n.to_string()),
                files.path.display(),
                files.vocab_size.map_or("unknown".to_string(), |n| n.to_string()),
            )));
        }
        Ok(Some((draft, self.draft_tokens)))
    }

    /// An embedding model reads each input once: no KV cache to page, no
    /// prefix to reuse.
    fn check_embedding_settings(&self, files: &ModelFiles) -> Result<()> {
        if self.paged_attention == "on" {
            return Err(Error::config(format!(
                "paged_attention: 'on': {} is an embedding model (modules.json), which keeps no KV cache; use 'auto' or 'off'",
                files.path.display()
            )));
        }
        paged_attention_wanted(&self.paged_attention, false)?;
        Ok(())
    }

    /// Paged attention's configuration, or `None` where it is off.
    fn paged_attention_config(&self, device: &Device) -> Result<Option<PagedAttentionConfig>> {
        let cache_type = match self.paged_cache_type.as_str() {
            "auto" => PagedCacheType::Auto,
            "f8e4m3" => PagedCacheType::F8E4M3,
            other => {
                return Err(Error::config(format!(
                    "paged_cache_type: '{other}' is not one of auto, f8e4m3"
                )))
            }
        };
        let paged = paged_attention_wanted(&self.paged_attention, !device.is_cpu())?;
        if self.paged_cache_type != "auto" && !paged {
            return Err(Error::config(format!(
                "paged_cache_type: '{}' sets the KV-cache type of paged attention, which is off here (it needs a CUDA or Metal device); without it the KV cache has the model's dtype",
                self.paged_cache_type
            )));
        }
        if let Some(size) = self.block_size.filter(|s| ![8, 16, 32].contains(s)) {
            return Err(Error::config(format!(
                "block_size: {size} is not one of 8, 16, 32"
            )));
        }
        if !paged {
            return Ok(None);
        }
        let mem = match &self.kv_mem {
            Some((kind, value)) => parse_kv_mem(kind, *value)?,
            None => MemoryGpuConfig::ContextSize(4096),
        };
        PagedAttentionConfig::new(self.block_size, mem, cache_type)
            .map(Some)
            .map_err(|e| Error::config(format!("paged_attention: {e:#}")))
    }
}

/// ISQ and LoRA apply to plain (safetensors) models only.
fn check_model_format(files: &ModelFiles, quantizes: bool, has_lora: bool) -> Result<()> {
    if files.format != ModelFormat::Plain && quantizes {
        return Err(Error::config(format!(
            "{}: ISQ applies to plain (safetensors) models; a {} model is already quantized (drop isq / the topology's isq, or load a safetensors model directory)",
            files.path.display(),
            files.format.name()
        )));
    }
    if files.format != ModelFormat::Plain && has_lora {
        return Err(Error::config(format!(
            "{}: LoRA adapters are merged into plain (safetensors) models; this is a {} model",
            files.path.display(),
            files.format.name()
        )));
    }
    Ok(())
}

/// `write_uqff` names a `.uqff` file for ISQ-quantized weights of a plain
/// model; its directory is created (mistral.rs writes the config and
/// tokenizer beside the file).
fn check_uqff_target(files: &ModelFiles, quantizes: bool, out: &Path) -> Result<()> {
    if files.format != ModelFormat::Plain || !quantizes {
        return Err(Error::config(format!(
            "write_uqff: {}: UQFF stores ISQ-quantized weights; give isq or a topology with isq, and a safetensors model directory",
            out.display()
        )));
    }
    if out.extension().is_none_or(|ext| ext != "uqff") {
        return Err(Error::config(format!(
            "write_uqff: {}: expected a file name ending in .uqff (e.g. {})",
            out.display(),
            out.join("model.uqff").display()
        )));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!(
                "write_uqff: {}: cannot create the directory ({e})",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// The device a session loads on. The 0.8.1 builders place a model on CPU
/// (forced) or on the first CUDA/Metal device; other GPUs are reached
/// through a topology.
fn session_device(spec: &str) -> Result<Device> {
    match spec {
        "auto" => mistralrs::best_device(false).map_err(anyhow::Error::from),
        "cpu" | "cuda[0]" | "metal[0]" => parse_device(spec),
        spec if spec.starts_with("cuda[") || spec.starts_with("metal[") => Err(anyhow::anyhow!(
            "'{spec}': a session loads on device 0; place layers on other devices with a topology's device field"
        )),
        spec => parse_device(spec),
    }
    .map_err(|e| Error::config(format!("device: {e:#}")))
}

/// mistral.rs's "auto" picks bf16 on CPU. Measured here, f32 decodes the
/// default model ~10% faster (54 vs 49 tok/s, prompt 86 vs 77) and keeps the
/// KV cache in full precision, so on CPU "auto" means f32.
fn model_dtype(requested: ModelDType, device: &Device) -> ModelDType {
    match requested {
        ModelDType::Auto if device.is_cpu() => ModelDType::F32,
        other => other,
    }
}

/// Whether paged attention is asked for ("auto": where the device has it).
fn paged_attention_wanted(setting: &str, device_has_it: bool) -> Result<bool> {
    match setting {
        "auto" => Ok(device_has_it),
        "off" => Ok(false),
        "on" if device_has_it => Ok(true),
        "on" => {
            let hint = if build_features().contains(&"cuda") {
                "no CUDA device is in use"
            } else {
                "this build has no `cuda` feature (rebuild with --features cuda)"
            };
            Err(Error::config(format!(
                "paged_attention: 'on' needs a CUDA or Metal device, and {hint}; use 'auto' or 'off' on CPU"
            )))
        }
        other => Err(Error::config(format!(
            "paged_attention: '{other}' is not one of auto, on, off"
        ))),
    }
}
