//! The stage loops after the VAD's (`listen.rs`): each runs on its own thread, takes messages from the stage before, does one
//! step of its model and passes the result on. They only move messages; the models' maths is
//! behind the stage traits. A failed send means the next stage is gone: the loop returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::error::PipelineError;
use super::messages::{Feedback, Heard, Play, Purpose, Say, Utterance, What};
use super::models::{lock, Locked};
use super::turns::Context;
use crate::media::audio::SAMPLE_RATE;
use crate::stages::asr::{AsrError, Transcriber};
use crate::stages::lock_within;
use crate::stages::tts::{self, TtsError, Voice};
use crate::stages::Cancel;
use crate::text::transcript::plain_text;

/// How long a served conversation's transcript ahead of a pause waits for the shared recogniser
/// (a language model's reading of the words so far holds it for 35-55 ms).
const SHARED_GUESS_WAIT: Duration = Duration::from_millis(150);

/// The ASR stage: utterances in, transcripts out. Silence and noise end here.
pub(crate) fn asr_loop(
    asr: Locked<Box<dyn Transcriber>>,
    rx: Receiver<Utterance>,
    tx: Sender<Heard>,
    hints: Sender<Feedback>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("asr").entered();
    // (turn, speech end, transcript) of the last speculative transcription.
    let mut ahead: Option<(u64, u64, String)> = None;
    for mut u in rx {
        let _turn = tracing::debug_span!("turn", turn = u.turn).entered();
        if u.purpose == Purpose::Probe {
            probe(&asr, &u, &hints);
            continue;
        }
        let speculative = u.purpose == Purpose::Pause;
        // A speculation that no longer matters is dropped before it waits for the recogniser.
        if speculative && u.stop.as_ref().is_some_and(Cancel::is_cancelled) {
            no_text(&hints, &u);
            continue;
        }
        if cx.turns.is_stale(u.turn) {
            match speculative {
                true => no_text(&hints, &u),
                false => {
                    cx.event(u.turn, What::Dropped("interrupted"));
                    cx.turns.finish(u.turn);
                }
            }
            continue;
        }
        let reuse = match (u.typed.take(), ahead.take()) {
            (Some(typed), _) => Some(Ok(typed)),
            (None, Some((turn, end, text)))
                if !speculative && turn == u.turn && end == u.speech_end =>
            {
                tracing::debug!("using the transcript made during the pause");
                Some(Ok(text))
            }
            _ => None,
        };
        let going = match speculative {
            true => match guess(&asr, &u, &tx, &hints, &cx) {
                // A guess with no words is not kept: the whole turn, with the silence after it,
                // is heard afresh (an empty guess reused made a question "no words").
                Guess::Made(text) => {
                    ahead = (!text.trim().is_empty()).then_some((u.turn, u.speech_end, text));
                    true
                }
                Guess::None => true,
                Guess::Gone => false,
            },
            false => transcribe_turn(&asr, &u, reuse, &tx, &cx),
        };
        if !going {
            return Ok(());
        }
    }
    Ok(())
}

/// Whatever happens to a speculation, the VAD stage hears back (without the language model's
/// view when there is no transcript to give it).
fn no_text(hints: &Sender<Feedback>, u: &Utterance) {
    let _ = hints.try_send(Feedback::EndOfTurn {
        turn: u.turn,
        speech_end: u.speech_end,
        text_p: None,
    });
}

/// Speech during an answer: its words decide whether it interrupts.
fn probe(asr: &Locked<Box<dyn Transcriber>>, u: &Utterance, hints: &Sender<Feedback>) {
    let mut model = lock(asr);
    let began = Instant::now();
    let text = match model.transcribe(&u.audio, 0.0) {
        Ok(segments) => plain_text(&segments),
        Err(e) => {
            tracing::debug!("transcribing speech heard during the answer failed: {e}");
            String::new()
        }
    };
    drop(model);
    tracing::debug!(
        ms = began.elapsed().as_secs_f64() * 1000.0,
        audio_s = u.audio.len() as f64 / SAMPLE_RATE as f64,
        %text,
        "speech during the answer transcribed"
    );
    let _ = hints.try_send(Feedback::Heard {
        start: u.speech_end,
        text,
    });
}

/// What came of a transcript ahead of a pause.
enum Guess {
    /// The words so far (kept for the end of the turn; empty when none were heard).
    Made(String),
    None,
    /// The next stage is gone.
    Gone,
}

