//! `ForcedScorer`: the log-probabilities of a given text under the model
//! (teacher forcing through the engine's own forward pass).

use std::sync::Mutex;

use mistralrs::{CustomLogitsProcessor, DType, Tensor};

use crate::errors::{Error, Result};
use crate::sampling::only_choice;

/// Scores a fixed text: at each step it records the log-probability of the
/// text's next token and then makes that token the only choice, so the
/// engine's greedy path walks through the text (teacher forcing).
pub struct ForcedScorer {
    tokens: Vec<u32>,
    logprobs: Mutex<Vec<f64>>,
    /// Each position's whole log-softmax row, when kept (`keeping_distributions`).
    distributions: Option<Mutex<Vec<Vec<f32>>>>,
}

impl ForcedScorer {
    pub fn new(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            logprobs: Mutex::new(Vec::new()),
            distributions: None,
        }
    }

    /// A scorer that also keeps every position's whole next-token distribution.
    pub fn keeping_distributions(tokens: Vec<u32>) -> Self {
        Self {
            distributions: Some(Mutex::new(Vec::new())),
            ..Self::new(tokens)
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// One log-probability per token after the first, once the request is done.
    pub fn logprobs(&self) -> Result<Vec<f64>> {
        let logprobs = self
            .logprobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.check_complete(logprobs.len())?;
        Ok(logprobs)
    }

    /// One log-softmax row per token after the first, once the request is done.
    pub fn distributions(&self) -> Result<Vec<Vec<f32>>> {
        let rows = match &self.distributions {
            Some(rows) => std::mem::take(&mut *rows.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        };
        self.check_complete(rows.len())?;
        Ok(rows)
    }

    fn check_complete(&self, scored: usize) -> Result<()> {
        if scored + 1 != self.tokens.len() {
            return Err(Error::request(format!(
                "score: the engine stopped after {} of {} tokens",
                scored,
                self.tokens.len() - 1
            )));
        }
        Ok(())
    }
}

/// Log-softmax of `logits` (summed in f64).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_total = max + total.ln();
    logits
        .iter()
        .map(|&l| (l as f64 - log_total) as f32)
        .collect()
}

/// Log-softmax of `logits` at `target`.
fn log_probability(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - total.ln()
}

impl CustomLogitsProcessor for ForcedScorer {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let Some(&target) = self.tokens.get(context.len()) else {
            return Ok(logits.clone());
        };
        let target = target as usize;
        if target >= values.len() {
            return Err(candle_core::Error::Msg(format!(
                "token id {target} is outside the vocabulary ({} tokens)",
                values.len()
            )));
        }
        self.logprobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log_probability(&values, target));
        if let Some(rows) = &self.distributions {
            rows.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(log_softmax(&values));
        }
        only_choice(logits, values.len(), target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probability_matches_a_hand_computed_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f64 = [1.0f64, 2.0, 3.0].iter().map(|l| l.exp()).sum();
        for target in 0..3 {
            let expected = ((target + 1) as f64).exp().ln() - total.ln();
            assert!((log_probability(&logits, target) - expected).abs() < 1e-9);
        }
        // Large logits do not overflow.
        assert!((log_probability(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn a_log_softmax_row_holds_each_tokens_log_probability() {
        let logits = [1.0f32, -2.0, 3.5, 1000.0, 999.0];
        let row = log_softmax(&logits);
        for (target, value) in row.iter().enumerate() {
            // f32 holds ~7 significant digits (-1002.0 to within ~6e-5).
            let expected = log_probability(&logits, target);
            assert!((*value as f64 - expected).abs() <= 1e-6 * expected.abs().max(1.0));
        }
        let mass: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-6);
    }
}
