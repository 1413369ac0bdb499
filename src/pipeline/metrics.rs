//! The per-turn figures: events from the stages in, one `TurnMetrics` per answered turn out
//! (logged, written as a JSON line to the metrics file, and reported to the client), plus the
//! client's live updates in the order things happened.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::messages::{Event, TurnMetrics, Update, What};

pub(crate) fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// How long a turn that a newer one superseded may take to report its end before it is
/// reported dropped for it (its stages drop stale work, so it is normally a few milliseconds).
const SUPERSEDED_GRACE: Duration = Duration::from_secs(10);

/// Collects events into per-turn figures; logs each finished turn and writes it as a JSON line.
/// Every turn that began ends exactly once for the client: `TurnDone`, `TurnDropped` (with a
/// reason) or `TurnFailed`, also when a stage drops it without a word, or the run ends.
pub(crate) fn collect(
    rx: Receiver<Event>,
    sink: Option<std::io::BufWriter<std::fs::File>>,
    updates: Option<Sender<Update>>,
    t0: Instant,
) -> Vec<TurnMetrics> {
    let mut c = Collector {
        sink,
        updates,
        t0,
        open: HashMap::new(),
        closed: HashSet::new(),
        given_up: HashMap::new(),
        done: Vec::new(),
    };
    loop {
        let ev = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        c.give_up_overdue();
        if let Some(ev) = ev {
            c.event(ev);
        }
    }
    c.end()
}

/// A turn being reported.
struct Partial {
    m: TurnMetrics,
    end_at: Option<Instant>,
    /// When a newer turn began.
    superseded: Option<Instant>,
}

impl Partial {
    fn new(turn: u64) -> Partial {
        Partial {
            m: TurnMetrics {
                turn,
                ..Default::default()
            },
            end_at: None,
            superseded: None,
        }
    }

    /// Milliseconds from the end of the user's speech to `at`.
    fn since_end(&self, at: Instant) -> f64 {
        self.end_at.map_or(0.0, |e| ms_between(e, at))
    }
}

/// The collector's state.
struct Collector {
    sink: Option<std::io::BufWriter<std::fs::File>>,
    updates: Option<Sender<Update>>,
    t0: Instant,
    open: HashMap<u64, Partial>,
    /// Turns already reported ended (late events about them are ignored), the newest few.
    closed: HashSet<u64>,
    /// Turns dropped as superseded, and when: their own end, should it still come, is logged.
    given_up: HashMap<u64, Instant>,
    done: Vec<TurnMetrics>,
}

impl Collector {
    fn publish(&self, u: Update) {
        if let Some(tx) = &self.updates {
            let _ = tx.send(u);
        }
    }

    /// Marks `turn` reported; returns what was collected of it.
    fn close(&mut self, turn: u64) -> Option<Partial> {
        self.closed.insert(turn);
        self.closed.retain(|&t| t + 1000 > turn);
        self.open.remove(&turn)
    }

