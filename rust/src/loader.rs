//! Loading a model into a mistral.rs engine: dtypes, paged
//! attention options, and the loaders themselves.

use std::path::PathBuf;
use std::sync::LazyLock;

use crate::errors::{Error, Result};
use crate::model_files::{ModelFiles, ModelFormat};
use crate::topology::Topology;
use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, EmbeddingLoaderBuilder,
    EmbeddingSpecificConfig, GGUFLoaderBuilder, GGUFSpecificConfig, IsqOrganization, Loader,
    MistralRsBuilder, MultimodalLoaderBuilder, MultimodalSpecificConfig, NormalLoaderBuilder,
    NormalSpecificConfig, SchedulerConfig, SpeculativeConfig, SpeculativeLoader,
};
use mistralrs::{Device, MemoryGpuConfig, Model, ModelDType, PagedAttentionConfig, TokenSource};

/// Runtime for the engine's async builder and tokenizer calls; the engine
/// itself runs on a thread of its own.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mistralvllm-rt")
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

/// Cargo features this extension was built with.
pub fn build_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "cuda") {
        features.push("cuda");
    }
    if cfg!(feature = "cudnn") {
        features.push("cudnn");
    }
    if cfg!(feature = "flash-attn") {
        features.push("flash-attn");
    }
    if cfg!(feature = "nccl") {
        features.push("nccl");
    }
    if cfg!(feature = "ring") {
        features.push("ring");
    }
    features
}

pub fn dtype_name(dtype: ModelDType) -> &'static str {
    match dtype {
        ModelDType::Auto => "auto",
        ModelDType::BF16 => "bf16",
        ModelDType::F16 => "f16",
        ModelDType::F32 => "f32",
    }
}

pub fn parse_dtype(dtype: &str) -> Result<ModelDType> {
    match dtype {
        "auto" => Ok(ModelDType::Auto),
        "bf16" => Ok(ModelDType::BF16),
        "f16" => Ok(ModelDType::F16),
        "f32" => Ok(ModelDType::F32),
        other => Err(Error::config(format!(
            "dtype '{other}' is not one of auto, bf16, f16, f32"
        ))),
    }
}

/// PagedAttention KV-cache memory (seed 003): an amount in MB, a fraction
/// of device memory, or a context size in tokens.
pub fn parse_kv_mem(kind: &str, value: f64) -> Result<MemoryGpuConfig> {
    match kind {
        "mb" if value >= 1.0 => Ok(MemoryGpuConfig::MbAmount(value as usize)),
        "fraction" if value > 0.0 && value <= 1.0 => Ok(MemoryGpuConfig::Utilization(value as f32)),
        "context" if value >= 1.0 => Ok(MemoryGpuConfig::ContextSize(value as usize)),
        _ => Err(Error::config(format!(
            "kv_mem ({kind}, {value}) is not valid; expected ('mb', N >= 1), ('fraction', 0 < F <= 1) or ('context', N >= 1)"
        ))),
    }
}

#[derive(Clone)]
pub struct LoadOptions {
    pub isq: Option<String>,
    /// Write the ISQ-quantized weights to this `.uqff` file (plain models).
    pub write_uqff: Option<PathBuf>,
    /// LoRA adapters to merge at load, as hub-cache repo ids (see adapters.py).
    pub lora_adapters: Vec<String>,
    /// Speculative decoding: the draft model and the tokens it proposes a step.
    pub draft: Option<(ModelFiles, usize)>,
    pub topology: Option<Topology>,
    pub device: Device,
    pub paged_attn: Option<PagedAttentionConfig>,
    pub max_num_seqs: usize,
    pub prefix_cache_n: Option<usize>,
    /// Bytes of KV data the prefix cache may hold (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts).
    pub prefix_cache_bytes: Option<usize>,
    pub dtype: ModelDType,
}

/// Load the model with mistral.rs's loaders and start its engine.
///
/// The loaders are used directly (not `GgufModelBuilder`) because the 0.8.1
/// GGUF builder always picks the activation dtype itself (bf16 on CPU), so
/// `dtype` could not be honoured for GGUF models.
/// Returns the model and whether paged attention is in effect.
pub fn build_model(files: &ModelFiles, options: LoadOptions) -> anyhow::Result<(Model, bool)> {
    let loader = if files.embedding {
        embedding_loader(files, &options)?
    } else {
        model_loader(files, &options)?
    };
    let loader = match &options.draft {
        Some((draft_files, gamma)) => {
            // The draft loads plain: none of the model's topology, LoRA or UQFF.
            let plain = LoadOptions {
                topology: None,
                write_uqff: None,
                lora_adapters: Vec::new(),
                draft: None,
                ..options.clone()
            };
            Box::new(SpeculativeLoader {
                target: loader,
                draft: model_loader(draft_files, &plain)?,
                config: SpeculativeConfig { gamma: *gamma },
            })
        }
        None => loader,
    };
    start_engine(loader, options, files.vision)
}