/// The transcript of the speech so far at a pause, for the language model to read ahead.
///
/// The decision at the pause waits for this transcript, so it waits for the recogniser too; it
/// is the work the end of the turn would need anyway. But in `seesay serve` the recogniser is
/// shared by every conversation and the API: a guess that would wait long for it is given up
/// (the pause is asked about again, then doubted: `listen::pauses`), so the guesses of several
/// conversations never hold up finished questions.
fn guess(
    asr: &Locked<Box<dyn Transcriber>>,
    u: &Utterance,
    tx: &Sender<Heard>,
    hints: &Sender<Feedback>,
    cx: &Context,
) -> Guess {
    let model = match cx.updates.is_some() {
        true => lock_within(asr, SHARED_GUESS_WAIT),
        false => Some(lock(asr)),
    };
    let Some(mut model) = model else {
        tracing::debug!("the recogniser is busy: no transcript ahead of this pause");
        no_text(hints, u);
        return Guess::None;
    };
    let began = Instant::now();
    let done = match &u.stop {
        Some(stop) => model.transcribe_unless(&u.audio, 0.0, stop),
        None => model.transcribe(&u.audio, 0.0),
    };
    drop(model);
    let segments = match done {
        Ok(segments) => segments,
        Err(AsrError::Stopped) => {
            tracing::debug!(
                ms = began.elapsed().as_secs_f64() * 1000.0,
                "speculative transcript stopped: no longer needed"
            );
            no_text(hints, u);
            return Guess::None;
        }
        Err(e) => {
            tracing::debug!("speculative transcription failed: {e}");
            no_text(hints, u);
            return Guess::None;
        }
    };
    let text = plain_text(&segments);
    tracing::debug!(
        ms = began.elapsed().as_secs_f64() * 1000.0,
        audio_s = u.audio.len() as f64 / SAMPLE_RATE as f64,
        %text,
        "speculative transcript"
    );
    if text.trim().is_empty() {
        no_text(hints, u);
        return Guess::Made(text);
    }
    // Only if the LLM is free: a prefill must never delay a real question.
    let hint = Heard {
        turn: u.turn,
        text: text.clone(),
        speculative: true,
        speech_end: u.speech_end,
    };
    match tx.try_send(hint) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => no_text(hints, u),
        Err(TrySendError::Disconnected(_)) => return Guess::Gone,
    }
    Guess::Made(text)
}

/// The transcript of a finished turn (the one made at its last pause, if it heard all of it)
/// goes to the language model; a turn with no words, or whose recognition failed, ends here.
/// False when the next stage is gone.
fn transcribe_turn(
    asr: &Locked<Box<dyn Transcriber>>,
    u: &Utterance,
    reuse: Option<Result<String, AsrError>>,
    tx: &Sender<Heard>,
    cx: &Context,
) -> bool {
    let text = match reuse.unwrap_or_else(|| {
        lock(asr)
            .transcribe(&u.audio, 0.0)
            .map(|segments| plain_text(&segments))
    }) {
        Ok(text) => text,
        Err(e) => {
            cx.event(u.turn, What::Failed(format!("speech recognition: {e}")));
            cx.turns.finish(u.turn);
            return true;
        }
    };
    if text.trim().is_empty() {
        cx.event(u.turn, What::Dropped("no words"));
        cx.turns.finish(u.turn);
        return true;
    }
    cx.event(u.turn, What::Transcript(text.clone()));
    let heard = Heard {
        turn: u.turn,
        text,
        speculative: false,
        speech_end: u.speech_end,
    };
    tx.send(heard).is_ok()
}

/// The TTS stage: sentences in, audio out; sentences of older turns are skipped. Sentences of an
/// answer written ahead are synthesised and held until the answer is released or discarded.
pub(crate) fn tts_loop(
    voice: Locked<Box<dyn Voice>>,
    gap_ms: u32,
    rx: Receiver<Say>,
    tx: Sender<Play>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("tts").entered();
    // Speaking can wait a little; listening cannot (see `host::BACKGROUND_NICE`). But the
    // first audio of an answer cannot: it is synthesised unlowered.
    let unlowered =
        crate::host::Unlowered::start("tts-first").map_err(|error| PipelineError::Spawn {
            name: "tts-first",
            error,
        })?;
    crate::host::lower_this_thread();
    let mut v = Voicing {
        voice,
        gap_ms,
        tx,
        cx,
        first_of: None,
        voiced: None,
        unlowered,
        failed: None,
        held: (0, Vec::new()),
    };
    for msg in rx {
        let going = match msg {
            Say::Sentence { turn, text } => match v.synthesise(turn, &text, true) {
                Some(Ok(pcm)) => v.play(turn, pcm),
                _ => true,
            },
            Say::Ahead { turn, text, stop } => {
                if stop.is_cancelled() {
                    v.discard(turn);
                } else if let Some(pcm) = v.synthesise(turn, &text, false) {
                    v.hold(turn, pcm.map_err(|()| text));
                }
                true
            }
            Say::Release { turn } => v.release(turn),
            Say::Discard { turn } => {
                v.discard(turn);
                true
            }
            Say::End { turn } => v.tx.send(Play::End { turn }).is_ok(),
        };
        if !going {
            return Ok(());
        }
    }
    Ok(())
}

