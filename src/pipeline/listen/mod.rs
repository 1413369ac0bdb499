//! The VAD stage: frames in, utterances out. It alone starts turns (and so interrupts answers)
//! and ends them: after a silence, or at a pause judged final from the sound (Smart Turn) and
//! from the language model's reading of the speculative transcript, which comes back from the
//! ASR and LLM stages as `Feedback`.
//!
//! Speech heard while seesay answers is not taken at its word: it is transcribed as it goes
//! ("probes") and interrupts only once it holds words that are neither a backchannel ("mm-hmm")
//! nor seesay's own voice coming back (`text::interrupt`). A false start lets the answer go on.
//! In half duplex, such a question is kept and answered once the answer is over.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::error::PipelineError;
use super::messages::{Ending, Feedback, Purpose, Update, Utterance, What};
use super::models::{lock, Locked};
use super::turns::Context;
use crate::media::audio::SAMPLE_RATE;
use crate::stages::mic::AudioFrame;
use crate::stages::turn::{TurnConfig, TurnDetector};
use crate::stages::vad::{Endpointer, SpeechDetector, VadEvent};
use crate::stages::wake::WakeDetector;
use crate::text::interrupt;

mod aside;
mod pauses;
mod typed;

use pauses::Speculation;

/// Probes of speech heard during an answer: after this much of it, and again every as much
/// more, at most `MAX_PROBES` times while it lasts (then once more when it ends).
const PROBE_EVERY: usize = SAMPLE_RATE as usize * 2 / 5;
const MAX_PROBES: usize = 3;
/// With barge-in, the answer pauses the moment speech over it begins and goes on if it turns out
/// to mean nothing; speech not judged within this many samples lets it go on meanwhile.
const HOLD_AT_MOST: u64 = SAMPLE_RATE as u64 * 3 / 2;
/// Questions asked during an answer that wait for it to end (half duplex).
const MAX_HELD: usize = 4;

/// What the VAD stage needs besides its channels.
pub(crate) struct Listening {
    pub vad: Box<dyn SpeechDetector>,
    pub ep: Endpointer,
    pub barge_in: bool,
    /// Decide at pauses whether the turn is over (`turn.semantic`).
    pub turn: Option<Judging>,
    /// Answer only after a wake word (`pipeline.wake_word`).
    pub wake: Option<Wake>,
    /// Questions typed by the client (`never()` when there is no such client).
    pub typed: Receiver<String>,
}

/// Wake-word mode: seesay listens after the wake word, and for follow-ups after each answer.
pub(crate) struct Wake {
    pub detector: Box<dyn WakeDetector>,
    pub word: String,
    pub threshold: f32,
    /// Samples after the wake word (and after an answer) in which speech is heard.
    pub follow_up: u64,
    /// Sample index until which seesay listens.
    pub awake_until: u64,
}

/// How pauses are judged: the settings, and the model of the sound (none: the text alone).
pub(crate) struct Judging {
    pub cfg: TurnConfig,
    pub model: Option<Locked<Box<dyn TurnDetector>>>,
    /// The language model reads words at pauses (a remote one cannot): a pause whose words it
    /// could not read is then not ended on its sound alone.
    pub reads: bool,
}

/// A pause waiting for the language model's view before it is judged.
struct Pending {
    turn: u64,
    speech_end: u64,
    /// The utterance up to the pause, for Smart Turn should the text leave it open.
    audio: Vec<f32>,
    noticed: Instant,
    /// Its transcript came back without a reading once and was asked for again.
    asked_again: bool,
}

/// Speech heard while seesay answers, not yet known to mean anything.
struct Candidate {
    /// Sample index where it began; names its probes.
    start: u64,
    probes: usize,
    /// When the probe under way was sent (its answer may be lost if ASR fails).
    in_flight: Option<Instant>,
    /// The probe under way holds all of the speech (it had ended): its verdict is final.
    whole: bool,
    /// Its words, once a probe found some that mean it (half duplex: kept for later).
    meant: Option<String>,
    /// A probe found nothing that means it (no words, a backchannel, seesay's own voice).
    dismissed: bool,
    /// It ended before it was judged: its audio and speech end.
    ended: Option<(Vec<f32>, u64)>,
}

