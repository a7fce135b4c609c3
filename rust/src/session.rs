//! `Session`: one loaded model in a running mistral.rs engine.
//!
//! The engine runs on its own thread and batches every request it receives,
//! so a `Session` is shared freely between Python threads: each request gets
//! its own channel and the GIL is released while waiting on it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use mistralrs::core::RequestMessage;
use mistralrs::{Constraint, CustomLogitsProcessor, Model, Request, Response};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::mpsc::{channel, Receiver};

use crate::counts::SequenceCount;
use crate::embeddings::{embed_all, EmbeddingInput};
use crate::engine::{detokenize_tokens, send_to_engine, tokenize_input};
use crate::errors::{panic_message, Error, Result};
use crate::loader::build_model;
use crate::request::{convert_input, engine_request, ChatRequest, EngineRequest};
use crate::sampling::Sampling;
use crate::scorer::ForcedScorer;
use crate::session_info::SessionInfo;
use crate::session_settings::{ResolvedSettings, SessionSettings};
use crate::stream::ChatStream;
use crate::topology::Topology;

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

/// Load the model the settings name (with the GIL released); a panic inside
/// the engine's loaders is a `ModelLoadError`, not a crash.
fn load(py: Python<'_>, settings: &ResolvedSettings) -> Result<(Model, bool)> {
    let path = settings.files.path.display();
    let loaded = py.detach(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build_model(&settings.files, settings.options.clone())
        }))
    });
    match loaded {
        Ok(Ok(loaded)) => Ok(loaded),
        Ok(Err(e)) => Err(Error::model_load(format!(
            "{path}: the engine could not load the model: {e:#}"
        ))),
        Err(panic) => Err(Error::model_load(format!(
            "{path}: the engine failed while loading the model: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

impl Session {
    /// Send a request to the engine; its answer comes back as a `ChatStream`.
    fn submit(
        &self,
        py: Python<'_>,
        request: Request,
        rx: Receiver<Response>,
        stops: Vec<String>,
    ) -> Result<ChatStream> {
        if self.info.is_embedding() {
            return Err(Error::request(format!(
                "{}: an embedding model writes no text; use embed()",
                self.info.model_path()
            )));
        }
        let model = self.model()?;
        let (running, sent_at) = py.detach(|| {
            let running = self.running.enter();
            let sent_at = Instant::now();
            send_to_engine(&model, request)?;
            Ok::<_, Error>((running, sent_at))
        })?;
        Ok(ChatStream::new(rx, running, sent_at, stops))
    }

    /// Run `scorer` over its tokens in the engine (one forced decoding step per token).
    fn run_scorer(&self, py: Python<'_>, scorer: ForcedScorer) -> Result<Arc<ForcedScorer>> {
        let tokens = scorer.tokens().to_vec();
        if tokens.len() < 2 {
            return Err(Error::request("tokens: expected at least 2 token ids"));
        }
        let scorer = Arc::new(scorer);
        let params = Sampling {
            max_tokens: Some(tokens.len() - 1),
            ..Sampling::default()
        }
        .into_engine()?
        .params;
        let processor: Arc<dyn CustomLogitsProcessor> = scorer.clone();
        let (tx, rx) = channel(STREAM_BUFFER);
        let request = engine_request(EngineRequest {
            messages: RequestMessage::CompletionTokens(tokens[..1].to_vec()),
            params,
            processors: Some(vec![processor]),
            constraint: Constraint::None,
            tools: None,
            tool_choice: None,
            logprobs: false,
            response: tx,
        });
        let stream = self.submit(py, request, rx, Vec::new())?;
        py.detach(|| {
            while stream.next_chunk()?.is_some() {}
            Ok::<_, Error>(())
        })?;
        Ok(scorer)
    }

    fn model(&self) -> Result<Arc<Model>> {
        self.model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::request("the session is closed"))
    }
}

#[pymethods]
impl Session {
    /// Load `model` (a `.gguf` file or a Hugging Face model directory) into the engine.
    #[new]
    #[pyo3(signature = (
        model, *, topology=None, isq=None, device="auto", paged_attention="auto",
        block_size=None, kv_mem=None, max_num_seqs=32, prefix_cache_n=Some(16), prefix_cache_bytes=None, dtype="auto",
        paged_cache_type="auto", write_uqff=None, lora_adapters=Vec::new(), draft_model=None,
        draft_tokens=4
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
        draft_model: Option<PathBuf>,
        draft_tokens: usize,
    ) -> PyResult<Self> {
        let settings = SessionSettings {
            model,
            topology,
            isq,
            device: device.to_string(),
            paged_attention: paged_attention.to_string(),
            block_size,
            kv_mem,
            max_num_seqs,
            prefix_cache_n,
            prefix_cache_bytes,
            dtype: dtype.to_string(),
            paged_cache_type: paged_cache_type.to_string(),
            write_uqff,
            lora_adapters,
            draft_model,
            draft_tokens,
        }
        .resolve()?;
        let (model, paged) = load(py, &settings)?;
        let info = SessionInfo::of_loaded(settings, &model, paged)?;
        Ok(Self {
            model: RwLock::new(Some(Arc::new(model))),
            running: SequenceCount::default(),
            info,
        })
    }

    /// Send a chat request (`messages`, or a raw `prompt` to continue) with
    /// its `sampling` (a `mistralvllm.SamplingParams`) and tools (JSON text);
    /// returns a `ChatStream` of chunks.
    #[pyo3(signature = (messages=None, *, prompt=None, sampling=None, tools=None, tool_choice=None))]
    fn stream(
        &self,
        py: Python<'_>,
        messages: Option<&Bound<'_, PyList>>,
        prompt: Option<String>,
        sampling: Option<Sampling>,
        tools: Option<String>,
        tool_choice: Option<String>,
    ) -> PyResult<ChatStream> {
        let sampling = sampling.unwrap_or_default();
        let stops = sampling.stop.clone().unwrap_or_default();
        let request = ChatRequest {
            input: convert_input(messages, prompt)?,
            sampling,
            tools,
            tool_choice,
        };
        let (tx, rx) = channel(STREAM_BUFFER);
        // Without the GIL: decoding a request's images takes a while.
        let category = self.info.category();
        let engine_request = py.detach(|| request.into_engine(tx, category))?;
        Ok(self.submit(py, engine_request, rx, stops)?)
    }

    /// Embeddings of `inputs` (texts, or lists of token ids) from an
    /// embedding model: per input, the vector as little-endian f32 bytes
    /// (numpy: `frombuffer(v, "<f4")`) and the number of tokens read. An
    /// input longer than the context is refused, or cut to its start with
    /// `truncate`.
    #[pyo3(signature = (inputs, *, truncate=false))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<EmbeddingInput>,
        truncate: bool,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, usize)>> {
        if !self.info.is_embedding() {
            return Err(Error::request(format!(
                "{}: a chat model has no embeddings; load an embedding model (a sentence-transformers directory with modules.json)",
                self.info.model_path()
            ))
            .into());
        }
        let model = self.model()?;
        let embeddings = py.detach(|| {
            let _running = self.running.enter();
            embed_all(&model, inputs, truncate)
        })?;
        Ok(embeddings
            .into_iter()
            .map(|e| {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                (PyBytes::new(py, &bytes), e.prompt_tokens)
            })
            .collect())
    }

    /// Log-probability of each token of `tokens` after the first, given the
    /// tokens before it (teacher forcing): the model scores the text instead
    /// of writing its own. `exp(-mean)` of the result is the perplexity.
    fn score(&self, py: Python<'_>, tokens: Vec<u32>) -> PyResult<Vec<f64>> {
        Ok(self.run_scorer(py, ForcedScorer::new(tokens))?.logprobs()?)
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
    /// its last step (patches/mistralrs-core-0.8.1/0005-engine-publishes-cache-usage).
    fn engine_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.model()?;
        let logger = model
            .inner()
            .get_logger(None)
            .map_err(|e| Error::request(format!("engine unavailable: {e}")))?;
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
        let (proposed, accepted) = logger.speculative_counts().unzip();
        stats.set_item("draft_tokens_proposed", proposed)?;
        stats.set_item("draft_tokens_accepted", accepted)?;
        Ok(stats)
    }

    /// Token ids of `messages` rendered with the model's chat template, or of
    /// a raw `prompt`; `add_special_tokens` defaults to true for a prompt only.
    /// `sampling`'s `think` and `reasoning_effort` reach the template as a
    /// chat request's do.
    #[pyo3(signature = (messages=None, *, prompt=None, add_generation_prompt=true, add_special_tokens=None, sampling=None))]
    fn tokenize(
        &self,
        py: Python<'_>,
        messages: Option<&Bound<'_, PyList>>,
        prompt: Option<String>,
        add_generation_prompt: bool,
        add_special_tokens: Option<bool>,
        sampling: Option<Sampling>,
    ) -> PyResult<Vec<u32>> {
        let input = convert_input(messages, prompt)?;
        let thinking = match &sampling {
            Some(sampling) => (sampling.think, sampling.reasoning_effort()?),
            None => (None, None),
        };
        let model = self.model()?;
        Ok(py.detach(|| {
            tokenize_input(
                &model,
                input,
                add_generation_prompt,
                add_special_tokens,
                thinking,
            )
        })?)
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
        Ok(py.detach(|| detokenize_tokens(&model, tokens, skip_special_tokens))?)
    }

    /// What is loaded and what is in effect (device, paged attention, topology, ...).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.info.to_dict(py, self.closed())
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