/// mistral.rs's loader for a sentence-transformers directory: the
/// transformer, then its modules.json's pooling, dense and normalize layers.
fn embedding_loader(files: &ModelFiles, options: &LoadOptions) -> anyhow::Result<Box<dyn Loader>> {
    let topology = options
        .topology
        .as_ref()
        .map(Topology::to_mistralrs)
        .transpose()?;
    let from_uqff = Some(files.uqff_files()).filter(|names| !names.is_empty());
    let builder = EmbeddingLoaderBuilder::new(
        EmbeddingSpecificConfig {
            topology,
            write_uqff: options.write_uqff.clone(),
            from_uqff,
            hf_cache_path: None,
        },
        None,
        Some(files.dir().to_string_lossy().into_owned()),
    );
    let builder = if options.lora_adapters.is_empty() {
        builder
    } else {
        builder.with_lora(options.lora_adapters.clone())
    };
    Ok(builder.build(None))
}

/// mistral.rs's loader for the model's format, with the topology, UQFF and
/// LoRA settings.
fn model_loader(files: &ModelFiles, options: &LoadOptions) -> anyhow::Result<Box<dyn Loader>> {
    let topology = options
        .topology
        .as_ref()
        .map(Topology::to_mistralrs)
        .transpose()?;
    let dir = files.dir().to_string_lossy().into_owned();
    let loader: Box<dyn Loader> = match files.format {
        ModelFormat::Gguf => {
            let name = files
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            GGUFLoaderBuilder::new(
                None,
                None,
                dir,
                vec![name],
                GGUFSpecificConfig { topology },
                false,
                None,
            )
            .build()
        }
        ModelFormat::Plain | ModelFormat::Uqff if files.vision => {
            let from_uqff = Some(files.uqff_files()).filter(|names| !names.is_empty());
            let builder = MultimodalLoaderBuilder::new(
                MultimodalSpecificConfig {
                    topology,
                    write_uqff: options.write_uqff.clone(),
                    from_uqff,
                    ..Default::default()
                },
                None,
                None,
                Some(dir),
                None,
            );
            if options.lora_adapters.is_empty() {
                builder
            } else {
                builder.with_lora(options.lora_adapters.clone())
            }
            .build(None)
        }
        ModelFormat::Plain | ModelFormat::Uqff => {
            let from_uqff = Some(files.uqff_files()).filter(|names| !names.is_empty());
            let builder = NormalLoaderBuilder::new(
                NormalSpecificConfig {
                    topology,
                    organization: IsqOrganization::Default,
                    write_uqff: options.write_uqff.clone(),
                    from_uqff,
                    imatrix: None,
                    calibration_file: None,
                    hf_cache_path: None,
                    matformer_config_path: None,
                    matformer_slice_name: None,
                },
                None,
                None,
                Some(dir),
                false,
                None,
            );
            if options.lora_adapters.is_empty() {
                builder
            } else {
                builder.with_lora(options.lora_adapters.clone())
            }
            .build(None)?
        }
    };
    Ok(loader)
}

/// Load the weights with `loader` and start the engine's thread over them
/// (`vision`: the model has a vision tower, which the device map counts).
fn start_engine(
    loader: Box<dyn Loader>,
    options: LoadOptions,
    vision: bool,
) -> anyhow::Result<(Model, bool)> {
    let device_map = if vision {
        AutoDeviceMapParams::default_multimodal()
    } else {
        AutoDeviceMapParams::default_text()
    };
    let isq = options
        .isq
        .as_deref()
        .map(|name| mistralrs::core::parse_isq_value(name, Some(&options.device)))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let paged_requested = options.paged_attn.is_some();
    RUNTIME.block_on(async move {
        let pipeline = loader.load_model_from_hf(
            None,
            TokenSource::None,
            &options.dtype,
            &options.device,
            true,
            DeviceMapSetting::Auto(device_map),
            isq,
            options.paged_attn,
        )?;
        let cache_config = pipeline.lock().await.get_metadata().cache_config.clone();
        let paged = paged_requested && cache_config.is_some();
        let scheduler = match cache_config {
            Some(config) if paged => SchedulerConfig::PagedAttentionMeta {
                max_num_seqs: options.max_num_seqs,
                config,
            },
            _ => SchedulerConfig::DefaultScheduler {
                method: DefaultSchedulerMethod::Fixed(options.max_num_seqs.try_into()?),
            },
        };
        let runner = MistralRsBuilder::new(pipeline, scheduler, false, None)
            .with_no_kv_cache(false)
            .with_no_prefix_cache(options.prefix_cache_n.is_none())
            .with_prefix_cache_n(options.prefix_cache_n.unwrap_or(0))
            .with_prefix_cache_bytes(options.prefix_cache_bytes)
            .build()
            .await;
        Ok((Model::new(runner), paged))
    })
}