/// The VAD stage's state between frames.
struct Listener {
    l: Listening,
    tx: Sender<Utterance>,
    cx: Arc<Context>,
    /// The newest frame's end (sample index) and when it was captured: the input's "now". It
    /// reaches `cx.input_pos` (how far the WAV timeline may play) only once the frame is judged.
    now: u64,
    last_at: Instant,
    pending: Option<Pending>,
    /// A pause judged not over, but doubtfully: its speech end, and the sample at which the
    /// turn ends if the user is still silent (`turn::patience_ms`).
    unsure: Option<(u64, u64)>,
    /// The pause whose speculative transcript is being made.
    asked: Option<Speculation>,
    /// The doubted pause whose answer the language model may be writing ahead.
    ahead: Option<Speculation>,
    /// The speculation made while the user speaks (cut where it was sent), and how much of the
    /// utterance it held.
    rolling: Option<Speculation>,
    rolled: usize,
    ending: Ending,
    candidate: Option<Candidate>,
    /// Half duplex: questions asked during the answer, answered in order once it is over (a
    /// second one asked before the first was taken up replaced it, and was never answered).
    held: VecDeque<(Vec<f32>, u64)>,
    /// Speech over the answer that ended unjudged when new speech began (`unjudged_waits`).
    aside: Option<Candidate>,
}

/// `Err(None)`: the next stage is gone, the loop ends quietly; `Err(Some(e))`: it failed.
type Step = Result<(), Option<PipelineError>>;

/// The VAD stage: frames in, utterances out; starts turns (it alone) and so interrupts answers.
/// At a pause it asks for a speculative transcript; with `turn.semantic` it judges the pause
/// (Smart Turn here, the language model's view arriving as feedback) and ends the turn at once
/// when both say it is over.
pub(crate) fn vad_loop(
    l: Listening,
    rx: Receiver<AudioFrame>,
    feedback: Receiver<Feedback>,
    tx: Sender<Utterance>,
    cx: Arc<Context>,
) -> Result<(), PipelineError> {
    let _stage = tracing::info_span!("vad").entered();
    let mut s = Listener {
        l,
        tx,
        now: 0,
        last_at: cx.t0,
        cx,
        pending: None,
        unsure: None,
        asked: None,
        ahead: None,
        rolling: None,
        rolled: 0,
        ending: Ending::default(),
        candidate: None,
        held: VecDeque::new(),
        aside: None,
    };
    let never = crossbeam_channel::never();
    let mut feedback = Some(feedback);
    loop {
        let step = crossbeam_channel::select! {
            recv(rx) -> m => match m {
                Ok(frame) if !s.cx.turns.clock.stopped() => s.frame(frame),
                _ => break,
            },
            recv(s.l.typed) -> m => match m {
                Ok(text) if !s.cx.turns.clock.stopped() => s.typed(text),
                Ok(_) => break,
                Err(_) => {
                    s.l.typed = crossbeam_channel::never();
                    Ok(())
                }
            },
            recv(feedback.as_ref().unwrap_or(&never)) -> f => match f {
                // Frames that came meanwhile first: a verdict on a pause must know whether the
                // user went on speaking (the stage may have been busy while they queued).
                Ok(f) => {
                    let mut step = Ok(());
                    while step.is_ok() && !s.cx.turns.clock.stopped() {
                        match rx.try_recv() {
                            Ok(frame) => step = s.frame(frame),
                            Err(_) => break,
                        }
                    }
                    step.and_then(|()| s.feedback(f))
                }
                Err(_) => {
                    feedback = None;
                    Ok(())
                }
            },
            default(Duration::from_millis(50)) => {
                if s.cx.turns.clock.stopped() {
                    break;
                }
                s.answer_held()
                    .and_then(|()| s.probe_aside())
                    .and_then(|()| s.probe())
            },
        };
        s.hold_playback();
        if let Err(e) = step {
            s.cx.turns.clock.hold(false);
            return e.map_or(Ok(()), Err);
        }
    }
    s.cx.turns.clock.hold(false);
    if s.cx.turns.clock.stopped() {
        return Ok(());
    }
    if !s.held.is_empty() {
        tracing::warn!(
            questions = s.held.len(),
            "the input ended with questions asked during the last answer not yet answered"
        );
    }
    // End of input: an utterance still under way is answered.
    if let Some(VadEvent::End { audio, speech_end }) = s.l.ep.flush() {
        s.ending.by = "input end";
        let _ = s.end_turn(audio, speech_end);
    }
    Ok(())
}

