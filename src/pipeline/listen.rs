//! The VAD stage: frames in, utterances out. It alone starts turns (and so interrupts answers)
//! and ends them: after a silence, or at a pause judged final from the sound (Smart Turn) and
//! from the language model's reading of the speculative transcript, which comes back from the
//! ASR and LLM stages as a `Hint`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::error::PipelineError;
use super::messages::{Ending, Hint, Utterance, What};
use super::models::{lock, Locked};
use super::turns::Context;
use crate::media::audio::SAMPLE_RATE;
use crate::stages::mic::AudioFrame;
use crate::stages::turn::{self, TurnConfig, TurnDetector};
use crate::stages::vad::{Endpointer, SpeechDetector, VadEvent};

/// What the VAD stage needs besides its channels.
pub(crate) struct Listening {
    pub vad: Box<dyn SpeechDetector>,
    pub ep: Endpointer,
    pub barge_in: bool,
    /// Decide at pauses whether the turn is over (`turn.semantic`).
    pub turn: Option<Judging>,
}

/// How pauses are judged: the settings, and the model of the sound (none: the text alone).
pub(crate) struct Judging {
    pub cfg: TurnConfig,
    pub model: Option<Locked<Box<dyn TurnDetector>>>,
}

/// A pause waiting for the language model's view before it is judged.
struct Pending {
    turn: u64,
    speech_end: u64,
    audio_p: Option<f32>,
    noticed: Instant,
}

/// The VAD stage: frames in, utterances out; starts turns (it alone) and so interrupts answers.
/// At a pause it asks for a speculative transcript; with `turn.semantic` it judges the pause
/// (Smart Turn here, the language model's view arriving on `hints`) and ends the turn at once
/// when both say it is over.
pub(crate) fn vad_loop(
    mut l: Listening,
    rx: Receiver<AudioFrame>,
    hints: Receiver<Hint>,
    tx: Sender<Utterance>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("vad").entered();
    let mut ignoring = false;
    let mut last_at = cx.t0;
    let mut pending: Option<Pending> = None;
    // The pause (turn, speech end) whose speculative transcript is being made.
    let mut asked: Option<(u64, u64)> = None;
    let mut ending = Ending::default();
    let never = crossbeam_channel::never();
    let mut hints = Some(hints);
    loop {
        let frame = crossbeam_channel::select! {
            recv(rx) -> m => match m {
                Ok(frame) if !cx.turns.clock.stopped() => frame,
                _ => break,
            },
            recv(hints.as_ref().unwrap_or(&never)) -> h => {
                let Ok(h) = h else {
                    hints = None;
                    continue;
                };
                if asked == Some((h.turn, h.speech_end)) {
                    asked = None;
                }
                match pending.take() {
                    Some(p) if p.turn == h.turn && p.speech_end == h.speech_end => {
                        let now = cx.input_pos.load(Ordering::Acquire);
                        if !judge(&mut l, &cx, &tx, p, h.text_p, (now, last_at), &mut ending) {
                            return Ok(());
                        }
                    }
                    // The answer is about an earlier pause; the newest one was not asked about
                    // (the recogniser was busy): ask now, if the user is still silent.
                    Some(p) if asked.is_none() && l.ep.paused_at(p.speech_end) => {
                        match ask(&tx, p.turn, l.ep.audio().to_vec(), p.speech_end) {
                            Some(true) => asked = Some((p.turn, p.speech_end)),
                            Some(false) => {}
                            None => return Ok(()),
                        }
                        pending = Some(p);
                    }
                    other => pending = other,
                }
                continue;
            },
            default(Duration::from_millis(50)) => {
                if cx.turns.clock.stopped() {
                    break;
                }
                continue;
            },
        };
        let end = frame.start + frame.samples.len() as u64;
        cx.input_pos.store(end, Ordering::Release);
        last_at = frame.at;
        if !l.barge_in && cx.turns.busy() {
            // Half duplex: seesay is answering; the microphone is not listened to.
            ignoring = true;
            l.ep.reset_at(end);
            continue;
        }
        if ignoring {
            ignoring = false;
            l.vad.reset();
        }
        let p = l.vad.step(&frame.samples)?;
        match l.ep.push(&frame.samples, p) {
            Some(VadEvent::Start { start }) => {
                let was_busy = cx.turns.busy();
                let turn = cx.begin_turn();
                ending = Ending::default();
                // Speculations about the last turn's pauses no longer matter.
                (pending, asked) = (None, None);
                tracing::debug!(
                    turn,
                    at_s = start as f64 / SAMPLE_RATE as f64,
                    "speech started"
                );
                if was_busy {
                    tracing::info!(turn, "barge-in: the user speaks; the answer stops");
                }
            }
            Some(VadEvent::End { audio, speech_end }) => {
                pending = None;
                ending.by = if l.ep.too_long(audio.len()) {
                    "length"
                } else {
                    "silence"
                };
                if !utterance_ended(&cx, &tx, audio, speech_end, end, frame.at, ending) {
                    return Ok(());
                }
            }
            Some(VadEvent::Pause {
                mut audio,
                speech_end,
            }) => {
                let noticed = Instant::now();
                let turn = cx.turns.current();
                // A speculative transcript (for the language model's view, and ready if this
                // is the end), unless one is still being made.
                let judging = l.turn.is_some();
                if asked.is_none() {
                    let audio = match judging {
                        true => audio.clone(),
                        false => std::mem::take(&mut audio),
                    };
                    match ask(&tx, turn, audio, speech_end) {
                        Some(true) => asked = Some((turn, speech_end)),
                        Some(false) => {}
                        None => return Ok(()),
                    }
                }
                if !judging {
                    continue;
                }
                let audio_p = match l.turn.as_ref().and_then(|j| j.model.as_ref()) {
                    Some(model) => match lock(model).complete(&audio) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            tracing::warn!("end-of-turn model failed: {e}");
                            None
                        }
                    },
                    _ => None,
                };
                pending = Some(Pending {
                    turn,
                    speech_end,
                    audio_p,
                    noticed,
                });
            }
            None => {}
        }
    }
    if cx.turns.clock.stopped() {
        return Ok(());
    }
    // End of input: an utterance still under way is answered.
    if let Some(VadEvent::End { audio, speech_end }) = l.ep.flush() {
        let end = cx.input_pos.load(Ordering::Acquire);
        ending.by = "input end";
        utterance_ended(&cx, &tx, audio, speech_end, end, last_at, ending);
    }
    Ok(())
}

