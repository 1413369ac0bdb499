//! Half duplex: speech over the answer that ended but is not yet judged when new speech begins
//! is set aside until its whole transcript says whether it was a question (it was replaced by
//! the new speech and lost: a second question asked right after a first was never answered).

use std::time::{Duration, Instant};

use super::{send_probe, Candidate, Listener, Step};
use crate::pipeline::models::lock;
use crate::text::interrupt;

impl Listener {
    /// New speech over the answer while the last has ended but is not yet judged: half duplex,
    /// the last is set aside until its whole transcript comes (it was replaced and lost: a
    /// second question asked right after a first). One already aside is kept as a question.
    /// With barge-in the new speech is judged instead.
    pub(super) fn unjudged_waits(&mut self) -> Step {
        let Some(c) = self.candidate.take() else {
            return Ok(());
        };
        if self.l.barge_in || c.dismissed || c.ended.is_none() {
            return Ok(());
        }
        if let Some(Candidate { ended: Some(q), .. }) = self.aside.take() {
            self.keep_for_later(q);
        }
        self.aside = Some(c);
        self.probe_aside()
    }

    /// Asks for the whole transcript of the speech set aside, unless a transcript of it is on
    /// its way (one unanswered for 3 s is taken as lost).
    pub(super) fn probe_aside(&mut self) -> Step {
        let Some(c) = &mut self.aside else {
            return Ok(());
        };
        let waiting = c
            .in_flight
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3));
        let (Some((audio, _)), false) = (&c.ended, waiting) else {
            return Ok(());
        };
        if send_probe(&self.tx, self.cx.turns.current(), audio.clone(), c.start)? {
            (c.in_flight, c.whole) = (Some(Instant::now()), true);
        }
        Ok(())
    }

    /// A transcript of the speech set aside by `unjudged_waits`: if whole, a question waits for
    /// the answer's end and anything else (a backchannel, seesay's own voice) is let go. Whether
    /// it was one.
    pub(super) fn judge_aside(&mut self, start: u64, text: &str) -> bool {
        let Some(c) = self.aside.as_mut().filter(|c| c.start == start) else {
            return false;
        };
        if !c.whole {
            c.in_flight = None; // a transcript of its start only: the whole is asked next
            return true;
        }
        let ended = self.aside.take().and_then(|c| c.ended);
        let speaking = lock(&self.cx.speaking).clone();
        match (interrupt::meant(text, &speaking), ended) {
            (Some(words), Some(q)) => {
                tracing::info!(%words, "a question during the answer; it is answered next");
                self.keep_for_later(q);
            }
            _ => self.let_go(text, "not a question"),
        }
        true
    }
}
