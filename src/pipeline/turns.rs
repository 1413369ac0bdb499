//! Turn bookkeeping and what every stage of one pipeline shares: the turn clock (only the VAD
//! stage starts turns), which turns are being answered, the stop flags, the scene the camera
//! shows, and the channels for events and updates.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::error::PipelineError;
use super::messages::{Ahead, Event, Update, What};
use super::models::lock;
use crate::memory::Memory;
use crate::stages::TurnClock;

/// Which turn is current, which is being answered and which is over.
#[derive(Default)]
pub(crate) struct Turns {
    /// The turn being answered now; anything older is dropped. Shared with the LLM's cancel
    /// token and the speaker callback. Only `begin` (the VAD stage) moves it.
    pub clock: Arc<TurnClock>,
    /// The newest turn handed to ASR.
    handling: AtomicU64,
    /// The newest turn whose answer is over (spoken, dropped or failed).
    finished: AtomicU64,
}

impl Turns {
    pub fn current(&self) -> u64 {
        self.clock.current()
    }
    pub fn is_stale(&self, turn: u64) -> bool {
        self.clock.is_stale(turn)
    }
    /// The user started speaking: a new turn (the VAD stage's call alone).
    pub fn begin(&self) -> u64 {
        self.clock.begin()
    }
    /// `turn`'s utterance went to ASR: seesay is busy until the turn is finished.
    pub fn handle(&self, turn: u64) {
        self.handling.fetch_max(turn, Ordering::AcqRel);
    }
    /// Is `turn`'s answer over (spoken, dropped or failed), or a later one's?
    pub fn is_finished(&self, turn: u64) -> bool {
        self.finished.load(Ordering::Acquire) >= turn
    }
    pub fn finish(&self, turn: u64) {
        self.finished.fetch_max(turn, Ordering::AcqRel);
    }
    /// Is seesay answering (thinking or speaking)?
    pub fn busy(&self) -> bool {
        self.finished.load(Ordering::Acquire) < self.handling.load(Ordering::Acquire)
    }
    /// Is nobody speaking and nothing being answered?
    pub fn idle(&self) -> bool {
        !self.busy() && self.handling.load(Ordering::Acquire) >= self.current()
    }
}

/// Everything the stages of one pipeline share.
pub(crate) struct Context {
    pub turns: Turns,
    /// Sample index (16 kHz) of the newest frame the VAD has seen: the input's "now".
    pub input_pos: AtomicU64,
    /// Stop the source (end of the run, Ctrl-C, enough turns).
    pub stop: Arc<AtomicBool>,
    /// Drop queued audio instead of playing it out (Ctrl-C).
    pub abort: Arc<AtomicBool>,
    pub scene: Mutex<Option<String>>,
    /// The described frame itself (a JPEG data URI), when the language model takes images.
    pub picture: Mutex<Option<Arc<str>>>,
    /// The answer being written and spoken now, to tell seesay's own voice coming back through
    /// the microphone from the user's.
    pub speaking: Mutex<String>,
    pub t0: Instant,
    pub events: Sender<Event>,
    pub updates: Option<Sender<Update>>,
    /// The first stage failure (an error or a panic); it ends the run.
    pub failure: Mutex<Option<PipelineError>>,
    /// Held while a turn begins and while a sink hands audio to the client, so a client never
    /// gets audio of a turn after hearing that a newer one started.
    pub order: Mutex<()>,
    /// The memory store, where the run keeps what it saw and heard (`RunOptions::memory`).
    pub memory: Option<Arc<Mutex<Memory>>>,
    /// The newest pause judged not over, but maybe over (the VAD stage's): the language model
    /// may answer it ahead.
    pub ahead: Mutex<Option<Ahead>>,
}

impl Context {
    /// Reports `u` to the client; false when the client is gone.
    pub fn publish(&self, u: Update) -> bool {
        self.updates.as_ref().is_none_or(|tx| tx.send(u).is_ok())
    }

    /// The user started speaking: a new turn begins (the VAD stage's call alone) and the client
    /// hears of it before any audio of the new turn, and after all audio of older ones.
    pub fn begin_turn(&self) -> u64 {
        let _order = lock(&self.order);
        let turn = self.turns.begin();
        self.publish(Update::SpeechStarted { turn });
        self.event(turn, What::Began);
        turn
    }

    /// Hands a turn's audio to the client unless the turn is over; false when the client is gone.
    pub fn publish_audio(&self, turn: u64, pcm: Vec<f32>) -> bool {
        let _order = lock(&self.order);
        self.turns.is_stale(turn) || self.publish(Update::Audio { turn, pcm })
    }

    pub fn event(&self, turn: u64, what: What) {
        let _ = self.events.send(Event {
            turn,
            at: Instant::now(),
            what,
        });
    }

    /// Ends the run: the source stops, every turn is cancelled, nothing more plays.
    pub fn shut_down(&self) {
        self.stop.store(true, Ordering::Release);
        self.turns.clock.stop();
    }

    /// Records a failure (the first one is kept) and ends the run.
    pub fn fail(&self, e: PipelineError) {
        lock(&self.failure).get_or_insert(e);
        self.shut_down();
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }
}

/// Starts a named stage thread. A stage that fails or panics records the first failure and
/// shuts the run down, so every other stage drains and returns; the thread then yields `None`.
pub(crate) fn spawn<T: Send + 'static>(
    name: &'static str,
    cx: &Arc<Context>,
    f: impl FnOnce() -> Result<T, PipelineError> + Send + 'static,
) -> Result<JoinHandle<Option<T>>, PipelineError> {
    let cx = cx.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(Ok(v)) => return Some(v),
                Ok(Err(e)) => PipelineError::Stage {
                    stage: name,
                    error: Box::new(e),
                },
                Err(_) => PipelineError::Panicked(name),
            };
            tracing::error!("{failure}");
            cx.fail(failure);
            None
        })
        .map_err(|error| PipelineError::Spawn { name, error })
}