/// The TTS stage's state between sentences.
struct Voicing {
    voice: Locked<Box<dyn Voice>>,
    gap_ms: u32,
    tx: Sender<Play>,
    cx: Arc<Context>,
    /// The turn whose first audio went out.
    first_of: Option<u64>,
    /// The turn whose first piece was synthesised (on `unlowered`: the rest on this thread).
    voiced: Option<u64>,
    unlowered: crate::host::Unlowered,
    /// The turn whose speech failed: the rest of its answer is not tried (a voice server that is
    /// gone would fail, or make each sentence wait for its timeout, once more per sentence).
    failed: Option<u64>,
    /// The audio of an answer written ahead, by turn (a sentence whose synthesis failed keeps
    /// its text: tried again, and its failure reported, if the answer is released).
    held: (u64, Vec<Result<Vec<f32>, String>>),
}

impl Voicing {
    /// A sentence's audio: `None` when the turn is over or failed, or there is nothing to say;
    /// `Err` when synthesis failed (reported, and the turn marked failed, if `report`).
    fn synthesise(&mut self, turn: u64, text: &str, report: bool) -> Option<Result<Vec<f32>, ()>> {
        let _turn = tracing::debug_span!("turn", turn).entered();
        if self.cx.turns.is_stale(turn) || self.failed == Some(turn) {
            return None;
        }
        let spoken = match self.voiced.replace(turn) != Some(turn) {
            true => {
                let (voice, text, gap) = (self.voice.clone(), text.to_string(), self.gap_ms);
                self.unlowered
                    .run(move || tts::speak_all(lock(&voice).as_mut(), &text, gap))
            }
            false => tts::speak_all(lock(&self.voice).as_mut(), text, self.gap_ms),
        };
        let audio = match spoken {
            Ok(audio) => audio,
            Err(TtsError::NothingToSay) => return None,
            Err(e) if report => {
                // The turn fails, once, with the reason (its client hears of it too).
                tracing::debug!("speech synthesis failed for {text:?}: {e}");
                self.failed = Some(turn);
                self.cx
                    .event(turn, What::Failed(format!("speech synthesis: {e}")));
                return None;
            }
            Err(e) => {
                tracing::debug!("speech synthesis ahead failed for {text:?}: {e}");
                return Some(Err(()));
            }
        };
        (!self.cx.turns.is_stale(turn)).then_some(Ok(audio))
    }

    /// Audio for the sink; false when the sink is gone.
    fn play(&mut self, turn: u64, pcm: Vec<f32>) -> bool {
        if self.cx.turns.is_stale(turn) {
            return true;
        }
        if self.first_of != Some(turn) {
            self.first_of = Some(turn);
            self.cx.event(turn, What::FirstAudioReady);
        }
        self.tx.send(Play::Audio { turn, pcm }).is_ok()
    }

    fn hold(&mut self, turn: u64, audio: Result<Vec<f32>, String>) {
        if self.held.0 != turn {
            self.held = (turn, Vec::new());
        }
        self.held.1.push(audio);
    }

    /// The answer written ahead is the turn's: what was held plays.
    fn release(&mut self, turn: u64) -> bool {
        let (of, held) = std::mem::take(&mut self.held);
        if of != turn {
            return true;
        }
        for audio in held {
            let going = match audio {
                Ok(pcm) => self.play(turn, pcm),
                Err(text) => match self.synthesise(turn, &text, true) {
                    Some(Ok(pcm)) => self.play(turn, pcm),
                    _ => true,
                },
            };
            if !going {
                return false;
            }
        }
        true
    }

    fn discard(&mut self, turn: u64) {
        if self.held.0 == turn {
            self.held.1.clear();
        }
        // The answer given instead (redone, same turn) has a first piece of its own.
        if self.voiced == Some(turn) && self.first_of != Some(turn) {
            self.voiced = None;
        }
    }
}

/// The next message, or `None` once the sender is gone or the run is stopping (checked at
/// least every 50 ms, so a stage waiting on a quiet source still stops).
pub(crate) fn next<T>(rx: &Receiver<T>, cx: &Context) -> Option<T> {
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => return (!cx.turns.clock.stopped()).then_some(m),
            Err(RecvTimeoutError::Timeout) if !cx.turns.clock.stopped() => continue,
            Err(_) => return None,
        }
    }
}
