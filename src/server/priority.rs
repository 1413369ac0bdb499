//! Conversations first: while a conversation's user speaks and until the first audio of its
//! answer (or the turn's end), requests (transcription, speech, chat, Wyoming) wait before they
//! start, and a spoken answer to a request waits between sentences. On two cores a request run
//! beside a turn's recogniser, model and voice made that turn's first audio come seconds late;
//! a request waits a second or two instead, which nobody on the other end hears.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::Update;

/// The longest a request waits for conversations (then it runs beside them): a user who speaks
/// on and on does not hold every request back.
pub const GIVE_WAY_AT_MOST: Duration = Duration::from_secs(4);

/// How many conversations have a turn that must not wait: from the user's first word to the
/// first audio of the answer.
#[derive(Default)]
pub struct Urgent {
    turns: tokio::sync::watch::Sender<usize>,
}

impl Urgent {
    /// Waits (at most `GIVE_WAY_AT_MOST`) until no conversation has a turn under way; how long.
    pub async fn give_way(&self) -> Duration {
        self.give_way_within(GIVE_WAY_AT_MOST).await
    }

    async fn give_way_within(&self, limit: Duration) -> Duration {
        let t = Instant::now();
        let mut rx = self.turns.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        t.elapsed()
    }

    /// `give_way` for a blocking thread.
    pub fn give_way_blocking(&self) -> Duration {
        let t = Instant::now();
        while *self.turns.borrow() > 0 && t.elapsed() < GIVE_WAY_AT_MOST {
            std::thread::sleep(Duration::from_millis(10));
        }
        t.elapsed()
    }

    /// Conversations with a turn under way now.
    pub fn now(&self) -> usize {
        *self.turns.borrow()
    }

    fn add(&self, on: bool) {
        self.turns.send_modify(|n| match on {
            true => *n += 1,
            false => *n = n.saturating_sub(1),
        });
    }
}

/// One conversation's part in `Urgent`: marked from a turn's first word until its first audio
/// or its end (done, dropped or failed); unmarked when the conversation ends.
pub struct Urgency {
    shared: Arc<Urgent>,
    /// The turn that holds the mark.
    turn: Option<u64>,
}

impl Urgency {
    pub fn new(shared: Arc<Urgent>) -> Urgency {
        Urgency { shared, turn: None }
    }

    /// Follows the pipeline's updates to its client.
    pub fn update(&mut self, up: &Update) {
        match *up {
            Update::SpeechStarted { turn } => self.mark(Some(turn)),
            Update::Audio { turn, .. }
            | Update::TurnDropped { turn, .. }
            | Update::TurnFailed { turn, .. } => self.end(turn),
            Update::TurnDone(ref m) => self.end(m.turn),
            _ => {}
        }
    }

    /// `turn` has its first audio, or is over: an older turn's end does not unmark a newer one.
    fn end(&mut self, turn: u64) {
        if self.turn.is_some_and(|t| t <= turn) {
            self.mark(None);
        }
    }

    fn mark(&mut self, turn: Option<u64>) {
        match (self.turn.is_some(), turn.is_some()) {
            (false, true) => self.shared.add(true),
            (true, false) => self.shared.add(false),
            _ => {}
        }
        self.turn = turn;
    }
}

impl Drop for Urgency {
    fn drop(&mut self) {
        self.mark(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_is_urgent_from_its_first_word_to_its_first_audio_or_end() {
        let shared = Arc::new(Urgent::default());
        let mut a = Urgency::new(shared.clone());
        let mut b = Urgency::new(shared.clone());
        a.update(&Update::SpeechStarted { turn: 1 });
        b.update(&Update::SpeechStarted { turn: 4 });
        assert_eq!(shared.now(), 2);
        // The user interrupts: turn 2 starts while turn 1 is still marked; one mark each.
        a.update(&Update::SpeechStarted { turn: 2 });
        assert_eq!(shared.now(), 2);
        // Turn 1's late end leaves turn 2 marked; turn 2's first audio unmarks it.
        a.update(&Update::TurnDropped {
            turn: 1,
            reason: "interrupted",
        });
        assert_eq!(shared.now(), 2);
        a.update(&Update::Audio {
            turn: 2,
            pcm: vec![0.0],
        });
        assert_eq!(shared.now(), 1);
        // A conversation that ends mid-turn gives its mark back.
        drop(b);
        assert_eq!(shared.now(), 0);
    }

    #[tokio::test]
    async fn a_request_waits_for_the_turn_and_not_longer() {
        let shared = Arc::new(Urgent::default());
        let mut a = Urgency::new(shared.clone());
        a.update(&Update::SpeechStarted { turn: 1 });
        let waiter = {
            let shared = shared.clone();
            // A limit no test waits for: the waiter must be let go by the turn's end.
            tokio::spawn(async move { shared.give_way_within(Duration::from_secs(600)).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        a.update(&Update::TurnFailed {
            turn: 1,
            error: "x".into(),
        });
        let waited = tokio::time::timeout(Duration::from_secs(60), waiter).await;
        assert!(waited.expect("let go when the turn ended").unwrap() >= Duration::from_millis(200));
        assert_eq!(shared.now(), 0);
    }
}
