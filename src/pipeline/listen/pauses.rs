//! Pauses: the speculative transcript and the language model's reading that tell whether the
//! user's turn is over, made ahead while the user speaks, begun at the first silent frame and
//! judged (with Smart Turn where it matters) once the pause has lasted `turn.pause_ms`.

use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use super::{Listener, Pending, Step};
use crate::media::audio::SAMPLE_RATE;
use crate::pipeline::error::PipelineError;
use crate::pipeline::messages::{Ahead, Ending, Purpose, Utterance};
use crate::pipeline::models::lock;
use crate::stages::turn;
use crate::stages::vad::VadEvent;
use crate::stages::Cancel;

/// Speech under way is transcribed and read by the language model ahead of its pause: from this
/// much of it, and again every as much more, while the recogniser and the model are free. At the
/// pause only the last words are new to the model, so its reading takes a fraction of the time.
const ROLL_EVERY: usize = SAMPLE_RATE as usize / 2;
/// A speculation that never came back (its feedback lost) no longer holds the next one back
/// (a reading while the user speaks, or a pause's transcript).
const SPECULATION_LOST: Duration = Duration::from_secs(3);
/// A voiced frame whose speech probability falls below this (speech fading: Silero's
/// probability falls over a frame or two at the end of speech, 0.99 → 0.78 → 0.25) begins the
/// pause's transcript one frame before the first silent frame, when no reading is under way; if
/// the speech goes on, it is stopped.
const FADING: f32 = 0.8;

/// A transcript (and reading) made ahead: of the speech so far, or up to a pause.
pub(super) struct Speculation {
    turn: u64,
    /// Where the audio it holds ends (a pause's speech end).
    speech_end: u64,
    sent: Instant,
    /// Cancelled when it no longer matters: the recogniser drops or stops it.
    stop: Cancel,
}

impl Speculation {
    fn about(s: &Option<Speculation>, turn: u64, speech_end: u64) -> bool {
        s.as_ref()
            .is_some_and(|s| (s.turn, s.speech_end) == (turn, speech_end))
    }

    fn lost(s: &Option<Speculation>) -> bool {
        s.as_ref()
            .is_some_and(|s| s.sent.elapsed() > SPECULATION_LOST)
    }

    /// Forgets it, and stops it if it is still being made.
    fn forget(s: &mut Option<Speculation>) {
        if let Some(s) = s.take() {
            s.stop.cancel();
        }
    }
}

impl Listener {
    /// While the user speaks (and seesay is not answering), the utterance so far goes ahead to the
    /// recogniser and the language model every `ROLL_EVERY`, and at the first silent frame (or a
    /// fading last voiced one), if they are free.
    pub(super) fn roll(&mut self, now: u64, p: f32) -> Step {
        let len = self.l.ep.audio().len();
        if len < self.rolled {
            self.rolled = 0; // a new utterance
        }
        if Speculation::lost(&self.rolling) {
            self.rolling = None;
        }
        if Speculation::lost(&self.asked) {
            self.asked = None;
        }
        if let Some(p) = self.unasked_pause() {
            // The pause's transcript could not be asked for (the recogniser's queue was full):
            // asked now that there is room, as the user is still silent.
            let (turn, audio, speech_end) = (p.turn, p.audio.clone(), p.speech_end);
            return self.ask(turn, audio, speech_end);
        }
        let voiced_until = self.l.ep.voiced_until();
        if voiced_until.is_some_and(|end| self.asked.as_ref().is_some_and(|a| a.speech_end != end))
        {
            // The user went on after the frame or pause that was asked about.
            Speculation::forget(&mut self.asked);
        }
        let free = self.l.turn.is_some()
            && self.candidate.is_none()
            && self.asked.is_none()
            && !self.cx.turns.busy();
        let fading = voiced_until.filter(|_| p < FADING && self.rolling.is_none());
        if let Some(speech_end) = self.l.ep.just_paused().or(fading).filter(|_| free) {
            // The first silent frame (or a fading last voiced one): the transcript a pause
            // needs is begun now; the pause is judged only once it has lasted `turn.pause_ms`.
            let turn = self.cx.turns.current();
            return self.ask(turn, self.l.ep.audio().to_vec(), speech_end);
        }
        if !free
            || self.rolling.is_some()
            || voiced_until.is_none()
            || len < self.rolled + ROLL_EVERY
        {
            return Ok(());
        }
        let turn = self.cx.turns.current();
        if let Some(stop) = self.speculate(turn, self.l.ep.audio().to_vec(), now)? {
            self.rolling = Some(Speculation {
                turn,
                speech_end: now,
                sent: Instant::now(),
                stop,
            });
            self.rolled = len;
        }
        Ok(())
    }

