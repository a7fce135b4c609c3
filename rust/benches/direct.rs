//! mistral.rs driven from Rust, without Python: the same model, loader
//! settings and greedy request as `Session` (see benches/engines.py, which
//! runs this and reports the binding's overhead per token).
//!
//!     cargo bench --bench direct -- MODEL.gguf [MAX_TOKENS] [REPETITIONS]
//!
//! Prints one JSON line: load seconds and decode tok/s per repetition, timed
//! like the Python engines (from the first to the last streamed piece).

use std::path::PathBuf;
use std::time::Instant;

use _core::loader::{build_model, LoadOptions, RUNTIME};
use _core::model_files::ModelFiles;
use mistralrs::{
    ChatCompletionChunkResponse, Device, ModelDType, RequestBuilder, Response, TextMessageRole,
};

const PROMPT: &str = "Write a story about a lighthouse keeper who finds a message in a bottle.";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let model = PathBuf::from(
        args.first()
            .expect("usage: direct MODEL [MAX_TOKENS] [REPETITIONS]"),
    );
    let max_tokens: usize = args.get(1).map_or(Ok(128), |a| a.parse())?;
    let repetitions: usize = args.get(2).map_or(Ok(3), |a| a.parse())?;

    let started = Instant::now();
    let files = ModelFiles::inspect(&model).map_err(anyhow::Error::msg)?;
    let options = LoadOptions {
        isq: None,
        write_uqff: None,
        lora_adapters: Vec::new(),
        draft: None,
        topology: None,
        device: Device::Cpu,
        paged_attn: None,
        max_num_seqs: 32,
        prefix_cache_n: None,
        prefix_cache_bytes: None,
        dtype: ModelDType::F32,
    };
    let (model, _) = build_model(&files, options)?;
    let load_s = started.elapsed().as_secs_f64();

    let decode = RUNTIME.block_on(async {
        let mut rates = Vec::new();
        for round in 0..=repetitions {
            let tokens = if round == 0 { 8 } else { max_tokens }; // round 0 warms up
            let request = RequestBuilder::new()
                .add_message(TextMessageRole::User, PROMPT)
                .set_sampler_temperature(0.0)
                .set_sampler_max_len(tokens);
            let mut stream = model.stream_chat_request(request).await?;
            let (mut first, mut last, mut pieces) = (None, None, 0usize);
            while let Some(response) = stream.next().await {
                match response {
                    Response::Chunk(ChatCompletionChunkResponse { choices, .. }) => {
                        let done = choices.iter().any(|c| c.finish_reason.is_some());
                        if choices
                            .iter()
                            .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
                        {
                            let now = Instant::now();
                            first.get_or_insert(now);
                            last = Some(now);
                            pieces += 1;
                        }
                        if done {
                            break;
                        }
                    }
                    Response::Done(_) => break,
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        anyhow::bail!("engine error: {e}")
                    }
                    Response::ModelError(message, _) => anyhow::bail!("model error: {message}"),
                    _ => anyhow::bail!("unexpected response kind for a chat request"),
                }
            }
            if round > 0 {
                let (first, last) = (first.expect("no text"), last.expect("no text"));
                rates.push((pieces - 1) as f64 / (last - first).as_secs_f64());
            }
        }
        anyhow::Ok(rates)
    })?;
    println!(
        "{}",
        serde_json::json!({ "engine": "mistral.rs-direct", "load_s": load_s, "decode_tok_s": decode })
    );
    Ok(())
}
