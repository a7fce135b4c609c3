//! `Session`: one loaded model in a running mistral.rs engine.
//!
//! The engine runs on its own thread and batches every request it receives,
//! so a `Session` is shared freely between Python threads: each request gets
//! its own channel and the GIL is released while waiting on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use either::Either;
use mistralrs::core::{DetokenizationRequest, RequestMessage, TokenizationRequest};
use mistralrs::core::{Tool, ToolChoice};
use mistralrs::{
    Constraint, CustomLogitsProcessor, MemoryGpuConfig, Model, ModelDType, NormalRequest,
    PagedAttentionConfig, PagedCacheType, Request, Response,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::mpsc::{channel, Receiver};

use crate::counts::SequenceCount;
use crate::device::{device_name, parse_device};
use crate::errors::{panic_message, ConfigError, ModelLoadError, RequestError};
use crate::loader::{
    build_features, build_model, dtype_name, parse_dtype, parse_kv_mem, LoadOptions,
};
use crate::model_files::{ModelFiles, ModelFormat};
use crate::request::{convert_input, ForcedScorer, RequestInput, Sampling};
use crate::stream::ChatStream;
use crate::topology::{canonical_isq, Topology};

/// What a session was asked for and what is in effect.
#[derive(Clone)]
struct SessionInfo {
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
    paged_cache_type: String,
}

/// Chunks one stream holds. The engine awaits a full channel, and that
/// stalls every sequence of the batch behind one reader that is not reading
/// (a thread reading its streams one after another deadlocked on 16); tokio
/// allocates slots as they fill, so a buffer longer than any answer costs only
/// what is queued.
const STREAM_BUFFER: usize = 1 << 20;

/// A model loaded into the mistral.rs engine, ready for chat requests.
#[pyclass(module = "mistralvllm._core", frozen)]
pub struct Session {
    model: RwLock<Option<Arc<Model>>>,
    running: SequenceCount,
    info: SessionInfo,
}

/// Hand a request to the engine's queue (blocking; call with the GIL released).
fn send_to_engine(model: &Model, request: Request) -> PyResult<()> {
    let sender = model
        .inner()
        .get_sender(None)
        .map_err(|e| RequestError::new_err(format!("engine unavailable: {e}")))?;
    sender
        .blocking_send(request)
        .map_err(|_| RequestError::new_err("the engine has stopped"))
}

/// Tokenize with the engine's tokenizer (blocking; call with the GIL
/// released). Special tokens (e.g. a BOS) are added by default to a raw
/// prompt only: a chat template writes its own.
fn tokenize_input(
    model: &Model,
    input: RequestInput,
    add_generation_prompt: bool,
    add_special_tokens: Option<bool>,
) -> PyResult<Vec<u32>> {
    let (tx, mut rx) = channel(1);
    let add_special_tokens = add_special_tokens.unwrap_or(input.is_right());
    let request = Request::Tokenize(TokenizationRequest {
        text: input,
        tools: None,
        add_generation_prompt,
        add_special_tokens,
        enable_thinking: None,
        reasoning_effort: None,
        response: tx,
    });
    send_to_engine(model, request)?;
    rx.blocking_recv()
        .ok_or_else(|| RequestError::new_err("the engine dropped the tokenize request"))?
        .map_err(|e| RequestError::new_err(format!("tokenize: {e:#}")))
}

impl Session {
    /// Send a request to the engine; its answer comes back as a `ChatStream`.
    fn submit(
        &self,
        py: Python<'_>,
        request: Request,
        rx: Receiver<Response>,
        stops: Vec<String>,
    ) -> PyResult<ChatStream> {
        let model = self.model()?;
        let (running, sent_at) = py.detach(|| {
            let running = self.running.enter();
            let sent_at = Instant::now();
            send_to_engine(&model, request)?;
            Ok::<_, PyErr>((running, sent_at))
        })?;
        Ok(ChatStream::new(rx, running, sent_at, stops))
    }

    /// Run `scorer` over its tokens in the engine (one forced decoding step per token).
    fn run_scorer(&self, py: Python<'_>, scorer: ForcedScorer) -> PyResult<Arc<ForcedScorer>> {
        let tokens = scorer.tokens().to_vec();
        if tokens.len() < 2 {
            return Err(RequestError::new_err(
                "tokens: expected at least 2 token ids",
            ));
        }
        let scorer = Arc::new(scorer);
        let (sampling_params, _) = Sampling {
            max_tokens: Some(tokens.len() - 1),
            ..Sampling::default()
        }
        .into_engine()?;
        let processor: Arc<dyn CustomLogitsProcessor> = scorer.clone();
        let (tx, rx) = channel(STREAM_BUFFER);
        let request = Request::Normal(Box::new(NormalRequest {
            messages: RequestMessage::CompletionTokens(tokens[..1].to_vec()),
            sampling_params,
            response: tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: Some(vec![processor]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let stream = self.submit(py, request, rx, Vec::new())?;
        py.detach(|| {
            while stream.next_chunk()?.is_some() {}
            Ok::<_, PyErr>(())
        })?;
        Ok(scorer)
    }

    fn model(&self) -> PyResult<Arc<Model>> {
        self.model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| RequestError::new_err("the session is closed"))
    }
}

#[pymethods]
impl Session {
    /// Load `model` (a `.gguf` file or a Hugging Face model directory) into the engine.
    #[new]
    #[pyo3(signature = (
        model, *, topology=None, isq=None, device="auto", paged_attention="auto",
        block_size=None, kv_mem=None, max_num_seqs=32, prefix_cache_n=Some(16), prefix_cache_bytes=None, dtype="auto",
        paged_cache_type="auto", write_uqff=None, lora_adapters=Vec::new()
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        topology: Option<Topology>,
        isq: Option<String>,
        device: &str,
        paged_attention: &str,
        block_size: Option<usize>,
        kv_mem: Option<(String, f64)>,
        max_num_seqs: usize,
        prefix_cache_n: Option<usize>,
        prefix_cache_bytes: Option<usize>,
        dtype: &str,
        paged_cache_type: &str,
        write_uqff: Option<PathBuf>,
        lora_adapters: Vec<String>,
    ) -> PyResult<Self> {
        let files = ModelFiles::inspect(&model).map_err(ModelLoadError::new_err)?;
        let isq = isq
            .map(|name| canonical_isq(&name).map(str::to_string))
            .transpose()
            .map_err(ConfigError::new_err)?;
        let quantizes = isq.is_some() || topology.as_ref().is_some_and(Topology::has_isq);
        if files.format != ModelFormat::Plain && quantizes {
            return Err(ConfigError::new_err(format!(
                "{}: ISQ applies to plain (safetensors) models; a {} model is already quantized (drop isq / the topology's isq, or load a safetensors model directory)",
                files.path.display(),
                files.format.name()
            )));
        }
        if files.format != ModelFormat::Plain && !lora_adapters.is_empty() {
            return Err(ConfigError::new_err(format!(
                "{}: LoRA adapters are merged into plain (safetensors) models; this is a {} model",
                files.path.display(),
                files.format.name()
            )));
        }
        if let Some(out) = &write_uqff {
            if files.format != ModelFormat::Plain || !quantizes {
                return Err(ConfigError::new_err(format!(
                    "write_uqff: {}: UQFF stores ISQ-quantized weights; give isq or a topology with isq, and a safetensors model directory",
                    out.display()
                )));
            }
            if out.extension().is_none_or(|ext| ext != "uqff") {
                return Err(ConfigError::new_err(format!(
                    "write_uqff: {}: expected a file name ending in .uqff (e.g. {})",
                    out.display(),
                    out.join("model.uqff").display()
                )));
            }
            // mistral.rs writes the config and tokenizer beside the .uqff file.
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ConfigError::new_err(format!(
                        "write_uqff: {}: cannot create the directory ({e})",
                        dir.display()
                    ))
                })?;
            }
        }
        let cache_type = match paged_cache_type {
            "auto" => PagedCacheType::Auto,
            "f8e4m3" => PagedCacheType::F8E4M3,
            other => {
                return Err(ConfigError::new_err(format!(
                    "paged_cache_type: '{other}' is not one of auto, f8e4m3"
                )))
            }
        };
        if let Some(topology) = &topology {
            topology
                .check_layers(files.num_layers)
                .map_err(|e| ConfigError::new_err(format!("{}: {e}", files.path.display())))?;
        }
        let requested_dtype = parse_dtype(dtype)?;
        if max_num_seqs == 0 {
            return Err(ConfigError::new_err("max_num_seqs: expected at least 1"));
        }
        // The 0.8.1 builders place a model on CPU (forced) or on the first
        // CUDA/Metal device; other GPUs are reached through a topology.
        let device = match device {
            "auto" => mistralrs::best_device(false).map_err(anyhow::Error::from),
            "cpu" | "cuda[0]" | "metal[0]" => parse_device(device),
            spec if spec.starts_with("cuda[") || spec.starts_with("metal[") => Err(anyhow::anyhow!(
                "'{spec}': a session loads on device 0; place layers on other devices with a topology's device field"
            )),
            spec => parse_device(spec),
        }
        .map_err(|e| ConfigError::new_err(format!("device: {e:#}")))?;
        // mistral.rs's "auto" picks bf16 on CPU. Measured here, f32 decodes
        // the default model ~10% faster (54 vs 49 tok/s, prompt 86 vs 77) and
        // keeps the KV cache in full precision, so on CPU "auto" means f32.
        let model_dtype = match requested_dtype {
            ModelDType::Auto if device.is_cpu() => ModelDType::F32,
            other => other,
        };
        let paged_capable = !device.is_cpu();
        let paged_requested = match paged_attention {
            "auto" => paged_capable,
            "off" => false,
            "on" if paged_capable => true,
            "on" => {
                let hint = if build_features().contains(&"cuda") {
                    "no CUDA device is in use"
                } else {
                    "this build has no `cuda` feature (rebuild with --features cuda)"
                };
                return Err(ConfigError::new_err(format!(
                    "paged_attention: 'on' needs a CUDA or Metal device, and {hint}; use 'auto' or 'off' on CPU"
                )));
            }
            other => {
                return Err(ConfigError::new_err(format!(
                    "paged_attention: '{other}' is not one of auto, on, off"
                )))
            }
        };
        if paged_cache_type != "auto" && !paged_requested {
            return Err(ConfigError::new_err(format!(
                "paged_cache_type: '{paged_cache_type}' sets the KV-cache type of paged attention, which is off here (it needs a CUDA or Metal device); without it the KV cache has the model's dtype"
            )));
        }
        if let Some(size) = block_size.filter(|s| ![8, 16, 32].contains(s)) {
            return Err(ConfigError::new_err(format!(
                "block_size: {size} is not one of 8, 16, 32"
            )));
        }
        let paged_attn = if paged_requested {
            let mem = match &kv_mem {
                Some((kind, value)) => parse_kv_mem(kind, *value)?,
                None => MemoryGpuConfig::ContextSize(4096),
            };
            Some(
                PagedAttentionConfig::new(block_size, mem, cache_type)
                    .map_err(|e| ConfigError::new_err(format!("paged_attention: {e:#}")))?,
            )
        } else {
            None
        };
        let options = LoadOptions {
            isq: isq.clone(),
            write_uqff,
            lora_adapters: lora_adapters.clone(),
            topology: topology.clone(),
            device,
            paged_attn,
            max_num_seqs,
            prefix_cache_n,
            prefix_cache_bytes,
            dtype: model_dtype,
        };
        let loaded = py.detach(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                build_model(&files, options)
            }))
        });
        let (model, paged) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                return Err(ModelLoadError::new_err(format!(
                    "{}: the engine could not load the model: {e:#}",
                    files.path.display()
                )))
            }
            Err(panic) => {
                return Err(ModelLoadError::new_err(format!(
                    "{}: the engine failed while loading the model: {}",
                    files.path.display(),
                    panic_message(panic.as_ref())
                )))
            }
        };
        let config = model
            .config()
            .map_err(|e| ModelLoadError::new_err(format!("{}: {e}", files.path.display())))?;
        let info = SessionInfo {
            device: device_name(&config.device),
            max_seq_len: config.max_seq_len,
            files,
            dtype: dtype_name(model_dtype).to_string(),
            isq,
            topology,
            paged_attention: paged,
            block_size: block_size.filter(|_| paged),
            kv_mem: kv_mem.filter(|_| paged),
            max_num_seqs,
            prefix_cache_n,
            prefix_cache_bytes,
            lora_adapters,
            paged_cache_type: paged_cache_type.to_string(),
        };
        Ok(Self {
            model: RwLock::new(Some(Arc::new(model))),
            running: SequenceCount::default(),
            info,
        })
    }

    /// Send a chat request; returns a `ChatStream` of chunks.
    #[pyo3(signature = (
        messages=None, *, prompt=None, max_tokens=None, temperature=None, top_p=None, top_k=None, min_p=None,
        seed=None, stop=None, frequency_penalty=None, presence_penalty=None, repetition_penalty=None,
        json_schema=None, regex=None, grammar=None, tools=None, tool_choice=None, logprobs=false, top_logprobs=None,
        logit_bias=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        messages: Option<&Bound<'_, PyList>>,
        prompt: Option<String>,
        max_tokens: Option<usize>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        top_k: Option<usize>,
        min_p: Option<f64>,
        seed: Option<u64>,
        stop: Option<Vec<String>>,
        frequency_penalty: Option<f32>,
        presence_penalty: Option<f32>,
        repetition_penalty: Option<f32>,
        json_schema: Option<&str>,
        regex: Option<String>,
        grammar: Option<String>,
        tools: Option<&str>,
        tool_choice: Option<&str>,
        logprobs: bool,
        top_logprobs: Option<usize>,
        logit_bias: Option<HashMap<u32, f32>>,
    ) -> PyResult<ChatStream> {
        if top_logprobs.is_some() && !logprobs {
            return Err(RequestError::new_err("top_logprobs: needs logprobs=True"));
        }
        let input = convert_input(messages, prompt)?;
        // Tools in OpenAI's shape; mistral.rs renders them with the chat
        // template and parses calls from the answer.
        let tools = tools
            .map(|text| {
                serde_json::from_str::<Vec<Tool>>(text).map_err(|e| {
                    RequestError::new_err(format!(
                        "tools: expected a list of {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}} ({e})"
                    ))
                })
            })
            .transpose()?;
        let tool_choice = match tool_choice {
            None => None,
            Some("auto") => Some(ToolChoice::Auto),
            Some("none") => Some(ToolChoice::None),
            Some(other) => {
                return Err(RequestError::new_err(format!(
                    "tool_choice: '{other}' is not one of auto, none"
                )))
            }
        };
        // Constrained decoding (llguidance inside mistral.rs): the answer is
        // JSON that validates against the schema, matches the regex, or is a
        // sentence of the Lark grammar.
        let constraint = match (json_schema, regex, grammar) {
            (None, None, None) => Constraint::None,
            (Some(text), None, None) => {
                Constraint::JsonSchema(serde_json::from_str(text).map_err(|e| {
                    RequestError::new_err(format!("json_schema: not valid JSON ({e})"))
                })?)
            }
            (None, Some(pattern), None) => Constraint::Regex(pattern),
            (None, None, Some(lark)) => Constraint::Lark(lark),
            _ => {
                return Err(RequestError::new_err(
                    "give at most one of json_schema, regex and grammar",
                ))
            }
        };
        let stops = stop.clone().unwrap_or_default();
        let sampling = Sampling {
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            seed,
            stop,
            frequency_penalty,
            presence_penalty,
            repetition_penalty,
            top_logprobs: logprobs.then_some(top_logprobs.unwrap_or(0)),
            logit_bias,
        };
        let (sampling_params, logits_processors) = sampling.into_engine()?;
        let (tx, rx) = channel(STREAM_BUFFER);
        let request = Request::Normal(Box::new(NormalRequest {
            messages: match input {
                Either::Left(messages) => RequestMessage::Chat {
                    messages,
                    enable_thinking: None,
                    reasoning_effort: None,
                },
                Either::Right(text) => RequestMessage::Completion {
                    text,
                    echo_prompt: false,
                    best_of: None,
                },
            },
            sampling_params,
            response: tx,
            return_logprobs: logprobs,
            is_streaming: true,
            id: 0,
            constraint,
            suffix: None,
            tools,
            tool_choice,
            logits_processors,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        self.submit(py, request, rx, stops)
    }

    /// Log-probability of each token of `tokens` after the first, given the
    /// tokens before it (teacher forcing): the model scores the text instead
    /// of writing its own. `exp(-mean)` of the result is the perplexity.
    fn score(&self, py: Python<'_>, tokens: Vec<u32>) -> PyResult<Vec<f64>> {
        self.run_scorer(py, ForcedScorer::new(tokens))?.logprobs()
    }

    /// The model's whole next-token distribution at each position of
    /// `tokens` after the first (teacher forcing, as `score`): one row per
    /// position, the natural-log probabilities of every token id as
    /// little-endian f32 bytes (numpy: `frombuffer(row, "<f4")`).
    fn score_distributions<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<u32>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let rows = self
            .run_scorer(py, ForcedScorer::keeping_distributions(tokens))?
            .distributions()?;
        Ok(rows
            .iter()
            .map(|row| {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                PyBytes::new(py, &bytes)
            })
            .collect())
    }

    /// Counters of the engine since the session started (sequences begun,
    /// how many of them reused a cached prefix) and what its caches hold as of
    /// its last step (patches/mistralrs-core-0.8.1/0006).
    fn engine_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.model()?;
        let logger = model
            .inner()
            .get_logger(None)
            .map_err(|e| RequestError::new_err(format!("engine unavailable: {e}")))?;
        let (hits, sequences) = logger.prefix_cache_stats();
        let stats = PyDict::new(py);
        stats.set_item("sequences", sequences)?;
        stats.set_item("prefix_cache_hits", hits)?;
        let usage = logger.cache_usage();
        let (held, held_bytes) = usage.prefix_cache_held;
        stats.set_item("prefix_cache_sequences", held)?;
        stats.set_item("prefix_cache_bytes", held_bytes)?;
        stats.set_item("kv_cache_tokens", usage.kv_tokens)?;
        let (used, total) = usage.kv_blocks.unzip();
        stats.set_item("kv_cache_blocks_used", used)?;
        stats.set_item("kv_cache_blocks", total)?;
        let (running, waiting) = logger.scheduled();
        stats.set_item("sequences_running", running)?;
        stats.set_item("sequences_waiting", waiting)?;
        Ok(stats)
    }

    /// Token ids of `messages` rendered with the model's chat template, or of
    /// a raw `prompt`; `add_special_tokens` defaults to true for a prompt only.
    #[pyo3(signature = (messages=None, *, prompt=None, add_generation_prompt=true, add_special_tokens=None))]
    fn tokenize(
        &self,
        py: Python<'_>,
        messages: Option<&Bound<'_, PyList>>,
        prompt: Option<String>,
        add_generation_prompt: bool,
        add_special_tokens: Option<bool>,
    ) -> PyResult<Vec<u32>> {
        let input = convert_input(messages, prompt)?;
        let model = self.model()?;
        py.detach(|| tokenize_input(&model, input, add_generation_prompt, add_special_tokens))
    }

    /// The text of `tokens`; special tokens (e.g. `<|im_end|>`) are left out
    /// with `skip_special_tokens`.
    #[pyo3(signature = (tokens, *, skip_special_tokens=false))]
    fn detokenize(
        &self,
        py: Python<'_>,
        tokens: Vec<u32>,
        skip_special_tokens: bool,
    ) -> PyResult<String> {
        let model = self.model()?;
        py.detach(|| {
            let (tx, mut rx) = channel(1);
            let request = Request::Detokenize(DetokenizationRequest {
                tokens,
                skip_special_tokens,
                response: tx,
            });
            send_to_engine(&model, request)?;
            rx.blocking_recv()
                .ok_or_else(|| RequestError::new_err("the engine dropped the detokenize request"))?
                .map_err(|e| RequestError::new_err(format!("detokenize: {e:#}")))
        })
    }

    /// What is loaded and what is in effect (device, paged attention, topology, ...).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = &self.info;
        let dict = PyDict::new(py);
        dict.set_item("model", info.files.path.to_string_lossy())?;
        dict.set_item("format", info.files.format.name())?;
        dict.set_item("architecture", &info.files.architecture)?;
        dict.set_item("num_layers", info.files.num_layers)?;
        dict.set_item("vocab_size", info.files.vocab_size)?;
        dict.set_item("max_seq_len", info.max_seq_len)?;
        dict.set_item("device", &info.device)?;
        dict.set_item("dtype", &info.dtype)?;
        dict.set_item("isq", &info.isq)?;
        dict.set_item("topology", info.topology.clone())?;
        dict.set_item("paged_attention", info.paged_attention)?;
        dict.set_item("block_size", info.block_size)?;
        dict.set_item("kv_mem", info.kv_mem.clone())?;
        dict.set_item("max_num_seqs", info.max_num_seqs)?;
        dict.set_item("max_running_sequences", info.max_num_seqs)?;
        dict.set_item("prefix_cache_n", info.prefix_cache_n)?;
        dict.set_item("prefix_cache_bytes_limit", info.prefix_cache_bytes)?;
        dict.set_item("paged_cache_type", &info.paged_cache_type)?;
        dict.set_item("lora_adapters", info.lora_adapters.clone())?;
        dict.set_item("chat_template", info.files.chat_template.clone())?;
        dict.set_item("build_features", build_features())?;
        dict.set_item("closed", self.closed())?;
        Ok(dict)
    }

    /// Streams sent to the engine and not yet finished or closed.
    fn sequence_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = PyDict::new(py);
        counts.set_item("running", self.running.get())?;
        Ok(counts)
    }

    /// Stop the engine and free the model; later requests raise `RequestError`.
    fn close(&self, py: Python<'_>) {
        let model = self.model.write().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(model));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}
