//! The pipeline's stages, one home each, in the order sound and pictures flow through them:
//!
//! ```text
//! mic ─► vad ─► asr ─► llm ─► tts ─► speaker        camera ─► caption ─► (llm's context)
//! ```
//!
//! Each stage holds its model (behind a trait where the pipeline needs to swap in a fake), its
//! config and its error. Shared by several stages: `device` (cpal devices and sample formats),
//! `openai` (an OpenAI-compatible endpoint) and the turn clock below, which interrupts work by
//! turn number.

pub mod asr;
pub mod camera;
pub mod caption;
pub mod device;
pub mod echo;
pub mod embed;
pub mod llm;
pub mod mic;
pub mod openai;
pub mod read;
pub mod speaker;
pub mod tts;
pub mod turn;
pub mod vad;
pub mod wake;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::host::{self, HostError};
use crate::store::{ModelError, Store};

/// An onnxruntime session builder for a model whose inputs change size from call to call (a
/// sentence to speak, a page to read), on `threads` threads. onnxruntime's CPU arena keeps its
/// largest extension for the session's life and its memory patterns are planned per shape, so a
/// server's memory stepped up with each longer sentence (100 requests of 1-40 words: 487 -> 583
/// MB and staying there); without them the memory of a long input goes back after it (330-480
/// MB, falling back). The cost, measured side by side: a short sentence 155 -> 162 ms at the
/// median; sixty of 1-40 words 25 -> 28-30 s.
pub fn varying_inputs(threads: usize) -> ort::Result<ort::session::builder::SessionBuilder> {
    ort::session::Session::builder()?
        .with_intra_threads(threads)?
        .with_memory_pattern(false)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
        .map_err(Into::into)
}

/// Locks a model (or any shared state); a poisoned lock (a panic mid-step) still serves the
/// next step.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks `m` if it comes free within `wait` (polled every 2 ms); `None` if it stays busy. For
/// work that is worth doing only when the model is not needed elsewhere.
pub fn lock_within<T: ?Sized>(
    m: &Mutex<T>,
    wait: std::time::Duration,
) -> Option<MutexGuard<'_, T>> {
    let until = std::time::Instant::now() + wait;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// Why onnxruntime could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Loads onnxruntime (for the voice and the VAD) once per process: `configured` (the
/// `tts.onnxruntime` path), else `$ORT_DYLIB_PATH`, else the fetched `onnxruntime` model.
pub fn load_onnxruntime(configured: &str, store: &Store) -> Result<(), RuntimeError> {
    let path = match host::onnxruntime_override(configured) {
        Some(p) => p,
        None => store.resolve("onnxruntime")?,
    };
    Ok(host::init_onnxruntime(&path)?)
}

/// The turn numbers of one conversation: the turn being answered now, and whether everything is
/// being stopped. Work for an older turn (or any turn, once stopped) is dropped: the LLM stops
/// between two tokens, queued speech is skipped and playback goes quiet. Only the pipeline's VAD
/// stage starts turns, so turn numbers never skip or repeat.
///
/// Playback can also be put on hold: the user may be interrupting (speech over the answer not
/// yet judged), so the answer pauses where it is until the speech is judged.
#[derive(Debug, Default)]
pub struct TurnClock {
    current: AtomicU64,
    stopped: AtomicBool,
    on_hold: AtomicBool,
}

impl TurnClock {
    /// The turn being answered now (0 before anyone spoke).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Starts the next turn and returns its number.
    pub fn begin(&self) -> u64 {
        self.current.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Cancels every turn, for good (end of the run, Ctrl-C, the client left).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether work for `turn` should be dropped.
    pub fn is_stale(&self, turn: u64) -> bool {
        self.stopped() || turn < self.current()
    }

    /// Pauses playback (`true`: nothing more of the answer is played) or lets it go on from
    /// where it paused.
    pub fn hold(&self, on: bool) {
        self.on_hold.store(on, Ordering::Release);
    }

    /// Is playback paused?
    pub fn on_hold(&self) -> bool {
        self.on_hold.load(Ordering::Acquire)
    }
}

/// Cancellation of one piece of work (an answer, a transcription) by turn number.
#[derive(Debug, Clone)]
pub struct Cancel {
    clock: Arc<TurnClock>,
    turn: u64,
    /// Another token that cancels this work too (`or`).
    also: Option<Box<Cancel>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    /// A token of its own, cancelled only by `cancel` (on it or a clone).
    pub fn new() -> Cancel {
        Cancel {
            clock: Arc::new(TurnClock::default()),
            turn: 0,
            also: None,
        }
    }

    /// A token for `turn`, cancelled once `clock` moves past it or stops.
    pub fn for_turn(clock: Arc<TurnClock>, turn: u64) -> Cancel {
        Cancel {
            clock,
            turn,
            also: None,
        }
    }

    /// This token, also cancelled by `other` (and whatever cancels `other`).
    pub fn or(self, other: Cancel) -> Cancel {
        let also = Some(Box::new(match self.also {
            Some(also) => also.or(other),
            None => other,
        }));
        Cancel { also, ..self }
    }

    pub fn is_cancelled(&self) -> bool {
        self.clock.is_stale(self.turn) || self.also.as_ref().is_some_and(|a| a.is_cancelled())
    }

    /// Cancels this work and every other that shares the clock. On a joined token (`or`) only
    /// its own clock: cancel the token that was joined instead (the first of a turn's token is
    /// the whole run's turn clock).
    pub fn cancel(&self) {
        self.clock.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_turn_or_a_stop_cancels() {
        let clock = Arc::new(TurnClock::default());
        let t = clock.begin();
        let c = Cancel::for_turn(clock.clone(), t);
        assert!(!c.is_cancelled());
        assert_eq!(clock.begin(), t + 1);
        assert!(c.is_cancelled());
        let d = Cancel::for_turn(clock.clone(), t + 1);
        assert!(!d.is_cancelled());
        clock.stop();
        assert!(d.is_cancelled());
    }

    #[test]
    fn a_token_of_its_own_is_cancelled_only_by_hand() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        c.clone().cancel();
        assert!(c.is_cancelled());
    }

    #[test]
    fn a_token_joined_to_others_is_cancelled_by_any_of_them() {
        let clock = Arc::new(TurnClock::default());
        let (user, ahead) = (Cancel::new(), Cancel::new());
        let c = Cancel::for_turn(clock.clone(), clock.begin())
            .or(user.clone())
            .or(ahead.clone());
        assert!(!c.is_cancelled());
        ahead.cancel();
        assert!(c.is_cancelled());
        assert!(!user.is_cancelled(), "the others are left alone");
        let d = Cancel::for_turn(clock.clone(), clock.current()).or(user.clone());
        clock.begin();
        assert!(d.is_cancelled());
    }
}