/// Hands the audio up to a pause to ASR for a speculative transcript, if ASR has room (a
/// speculation must never delay a real utterance). `None`: ASR is gone.
fn ask(tx: &Sender<Utterance>, turn: u64, audio: Vec<f32>, speech_end: u64) -> Option<bool> {
    let u = Utterance {
        turn,
        audio,
        speech_end,
        speculative: true,
    };
    match tx.try_send(u) {
        Ok(()) => Some(true),
        Err(TrySendError::Full(_)) => Some(false),
        Err(TrySendError::Disconnected(_)) => None,
    }
}

/// Judges a pause from the two signals, and ends the turn there if it is over (and the user has
/// not gone on speaking). `now`: the newest frame's end and when it was heard. Returns false
/// when ASR is gone.
fn judge(
    l: &mut Listening,
    cx: &Context,
    tx: &Sender<Utterance>,
    p: Pending,
    text_p: Option<f32>,
    now: (u64, Instant),
    ending: &mut Ending,
) -> bool {
    let Some(judging) = &l.turn else {
        return true;
    };
    let verdict = turn::decide(&judging.cfg, p.audio_p, text_p);
    *ending = Ending {
        by: "model",
        audio_p: verdict.audio,
        text_p: verdict.text,
        decision_ms: p.noticed.elapsed().as_secs_f64() * 1000.0,
    };
    tracing::debug!(
        turn = p.turn,
        ?verdict,
        ms = ending.decision_ms,
        "end of turn?"
    );
    match verdict
        .complete
        .then(|| l.ep.end_now(p.speech_end))
        .flatten()
    {
        Some(VadEvent::End { audio, speech_end }) => {
            utterance_ended(cx, tx, audio, speech_end, now.0, now.1, *ending)
        }
        _ => true,
    }
}

/// Reports the end of the user's speech and hands the utterance to ASR. `frame_end` is the sample
/// index just after the frame that decided it, heard at `frame_at`. Returns false when ASR is gone.
fn utterance_ended(
    cx: &Context,
    tx: &Sender<Utterance>,
    audio: Vec<f32>,
    speech_end: u64,
    frame_end: u64,
    frame_at: Instant,
    ending: Ending,
) -> bool {
    let turn = cx.turns.current();
    let behind = frame_end.saturating_sub(speech_end) as f64 / SAMPLE_RATE as f64;
    let end_at = frame_at
        .checked_sub(Duration::from_secs_f64(behind))
        .unwrap_or(frame_at);
    cx.event(
        turn,
        What::Speech {
            start_s: (speech_end as f64 - audio.len() as f64).max(0.0) / SAMPLE_RATE as f64,
            end_s: speech_end as f64 / SAMPLE_RATE as f64,
            end_at,
            ending,
        },
    );
    cx.turns.handle(turn);
    tx.send(Utterance {
        turn,
        audio,
        speech_end,
        speculative: false,
    })
    .is_ok()
}