    /// The pause waiting for its verdict, if nothing was asked about it and the recogniser's
    /// queue has room now.
    fn unasked_pause(&self) -> Option<&Pending> {
        self.pending.as_ref().filter(|p| {
            self.asked.is_none()
                && !self.tx.is_full()
                && p.turn == self.cx.turns.current()
                && self.l.ep.paused_at(p.speech_end)
        })
    }

    /// The language model's reading at a pause: judge it, or ask about the newest pause.
    pub(super) fn end_of_turn(&mut self, turn: u64, speech_end: u64, text_p: Option<f32>) -> Step {
        if Speculation::about(&self.asked, turn, speech_end) {
            self.asked = None;
        }
        if Speculation::about(&self.rolling, turn, speech_end) {
            self.rolling = None;
        }
        match self.pending.take() {
            Some(p) if p.turn == turn && p.speech_end == speech_end => match text_p {
                None if self.reads_words() && !p.asked_again => self.ask_again(p),
                _ => self.judge(p, text_p),
            },
            // The answer is about an earlier pause; the newest one was not asked about (the
            // recogniser was busy): ask now, if the user is still silent.
            Some(p) if self.asked.is_none() && self.l.ep.paused_at(p.speech_end) => {
                self.ask(p.turn, self.l.ep.audio().to_vec(), p.speech_end)?;
                self.pending = Some(p);
                Ok(())
            }
            other => {
                self.pending = other;
                Ok(())
            }
        }
    }

    /// The user paused: a speculative transcript (for the language model's view, and ready if
    /// this is the end); with `turn.semantic` the pause is judged once the model's view is back.
    pub(super) fn pause(&mut self, audio: Vec<f32>, speech_end: u64) -> Step {
        let noticed = Instant::now();
        let turn = self.cx.turns.current();
        if self.l.turn.is_none() {
            if self.asked.is_none() {
                self.ask(turn, audio, speech_end)?;
            }
            return Ok(());
        }
        if self.asked.is_none() {
            self.ask(turn, audio.clone(), speech_end)?;
        }
        self.pending = Some(Pending {
            turn,
            speech_end,
            audio,
            noticed,
            asked_again: false,
        });
        Ok(())
    }

    /// Hands the audio up to a pause to ASR for a speculative transcript, if ASR has room (a
    /// speculation must never delay a real utterance).
    /// A reading of the speech so far that is still being made is stopped: this one holds more.
    /// A reading of the speech so far that ended where the pause begins (sent at the last voiced
    /// frame) is the pause's: it is kept, not stopped and asked again (stopped, its empty answer
    /// would come back under the pause's name and the pause be judged without the words).
    pub(super) fn ask(&mut self, turn: u64, audio: Vec<f32>, speech_end: u64) -> Step {
        if Speculation::about(&self.rolling, turn, speech_end) {
            self.asked = self.rolling.take();
            return Ok(());
        }
        Speculation::forget(&mut self.rolling);
        if let Some(stop) = self.speculate(turn, audio, speech_end)? {
            self.asked = Some(Speculation {
                turn,
                speech_end,
                sent: Instant::now(),
                stop,
            });
        }
        Ok(())
    }

    /// Sends audio up to `speech_end` for a speculative transcript if ASR has room; its token if
    /// it went.
    fn speculate(
        &self,
        turn: u64,
        audio: Vec<f32>,
        speech_end: u64,
    ) -> Result<Option<Cancel>, Option<PipelineError>> {
        let stop = Cancel::new();
        let u = Utterance {
            turn,
            audio,
            speech_end,
            purpose: Purpose::Pause,
            stop: Some(stop.clone()),
            typed: None,
        };
        match self.tx.try_send(u) {
            Ok(()) => Ok(Some(stop)),
            Err(TrySendError::Full(_)) => Ok(None),
            Err(TrySendError::Disconnected(_)) => Err(None),
        }
    }

    fn reads_words(&self) -> bool {
        self.l.turn.as_ref().is_some_and(|j| j.reads)
    }

    /// The pause's words came back unread (the recogniser was busy elsewhere, the language
    /// model's queue full, the speculation stopped): asked for once more while the user is silent.
    fn ask_again(&mut self, mut p: Pending) -> Step {
        if !self.l.ep.paused_at(p.speech_end) {
            return Ok(());
        }
        p.asked_again = true;
        self.ask(p.turn, p.audio.clone(), p.speech_end)?;
        self.pending = Some(p);
        Ok(())
    }

