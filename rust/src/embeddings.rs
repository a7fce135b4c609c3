//! Embedding requests: each input (text, or token ids) is one engine
//! request; all are sent before any answer is awaited, so the engine runs
//! them in the same steps (its scheduler batches inputs of equal length).

use mistralrs::core::RequestMessage;
use mistralrs::{Constraint, Model, NormalRequest, Request, Response, SamplingParams};
use pyo3::prelude::*;
use tokio::sync::mpsc::{channel, Receiver};

use crate::engine::send_to_engine;
use crate::errors::{Error, Result};
use crate::stream::engine_failure;

/// One input to embed, as Python gives it.
#[derive(FromPyObject)]
pub enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// One input's embedding and the number of tokens the model read.
pub struct Embedding {
    pub vector: Vec<f32>,
    pub prompt_tokens: usize,
}

fn embedding_request(input: EmbeddingInput, truncate: bool) -> (Request, Receiver<Response>) {
    let (tx, rx) = channel(1);
    let messages = match input {
        EmbeddingInput::Text(prompt) => RequestMessage::Embedding { prompt },
        EmbeddingInput::Tokens(prompt) => RequestMessage::EmbeddingTokens { prompt },
    };
    let request = Request::Normal(Box::new(NormalRequest {
        messages,
        sampling_params: SamplingParams::deterministic(),
        response: tx,
        return_logprobs: false,
        is_streaming: false,
        id: 0,
        constraint: Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: truncate,
    }));
    (request, rx)
}

/// Embed every input (blocking; call with the GIL released). `truncate`
/// keeps the start of an input longer than the context instead of refusing it.
pub fn embed_all(
    model: &Model,
    inputs: Vec<EmbeddingInput>,
    truncate: bool,
) -> Result<Vec<Embedding>> {
    let mut answers = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (request, rx) = embedding_request(input, truncate);
        send_to_engine(model, request)?;
        answers.push(rx);
    }
    answers
        .into_iter()
        .enumerate()
        .map(|(index, mut rx)| match rx.blocking_recv() {
            Some(Response::Embeddings {
                embeddings,
                prompt_tokens,
                ..
            }) => Ok(Embedding {
                vector: embeddings,
                prompt_tokens,
            }),
            Some(other) => Err(in_input(index, engine_failure(other))),
            None => Err(Error::request(format!(
                "input[{index}]: the engine dropped the embedding request"
            ))),
        })
        .collect()
}

/// `error`, its message prefixed with the input it is about.
fn in_input(index: usize, error: Error) -> Error {
    match error {
        Error::ContextOverflow {
            message,
            prompt_tokens,
            context_length,
        } => Error::ContextOverflow {
            message: format!("input[{index}]: {message}"),
            prompt_tokens,
            context_length,
        },
        Error::Request(message) => Error::Request(format!("input[{index}]: {message}")),
        other => other,
    }
}