impl Listener {
    /// With barge-in, playback waits while speech over the answer is being judged (not yet
    /// dismissed, and for at most `HOLD_AT_MOST`): an interruption is then silent at once, and a
    /// backchannel or a cough costs the answer a moment's pause.
    fn hold_playback(&self) {
        let now = self.now;
        let hold = self.l.barge_in
            && self.cx.turns.busy()
            && self
                .candidate
                .as_ref()
                .is_some_and(|c| !c.dismissed && now.saturating_sub(c.start) < HOLD_AT_MOST);
        if hold != self.cx.turns.clock.on_hold() {
            tracing::debug!(hold, "playback");
            self.cx.turns.clock.hold(hold);
        }
    }

    /// One frame: judged, playback held or let go by what it holds, and only then published as
    /// the input's "now" (a timeline that played up to a frame before its speech onset was seen
    /// played the answer over the user by as many frames as the stage had queued).
    fn frame(&mut self, frame: AudioFrame) -> Step {
        let end = frame.start + frame.samples.len() as u64;
        self.now = end;
        self.last_at = frame.at;
        let step = self.hear(frame, end);
        self.hold_playback();
        self.cx.input_pos.store(end, Ordering::Release);
        step
    }

    fn hear(&mut self, frame: AudioFrame, end: u64) -> Step {
        self.answer_held()?;
        self.probe_aside()?;
        let p = self
            .l
            .vad
            .step(&frame.samples)
            .map_err(|e| Some(e.into()))?;
        if !self.awake(&frame.samples, end)? {
            // Waiting for the wake word: speech is not listened to.
            self.l.ep.reset_at(end);
            return Ok(());
        }
        let event = self.l.ep.push(&frame.samples, p);
        if self.candidate.as_ref().is_some_and(|c| !c.dismissed) && !self.cx.turns.busy() {
            // The answer ended while the user was speaking (or before their speech was
            // judged): it is simply their turn. (Speech already judged not to mean anything,
            // seesay's own voice most likely, stays a candidate and is judged when it ends.)
            // (A pause reported by this very frame is judged below.)
            self.take_over("speech started", event.is_none())?;
        }
        match event {
            Some(VadEvent::Start { start }) if self.cx.turns.busy() => {
                // Seesay is answering: an interruption, a backchannel, a cough or its own
                // voice? Probes will tell.
                tracing::debug!(
                    at_s = start as f64 / SAMPLE_RATE as f64,
                    "speech during the answer"
                );
                self.unjudged_waits()?;
                self.candidate = Some(Candidate {
                    start,
                    probes: 0,
                    in_flight: None,
                    whole: false,
                    meant: None,
                    dismissed: false,
                    ended: None,
                });
                self.cx
                    .event(self.cx.turns.current(), What::SpeechDuringAnswer);
                self.probe()?;
            }
            Some(VadEvent::Start { .. }) => self.begin("speech started"),
            Some(VadEvent::End { audio, speech_end }) => {
                self.pending = None;
                if let Some(c) = &mut self.candidate {
                    match c.meant.is_some() {
                        // Half duplex: kept, answered after the answer.
                        true => {
                            self.keep_for_later((audio, speech_end));
                            self.candidate = None;
                        }
                        false => {
                            c.ended = Some((audio, speech_end));
                            self.probe()?;
                        }
                    }
                    return Ok(());
                }
                self.ending.by = match self.l.ep.too_long(audio.len()) {
                    true => "length",
                    false => "silence",
                };
                self.end_turn(audio, speech_end)?;
            }
            Some(VadEvent::Pause { audio, speech_end }) if self.candidate.is_none() => {
                self.pause(audio, speech_end)?;
            }
            _ if self.candidate.is_some() => self.probe()?,
            Some(_) => {}
            None if self.waited_out(end) => self.end_unsure()?,
            None => self.roll(end, p)?,
        }
        Ok(())
    }