    /// Judges a pause from the two signals, and ends the turn there if it is over (and the user
    /// has not gone on speaking).
    pub(super) fn judge(&mut self, p: Pending, text_p: Option<f32>) -> Step {
        let Some(judging) = &self.l.turn else {
            return Ok(());
        };
        if !self.l.ep.paused_at(p.speech_end) {
            return Ok(()); // the user went on speaking
        }
        // The sound is judged only when it could change what the text says (Smart Turn would
        // otherwise slow the recogniser down at every pause, on two cores).
        let audio_p = match &judging.model {
            Some(model) if turn::sound_matters(&judging.cfg, text_p) => {
                match lock(model).complete(&p.audio) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!("end-of-turn model failed: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        let verdict = turn::decide(&judging.cfg, audio_p, text_p);
        self.ending = Ending {
            by: "model",
            audio_p: verdict.audio,
            text_p: verdict.text,
            decision_ms: p.noticed.elapsed().as_secs_f64() * 1000.0,
        };
        tracing::debug!(
            turn = p.turn,
            ?verdict,
            ms = self.ending.decision_ms,
            "end of turn?"
        );
        // Without the words the sound alone only makes the turn doubtful: Smart Turn hears
        // fragments in synthetic voices as final ("What is the capital of": 0.77), and a
        // conversation cut there is answered wrong. (A model that never reads words leaves
        // the sound to decide.)
        let sound_alone = verdict.text.is_none() && judging.reads;
        if !verdict.complete || sound_alone {
            let ms = turn::patience_ms(&judging.cfg, verdict.score);
            let wait = ms as u64 * SAMPLE_RATE as u64 / 1000;
            self.unsure = Some((p.speech_end, p.speech_end + wait));
            if verdict.text.is_some() {
                self.offer_ahead(p.turn, p.speech_end);
            }
            // The input may hold the whole wait already (frames judged faster than real time, a
            // client that stopped sending after its question): no later frame need come.
            return match self.waited_out(self.now) {
                true => self.end_unsure(),
                false => Ok(()),
            };
        }
        self.end_now(p.speech_end)
    }

    /// Ends the turn at the pause that ended at `speech_end` (unless the user went on).
    fn end_now(&mut self, speech_end: u64) -> Step {
        match self.l.ep.end_now(speech_end) {
            Some(VadEvent::End { audio, speech_end }) => self.end_turn(audio, speech_end),
            _ => Ok(()),
        }
    }

    /// A pause judged not over, but maybe over, whose words the language model read: it may
    /// answer them ahead, to be played at once if the turn ends at this pause. The answer is
    /// stopped (and never heard) once the user goes on.
    fn offer_ahead(&mut self, turn: u64, speech_end: u64) {
        Speculation::forget(&mut self.ahead);
        let stop = Cancel::new();
        *lock(&self.cx.ahead) = Some(Ahead {
            turn,
            speech_end,
            stop: stop.clone(),
        });
        self.ahead = Some(Speculation {
            turn,
            speech_end,
            sent: Instant::now(),
            stop,
        });
    }

    /// The turn ends at `speech_end`: an answer written ahead at that pause goes on (it is the
    /// turn's, if its words are); one written at an earlier pause is stopped.
    pub(super) fn keep_ahead_if(&mut self, turn: u64, speech_end: u64) {
        match Speculation::about(&self.ahead, turn, speech_end) {
            true => self.ahead = None,
            false => self.drop_ahead(),
        }
    }

    /// The user went on (or a new turn began): an answer written ahead is stopped unheard.
    pub(super) fn drop_ahead(&mut self) {
        Speculation::forget(&mut self.ahead);
        lock(&self.cx.ahead).take();
    }

    /// Has the pause judged doubtfully not over (`unsure`) lasted its patience by sample `now`?
    /// Forgotten once the user goes on.
    pub(super) fn waited_out(&mut self, now: u64) -> bool {
        match self.unsure {
            Some((speech_end, _)) if !self.l.ep.paused_at(speech_end) => {
                self.unsure = None;
                self.drop_ahead();
                false
            }
            Some((_, until)) => now >= until,
            None => false,
        }
    }

    /// The doubtful pause has lasted its patience: the turn ends there.
    pub(super) fn end_unsure(&mut self) -> Step {
        let Some((speech_end, _)) = self.unsure.take() else {
            return Ok(());
        };
        self.ending.by = "unsure";
        self.end_now(speech_end)
    }
}
