//! A question typed by the client (the web page's text box): a turn of its own at once, like
//! speech that ended, with words that need no recogniser.

use std::time::Instant;

use super::{Listener, Step};
use crate::media::audio::SAMPLE_RATE;
use crate::pipeline::messages::{Ending, Purpose, Utterance, What};

impl Listener {
    /// Begins a turn for `text` (an answer under way stops, as when the user speaks) and hands it
    /// on. Speech under way or being judged over the answer is let go: the typed question
    /// replaces it. Questions already kept for the end of an answer (half duplex) are answered
    /// after it. No wake word is needed: typing is addressed to seesay.
    pub(super) fn typed(&mut self, text: String) -> Step {
        self.candidate = None;
        self.l.ep.reset_at(self.now);
        self.begin("a question was typed");
        self.ending = Ending {
            by: "typed",
            ..Ending::default()
        };
        let turn = self.cx.turns.current();
        let at_s = self.now as f64 / SAMPLE_RATE as f64;
        self.cx.event(
            turn,
            What::Speech {
                start_s: at_s,
                end_s: at_s,
                end_at: Instant::now(),
                ending: self.ending,
            },
        );
        self.cx.turns.handle(turn);
        let u = Utterance {
            turn,
            audio: Vec::new(),
            speech_end: self.now,
            purpose: Purpose::Final,
            stop: None,
            typed: Some(text),
        };
        self.tx.send(u).map_err(|_| None)
    }
}