    /// Is seesay listening? Always, without a wake word; with one, from the moment it is heard
    /// until `follow_up` after it, or after the last answer (and while someone speaks to it).
    fn awake(&mut self, samples: &[f32], end: u64) -> Result<bool, Option<PipelineError>> {
        let Some(w) = &mut self.l.wake else {
            return Ok(true);
        };
        let p = w.detector.push(samples).map_err(|e| Some(e.into()))?;
        if self.cx.turns.busy() || self.candidate.is_some() {
            w.awake_until = w.awake_until.max(end + w.follow_up);
        }
        if p >= w.threshold {
            w.detector.reset();
            w.awake_until = end + w.follow_up;
            tracing::info!(word = %w.word, p, "wake word heard");
            self.cx.publish(Update::WakeWord {
                word: w.word.clone(),
            });
            // The wake phrase itself is not part of the question.
            self.l.ep.reset_at(end);
            return Ok(false);
        }
        Ok(end <= w.awake_until || self.l.ep.speaking())
    }

    /// The speech heard during the answer becomes the user's turn: handed on if it has ended;
    /// otherwise, with `judge_pause`, a pause the user is already in (passed over while the
    /// speech was only a candidate) is judged now.
    fn take_over(&mut self, why: &str, judge_pause: bool) -> Step {
        let ended = self.candidate.take().and_then(|c| c.ended);
        self.begin(why);
        match (ended, self.l.ep.pause()) {
            (Some((audio, speech_end)), _) => {
                self.ending.by = "silence";
                self.end_turn(audio, speech_end)
            }
            (None, Some(speech_end)) if judge_pause => {
                self.pause(self.l.ep.audio().to_vec(), speech_end)
            }
            (None, _) => Ok(()),
        }
    }

    /// A new turn: the user speaks (or a question kept during the answer is taken up).
    fn begin(&mut self, why: &str) {
        let was_busy = self.cx.turns.busy();
        let turn = self.cx.begin_turn();
        self.ending = Ending::default();
        // Speculations about the last turn's pauses no longer matter.
        (self.pending, self.asked, self.unsure) = (None, None, None);
        self.drop_ahead();
        tracing::debug!(turn, "{why}");
        if was_busy {
            tracing::info!(turn, "barge-in: the user speaks; the answer stops");
        }
    }

    /// Half duplex: a question asked during the answer waits for its end (at most `MAX_HELD`;
    /// past that the oldest is given up, and the log says so).
    fn keep_for_later(&mut self, question: (Vec<f32>, u64)) {
        if self.held.len() == MAX_HELD {
            tracing::warn!(
                "{MAX_HELD} questions already wait for the answer to end; the oldest is given up"
            );
            self.held.pop_front();
        }
        // In the order they were asked (one set aside may be judged after a later one).
        let at = self.held.partition_point(|q| q.1 <= question.1);
        self.held.insert(at, question);
    }

    /// Half duplex: once the answer is over, the first question asked during it gets its turn.
    fn answer_held(&mut self) -> Step {
        // Speech set aside and not yet judged may be the first question.
        if self.cx.turns.busy() || self.aside.is_some() {
            return Ok(());
        }
        let Some((audio, speech_end)) = self.held.pop_front() else {
            return Ok(());
        };
        self.begin("a question asked during the answer is taken up");
        self.ending.by = "silence";
        self.end_turn(audio, speech_end)
    }