    /// Turns superseded long ago that never reported an end are reported dropped.
    fn give_up_overdue(&mut self) {
        let overdue: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, p)| p.superseded.is_some_and(|s| s.elapsed() > SUPERSEDED_GRACE))
            .map(|(t, _)| *t)
            .collect();
        for turn in overdue {
            tracing::warn!(turn, "a superseded turn reported no end; dropping it");
            self.close(turn);
            self.given_up.insert(turn, Instant::now());
            self.publish(Update::TurnDropped {
                turn,
                reason: "superseded",
            });
        }
    }

    /// One event from a stage.
    fn event(&mut self, ev: Event) {
        if self.closed.contains(&ev.turn) {
            self.late(&ev);
            return;
        }
        match ev.what {
            What::Delta(text) => self.publish(Update::AnswerText {
                turn: ev.turn,
                text,
            }),
            // Only while the turn is open (an answer that is over has been reported).
            What::SpeechDuringAnswer => {
                if let Some(p) = self.open.get_mut(&ev.turn) {
                    p.m.speech_during_answer += 1;
                }
            }
            What::Failed(error) => {
                tracing::error!(turn = ev.turn, "turn failed: {error}");
                self.close(ev.turn);
                self.publish(Update::TurnFailed {
                    turn: ev.turn,
                    error,
                });
            }
            What::Dropped(reason) => {
                tracing::info!(
                    turn = ev.turn,
                    reason,
                    "the turn ends without an answer spoken"
                );
                self.close(ev.turn);
                self.publish(Update::TurnDropped {
                    turn: ev.turn,
                    reason,
                });
            }
            What::Done {
                interrupted,
                audio_s,
            } => self.done(ev.turn, interrupted, audio_s),
            _ => self.record(ev),
        }
    }

    /// An event about a turn already reported: only a late end is worth a line.
    fn late(&mut self, ev: &Event) {
        if matches!(
            ev.what,
            What::Done { .. } | What::Dropped(_) | What::Failed(_)
        ) {
            if let Some(at) = self.given_up.remove(&ev.turn) {
                // Late, not lost: a stage was slow to drop it (a shared model under load).
                tracing::warn!(
                    turn = ev.turn,
                    late_s = at.elapsed().as_secs_f64(),
                    "a turn dropped as superseded reported its end after all"
                );
            }
        }
        self.given_up.retain(|&t, _| t + 1000 > ev.turn);
    }

    /// A step of an open turn (it opens with its first event), into its figures.
    fn record(&mut self, ev: Event) {
        if let What::Began = ev.what {
            for p in self.open.values_mut().filter(|p| p.m.turn < ev.turn) {
                p.superseded.get_or_insert(ev.at);
            }
        }
        let p = self
            .open
            .entry(ev.turn)
            .or_insert_with(|| Partial::new(ev.turn));
        match ev.what {
            What::Speech {
                start_s,
                end_s,
                end_at,
                ending,
            } => {
                p.m.ended_by = ending.by.to_string();
                p.m.turn_audio_p = ending.audio_p;
                p.m.turn_text_p = ending.text_p;
                p.m.decision_ms = ending.decision_ms;
                p.m.speech_start_s = start_s;
                p.m.speech_end_s = end_s;
                p.end_at = Some(end_at);
                p.m.endpoint_ms = p.since_end(ev.at);
            }
            What::Transcript(t) => {
                p.m.transcript_ms = p.since_end(ev.at);
                let text = t.clone();
                p.m.transcript = t;
                self.publish(Update::Transcript {
                    turn: ev.turn,
                    text,
                });
            }
            What::FirstToken => p.m.first_token_ms = p.since_end(ev.at),
            What::Answer {
                text,
                cancelled,
                calls,
            } => {
                p.m.answer = text;
                p.m.interrupted |= cancelled;
                p.m.tool_calls = calls;
                p.m.said_at_s = ev.at.saturating_duration_since(self.t0).as_secs_f64();
            }
            What::Announcement(text) => {
                p.m.answer = text;
                p.m.announcement = true;
                p.m.said_at_s = ev.at.saturating_duration_since(self.t0).as_secs_f64();
            }
            What::FirstAudioReady => p.m.first_audio_ready_ms = p.since_end(ev.at),
            What::FirstAudio(at) => p.m.voice_to_voice_ms = p.since_end(at),
            What::Preemptive(what) => p.m.preemptive = Some(outweighs(p.m.preemptive.take(), what)),
            _ => {}
        }
    }

    /// The answer was played out (or interrupted): the turn's figures are logged, written and
    /// reported.
    fn done(&mut self, turn: u64, interrupted: bool, audio_s: f64) {
        use std::io::Write;
        // (A turn whose first event is its end is reported too, with what little it has.)
        let mut p = self.close(turn).unwrap_or_else(|| Partial::new(turn));
        p.m.interrupted |= interrupted;
        p.m.answer_audio_s = audio_s;
        let m = p.m;
        tracing::info!(
            turn = m.turn,
            transcript = %m.transcript,
            answer = %m.answer,
            "turn {}: endpoint {:.0} ms, transcript {:.0} ms, first token {:.0} ms, first audio {:.0} ms{}",
            m.turn, m.endpoint_ms, m.transcript_ms, m.first_token_ms, m.voice_to_voice_ms,
            if m.interrupted { " (interrupted)" } else { "" }
        );
        if let Some(f) = &mut self.sink {
            let line = serde_json::to_string(&m).unwrap_or_default();
            if writeln!(f, "{line}").and_then(|_| f.flush()).is_err() {
                tracing::error!("cannot write the metrics file");
            }
        }
        self.publish(Update::TurnDone(m.clone()));
        self.done.push(m);
    }

    /// The run is over: turns still open end here, in order.
    fn end(self) -> Vec<TurnMetrics> {
        let mut left: Vec<u64> = self.open.keys().copied().collect();
        left.sort_unstable();
        for turn in left {
            self.publish(Update::TurnDropped {
                turn,
                reason: "the conversation ended",
            });
        }
        self.done
    }
}

/// A turn's preemptive answers, told as one: "used" outweighs "redone", which outweighs
/// "dropped" (a turn whose first pause's answer was dropped and whose last one was used used it).
fn outweighs(old: Option<String>, new: &str) -> String {
    let rank = |w: &str| ["dropped", "redone", "used"].iter().position(|r| *r == w);
    match old {
        Some(old) if rank(&old) >= rank(new) => old,
        _ => new.to_string(),
    }
}
