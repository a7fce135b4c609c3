//! `SequenceGate`: lets one sequence at a time into a CPU engine.
//!
//! mistral.rs 0.8.1's CPU attention kernel for decoding (one query token per
//! sequence, `flash_attn_cpu_single_q` in attention/backends/cpu.rs) keeps its
//! scratch buffers without a batch dimension, so when two sequences of equal
//! length are decoded in one step every row gets the last row's attention:
//! answers leak into each other. Until that is fixed upstream, a CPU session
//! admits one sequence at a time; requests from other threads wait their turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};

use pyo3::PyResult;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::RequestError;

pub struct SequenceGate {
    semaphore: Arc<Semaphore>,
    holder: Arc<Mutex<Option<ThreadId>>>,
}

/// Held by a running stream; dropping it lets the next sequence in.
pub struct GatePass {
    _permit: OwnedSemaphorePermit,
    holder: Arc<Mutex<Option<ThreadId>>>,
}

impl Drop for GatePass {
    fn drop(&mut self) {
        *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl SequenceGate {
    pub fn new() -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(1)),
            holder: Arc::new(Mutex::new(None)),
        }
    }

    /// Wait for the engine to be free (call with the GIL released).
    pub fn enter(&self, runtime: &tokio::runtime::Runtime) -> PyResult<GatePass> {
        let me = thread::current().id();
        if *self.holder.lock().unwrap_or_else(|e| e.into_inner()) == Some(me) {
            return Err(RequestError::new_err(
                "this thread has an unfinished stream: read it to the end or close() it first \
                 (a CPU session runs one sequence at a time)",
            ));
        }
        let permit = runtime
            .block_on(self.semaphore.clone().acquire_owned())
            .map_err(|_| RequestError::new_err("the session is closed"))?;
        *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
        Ok(GatePass {
            _permit: permit,
            holder: self.holder.clone(),
        })
    }
}

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
