//! `SequenceCount`: how many streams are running or waiting, for `info()`,
//! `/stats` and `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts streams in some state (running, waiting) while guards live.
#[derive(Clone, Default)]
pub struct SequenceCount(Arc<AtomicUsize>);

/// One counted stream; dropping it takes it off the count.
pub struct CountGuard(Arc<AtomicUsize>);

impl SequenceCount {
    pub fn enter(&self) -> CountGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        CountGuard(self.0.clone())
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
