//! The preemptive answer (`pipeline.preemptive_answer`): at a pause judged not over, but maybe
//! over, the answer to the words heard so far is written, and its sentences synthesised, ahead
//! of the verdict, held back from the speaker. If the turn ends at that pause with those words,
//! the held audio plays at once and the answer goes on being written as usual; if the user goes
//! on, or the final transcript says something else, all of it is dropped unheard (and the
//! conversation never holds it).

use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{Going, Stage};
use crate::pipeline::messages::{Heard, Say, What};
use crate::pipeline::models::lock;
use crate::pipeline::turns::Context;
use crate::stages::Cancel;
use crate::text::splitter::SentenceSplitter;
use crate::tools;

/// How often a finished answer written ahead looks for the verdict.
const VERDICT_POLL: Duration = Duration::from_millis(10);

/// An answer being written: its sentences go to the voice as they complete. Written ahead of
/// the end of the turn it is not live: its sentences are held (synthesised, not played), and
/// neither the client nor the echo check sees its words until it goes live.
pub(super) struct Writing {
    turn: u64,
    pub splitter: SentenceSplitter,
    /// What went to the voice: whole sentences (and the first clause).
    pub spoken: Vec<String>,
    /// The words written while not live.
    written: String,
    /// Written ahead and not live yet: what stops it (its held sentences are not synthesised
    /// once it is cancelled). `None`: live.
    ahead: Option<Cancel>,
    /// No word has been shown yet.
    first: bool,
    /// The voice's stage is gone.
    pub gone: bool,
}

impl Writing {
    /// A live answer for `turn` (what seesay is saying starts afresh).
    pub fn live(turn: u64, first_clause_words: usize, cx: &Context) -> Writing {
        lock(&cx.speaking).clear();
        Writing::new(turn, first_clause_words, None)
    }

    /// An answer for `turn` written ahead, held back until it goes live; `cancel` stops it.
    fn ahead(turn: u64, first_clause_words: usize, cancel: Cancel) -> Writing {
        Writing::new(turn, first_clause_words, Some(cancel))
    }

    fn new(turn: u64, first_clause_words: usize, ahead: Option<Cancel>) -> Writing {
        Writing {
            turn,
            splitter: SentenceSplitter::new(first_clause_words),
            spoken: Vec::new(),
            written: String::new(),
            ahead,
            first: true,
            gone: false,
        }
    }

    fn is_live(&self) -> bool {
        self.ahead.is_none()
    }

    /// The next piece of the answer.
    pub fn push(&mut self, chunk: &str, cx: &Context, tx: &Sender<Say>) {
        match self.is_live() {
            true => self.show(chunk, cx),
            false => self.written.push_str(chunk),
        }
        for text in self.splitter.push(chunk) {
            self.spoken.push(text.clone());
            let turn = self.turn;
            let say = match &self.ahead {
                Some(stop) => Say::Ahead {
                    turn,
                    text,
                    stop: stop.clone(),
                },
                None => Say::Sentence { turn, text },
            };
            self.gone |= tx.send(say).is_err();
        }
    }

    /// Words of the live answer: the turn's first token, what seesay is saying (for the echo
    /// check), and the client's text.
    fn show(&mut self, text: &str, cx: &Context) {
        if self.first {
            self.first = false;
            cx.event(self.turn, What::FirstToken);
        }
        lock(&cx.speaking).push_str(text);
        if cx.updates.is_some() {
            cx.event(self.turn, What::Delta(text.to_string()));
        }
    }

    /// The answer written ahead is the turn's: what was written is shown, what was held plays.
    fn go_live(&mut self, cx: &Context, tx: &Sender<Say>) {
        self.ahead = None;
        lock(&cx.speaking).clear();
        let written = std::mem::take(&mut self.written);
        self.show(&written, cx);
        self.gone |= tx.send(Say::Release { turn: self.turn }).is_err();
    }
}

/// Whether the final transcript `next` is the one the answer ahead `h` was written for (the
/// same words, in any case: one made afresh may differ from the pause's only in that), and the
/// answer is still wanted (a barge-in since leaves the transcript to be dropped as usual).
fn confirms(h: &Heard, next: &Heard, cancel: &Cancel) -> bool {
    !next.speculative
        && (next.turn, next.speech_end) == (h.turn, h.speech_end)
        && next.text.to_lowercase() == h.text.to_lowercase()
        && !cancel.is_cancelled()
}