    /// Transcribes the speech heard during an answer so far (or all of it, once it ended), if it
    /// is time to and no probe is under way.
    fn probe(&mut self) -> Step {
        let Some(c) = &mut self.candidate else {
            return Ok(());
        };
        // A probe unanswered for 3 s is taken as lost.
        if c.in_flight
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3))
            || c.meant.is_some()
        {
            return Ok(());
        }
        let audio = match &c.ended {
            Some((audio, _)) => audio.clone(),
            None if c.probes < MAX_PROBES && self.l.ep.audio().len() >= c.probes * PROBE_EVERY => {
                self.l.ep.audio().to_vec()
            }
            None => return Ok(()),
        };
        if send_probe(&self.tx, self.cx.turns.current(), audio, c.start)? {
            c.in_flight = Some(Instant::now());
            c.whole = c.ended.is_some();
            c.probes += 1;
        }
        Ok(())
    }

    fn feedback(&mut self, f: Feedback) -> Step {
        match f {
            Feedback::EndOfTurn {
                turn,
                speech_end,
                text_p,
            } => self.end_of_turn(turn, speech_end, text_p),
            Feedback::Heard { start, text } => self.heard(start, &text),
        }
    }

    /// A probe's transcript: does the speech mean to interrupt?
    fn heard(&mut self, start: u64, text: &str) -> Step {
        if self.judge_aside(start, text) {
            return self.probe_aside();
        }
        let Some(c) = self.candidate.as_mut().filter(|c| c.start == start) else {
            return Ok(());
        };
        c.in_flight = None;
        let speaking = lock(&self.cx.speaking).clone();
        let meant = interrupt::meant(text, &speaking);
        tracing::debug!(heard = %text, ?meant, "speech during the answer");
        match meant {
            // Not sure (one stray word from a fraction of a second, which Whisper also hears
            // in the start of a hum): listen on, or hear the whole speech if it has ended.
            Some(words) if !c.whole && !interrupt::sure(&words) => {
                tracing::debug!(%words, "not sure yet; listening on");
                self.probe()?;
            }
            Some(words) if self.l.barge_in => {
                tracing::info!(%words, "the user interrupts");
                self.take_over("speech that means it", true)?;
            }
            Some(words) => {
                tracing::info!(%words, "a question during the answer; it is answered next");
                if let Some((audio, speech_end)) = c.ended.take() {
                    self.keep_for_later((audio, speech_end));
                    self.candidate = None;
                } else {
                    c.meant = Some(words);
                }
            }
            None if c.ended.is_some() && c.whole => {
                self.let_go(text, "not an interruption; the answer goes on");
                self.candidate = None;
            }
            // The speech ended after this probe was sent (audio that comes faster than real
            // time, or a recogniser slowed by load): its start alone says nothing of the rest.
            None if c.ended.is_some() => self.probe()?,
            // The first probe holds the speech's first fraction of a second, in which Whisper
            // may hear no word at all even of a question ("What do bees make?" in some of
            // Piper's renderings): that is no verdict yet, and playback stays held until the
            // next probe (a cough costs the answer that much more of a pause). Words that are
            // a backchannel or seesay's own are a verdict at once.
            None if c.probes == 1 && interrupt::no_words(text) => {
                tracing::debug!("nothing heard yet; listening on");
                self.probe()?;
            }
            None => {
                c.dismissed = true;
                self.probe()?;
            }
        }
        Ok(())
    }

    /// Speech over the answer that means nothing (`interrupt::meant` is `None`) is let go: the
    /// log says so (`note`) and the client is told what it was taken for.
    fn let_go(&self, text: &str, note: &str) {
        let why = interrupt::let_go_as(text);
        tracing::info!(heard = %text, why, "{note}");
        self.cx.publish(Update::SpeechIgnored {
            heard: text.to_string(),
            why,
        });
    }

    /// Reports the end of the user's speech and hands the utterance to ASR.
    fn end_turn(&mut self, audio: Vec<f32>, speech_end: u64) -> Step {
        let turn = self.cx.turns.current();
        self.keep_ahead_if(turn, speech_end);
        let cx = &self.cx;
        let behind = self.now.saturating_sub(speech_end) as f64 / SAMPLE_RATE as f64;
        let end_at = self
            .last_at
            .checked_sub(Duration::from_secs_f64(behind))
            .unwrap_or(self.last_at);
        cx.event(
            turn,
            What::Speech {
                start_s: (speech_end as f64 - audio.len() as f64).max(0.0) / SAMPLE_RATE as f64,
                end_s: speech_end as f64 / SAMPLE_RATE as f64,
                end_at,
                ending: self.ending,
            },
        );
        cx.turns.handle(turn);
        let u = Utterance {
            turn,
            audio,
            speech_end,
            purpose: Purpose::Final,
            stop: None,
            typed: None,
        };
        self.tx.send(u).map_err(|_| None)
    }
}

/// Sends speech heard during an answer (begun at `start`, which names its transcript) to ASR
/// if it has room; whether it went.
fn send_probe(
    tx: &Sender<Utterance>,
    turn: u64,
    audio: Vec<f32>,
    start: u64,
) -> Result<bool, Option<PipelineError>> {
    let u = Utterance {
        turn,
        audio,
        speech_end: start,
        purpose: Purpose::Probe,
        stop: None,
        typed: None,
    };
    match tx.try_send(u) {
        Ok(()) => Ok(true),
        Err(TrySendError::Full(_)) => Ok(false),
        Err(TrySendError::Disconnected(_)) => Err(None),
    }
}
