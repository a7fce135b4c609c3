//! `StopTrimmer`: the request's stop strings cut out of the streamed text.

/// Cuts the answer before the first stop string. mistral.rs stops on it but
/// its stream still carries the stop text; OpenAI's API (and users) expect it
/// left out. Text that may be the start of a stop string is held back until
/// the next chunk shows whether it is. mistral.rs's finish reason is "stop"
/// for a stop string and for the end of the answer alike; `matched` tells
/// them apart (Anthropic's API answers which stop string it was).
#[derive(Default)]
pub struct StopTrimmer {
    stops: Vec<String>,
    pending: String,
    /// The stop string the answer ended on, once it appeared.
    pub matched: Option<String>,
}

impl StopTrimmer {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// The part of `text` that can be shown now; nothing once a stop string matched.
    pub fn push(&mut self, text: &str) -> String {
        if self.matched.is_some() {
            return String::new();
        }
        self.pending.push_str(text);
        // The stop string that ends first: the earliest, and of those the shortest.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, s)| (*at, s.len()))
            .map(|(at, s)| (at, s.clone()));
        if let Some((at, stop)) = first {
            self.matched = Some(stop);
            self.pending.truncate(at);
            return std::mem::take(&mut self.pending);
        }
        let held = self
            .stops
            .iter()
            .map(|stop| held_back_len(&self.pending, stop))
            .max()
            .unwrap_or(0);
        self.pending.drain(..self.pending.len() - held).collect()
    }

    /// Whatever was held back, at the end of the answer.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest end of `text` that is a proper start of `stop`.
fn held_back_len(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&n| {
            n <= text.len()
                && stop.is_char_boundary(n)
                && text.is_char_boundary(text.len() - n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text shown for `pieces`, and the stop string it ended on.
    fn shown(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut trimmer = StopTrimmer::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: String = pieces.iter().map(|p| trimmer.push(p)).collect();
        if trimmer.matched.is_none() {
            out.push_str(&trimmer.flush());
        }
        (out, trimmer.matched)
    }

    fn stop(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn stop_text_is_cut_even_across_chunks() {
        assert_eq!(
            shown(&["Rome"], &["The capital is", " Ro", "me."]),
            ("The capital is ".into(), stop("Rome"))
        );
        assert_eq!(
            shown(&["\n\n"], &["a\n", "\nb"]),
            ("a".into(), stop("\n\n"))
        );
    }

    #[test]
    fn held_back_text_comes_out_when_it_is_not_a_stop() {
        assert_eq!(shown(&["Rome"], &["Ro", "ad"]), ("Road".into(), None));
        assert_eq!(shown(&["Rome"], &["It is Ro"]), ("It is Ro".into(), None));
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(shown(&[], &["a", "b"]), ("ab".into(), None));
        assert_eq!(shown(&[""], &["a"]), ("a".into(), None));
    }

    #[test]
    fn earliest_stop_wins_and_multibyte_text_is_safe() {
        assert_eq!(shown(&["b", "a"], &["xab"]), ("x".into(), stop("a")));
        assert_eq!(
            shown(&["Rome", "Ro"], &["It is Rome"]),
            ("It is ".into(), stop("Ro"))
        );
        assert_eq!(shown(&["é!"], &["caf", "é", "?"]), ("café?".into(), None));
    }
}