impl Stage {
    /// The pause the VAD stage doubted, if its words are the last the model read and an answer
    /// may be written ahead for them (not with tools: a call must not run for words the user
    /// may go on from). Returns the words as a final transcript would carry them, and the
    /// token the VAD stage cancels when the user goes on.
    pub(super) fn wanted_ahead(&mut self) -> Option<(Heard, Cancel)> {
        let offer = lock(&self.a.cx.ahead).take()?;
        let (turn, speech_end, text) = self.pause.as_ref()?;
        let fits = self.a.answer_ahead
            && (offer.turn, offer.speech_end) == (*turn, *speech_end)
            && !offer.stop.is_cancelled()
            && !self.a.cx.turns.is_stale(*turn)
            && !self.a.hands.tools.with_tools(text);
        let h = Heard {
            turn: *turn,
            text: text.clone(),
            speculative: false,
            speech_end: *speech_end,
        };
        fits.then_some((h, offer.stop))
    }

    /// Writes the answer to `h` ahead of the verdict; it goes live when the final transcript
    /// confirms it, and is dropped when the user goes on or something else comes.
    pub(super) fn answer_ahead(&mut self, h: Heard, stop: Cancel) -> Going {
        let _turn = tracing::debug_span!("turn", turn = h.turn).entered();
        let cx = self.a.cx.clone();
        self.pause = None;
        let msgs = match self.a.conv.prompt_for(self.a.llm.as_mut(), &h.text) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("no answer ahead: {e}");
                return true;
            }
        };
        tracing::debug!(text = %h.text, "answering ahead of the verdict");
        let mine = Cancel::new();
        let cancel = Cancel::for_turn(cx.turns.clock.clone(), h.turn)
            .or(stop)
            .or(mine.clone());
        let mut w = Writing::ahead(h.turn, self.a.first_clause_words, cancel.clone());
        let mut taken: Option<Heard> = None;
        let (rx, tx) = (self.rx.clone(), self.a.tx.clone());
        let a = &mut self.a;
        let registry = a.hands.tools.for_question(&h.text);
        let result = tools::answer(a.llm.as_mut(), &msgs, registry, &cancel, &mut |chunk| {
            if !w.is_live() && taken.is_none() {
                match rx.try_recv() {
                    Ok(next) if confirms(&h, &next, &cancel) => w.go_live(&cx, &tx),
                    Ok(next) => {
                        mine.cancel();
                        taken = Some(next);
                    }
                    Err(_) => {}
                }
            }
            w.push(chunk, &cx, &tx);
        });
        if !w.is_live() && taken.is_none() && result.is_ok() {
            // Written whole before the verdict: it waits for it.
            match self.verdict(h.turn, &cancel) {
                Some(next) if confirms(&h, &next, &cancel) => w.go_live(&cx, &tx),
                next => taken = next,
            }
        }
        if w.gone {
            return false;
        }
        if !w.is_live() {
            if let Err(e) = &result {
                tracing::debug!("the answer written ahead failed: {e}");
            }
            mine.cancel(); // its sentences still queued for the voice are skipped
            return self.drop_ahead(&h, taken);
        }
        cx.event(h.turn, What::Preemptive("used"));
        match result {
            Ok(answer) => self.answered(&h, answer, w.splitter, w.spoken),
            Err(e) => cx.event(h.turn, What::Failed(format!("language model: {e}"))),
        }
        self.a.tx.send(Say::End { turn: h.turn }).is_ok()
    }

    /// The next transcript, for an answer written whole ahead (`None` once it is cancelled, or
    /// the turn is over without one: its recognition failed).
    fn verdict(&self, turn: u64, cancel: &Cancel) -> Option<Heard> {
        while !cancel.is_cancelled() && !self.a.cx.turns.is_finished(turn) {
            match self.rx.recv_timeout(VERDICT_POLL) {
                Ok(next) => return Some(next),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// The answer ahead is not the turn's: its held audio is dropped, the turn's figures say
    /// why, and what came instead (if anything) is handled next.
    fn drop_ahead(&mut self, h: &Heard, taken: Option<Heard>) -> Going {
        let what = match &taken {
            Some(next) if !next.speculative && next.turn == h.turn => "redone",
            _ => "dropped",
        };
        tracing::debug!(what, "the answer written ahead is not used");
        self.a.cx.event(h.turn, What::Preemptive(what));
        self.next = taken;
        self.a.tx.send(Say::Discard { turn: h.turn }).is_ok()
    }
}
