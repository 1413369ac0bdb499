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
    mut sink: Option<std::io::BufWriter<std::fs::File>>,
    updates: Option<Sender<Update>>,
    t0: Instant,
) -> Vec<TurnMetrics> {
    use std::io::Write;
    let publish = |u: Update| {
        if let Some(tx) = &updates {
            let _ = tx.send(u);
        }
    };
    struct Partial {
        m: TurnMetrics,
        end_at: Option<Instant>,
        /// When a newer turn began.
        superseded: Option<Instant>,
    }
    let mut open: HashMap<u64, Partial> = HashMap::new();
    // Turns already reported ended (late events about them are ignored), the newest few.
    let mut closed: HashSet<u64> = HashSet::new();
    fn close(
        open: &mut HashMap<u64, Partial>,
        closed: &mut HashSet<u64>,
        turn: u64,
    ) -> Option<Partial> {
        closed.insert(turn);
        closed.retain(|&t| t + 1000 > turn);
        open.remove(&turn)
    }
    // Turns dropped as superseded, and when: their own end, should it still come, is logged.
    let mut given_up: HashMap<u64, Instant> = HashMap::new();
    let mut done = Vec::new();
    loop {
        let ev = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let overdue: Vec<u64> = open
            .iter()
            .filter(|(_, p)| p.superseded.is_some_and(|s| s.elapsed() > SUPERSEDED_GRACE))
            .map(|(t, _)| *t)
            .collect();
        for turn in overdue {
            tracing::warn!(turn, "a superseded turn reported no end; dropping it");
            close(&mut open, &mut closed, turn);
            given_up.insert(turn, Instant::now());
            publish(Update::TurnDropped {
                turn,
                reason: "superseded",
            });
        }
        let Some(ev) = ev else { continue };
        if closed.contains(&ev.turn) {
            if matches!(
                ev.what,
                What::Done { .. } | What::Dropped(_) | What::Failed(_)
            ) {
                if let Some(at) = given_up.remove(&ev.turn) {
                    // Late, not lost: a stage was slow to drop it (a shared model under load).
                    tracing::warn!(
                        turn = ev.turn,
                        late_s = at.elapsed().as_secs_f64(),
                        "a turn dropped as superseded reported its end after all"
                    );
                }
            }
            given_up.retain(|&t, _| t + 1000 > ev.turn);
            continue;
        }
        if let What::Delta(text) = ev.what {
            publish(Update::AnswerText {
                turn: ev.turn,
                text,
            });
            continue;
        }
        if let What::SpeechDuringAnswer = ev.what {
            // Only while the turn is open (an answer that is over has been reported).
            if let Some(p) = open.get_mut(&ev.turn) {
                p.m.speech_during_answer += 1;
            }
            continue;
        }
        if let What::Began = ev.what {
            for p in open.values_mut().filter(|p| p.m.turn < ev.turn) {
                p.superseded.get_or_insert(ev.at);
            }
        }
        let p = open.entry(ev.turn).or_insert_with(|| Partial {
            m: TurnMetrics {
                turn: ev.turn,
                ..Default::default()
            },
            end_at: None,
            superseded: None,
        });
        let since_end = |p: &Partial, at: Instant| p.end_at.map_or(0.0, |e| ms_between(e, at));
        match ev.what {
            What::Began => {}
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
                p.m.endpoint_ms = since_end(p, ev.at);
            }
            What::Transcript(t) => {
                p.m.transcript_ms = since_end(p, ev.at);
                publish(Update::Transcript {
                    turn: ev.turn,
                    text: t.clone(),
                });
                p.m.transcript = t;
            }
            What::FirstToken => p.m.first_token_ms = since_end(p, ev.at),
            What::Answer {
                text,
                cancelled,
                calls,
            } => {
                p.m.answer = text;
                p.m.interrupted |= cancelled;
                p.m.tool_calls = calls;
                p.m.said_at_s = ev.at.saturating_duration_since(t0).as_secs_f64();
            }
            What::Announcement(text) => {
                p.m.answer = text;
                p.m.announcement = true;
                p.m.said_at_s = ev.at.saturating_duration_since(t0).as_secs_f64();
            }
            What::FirstAudioReady => p.m.first_audio_ready_ms = since_end(p, ev.at),
            What::FirstAudio(at) => p.m.voice_to_voice_ms = since_end(p, at),
            What::Failed(error) => {
                tracing::error!(turn = ev.turn, "turn failed: {error}");
                close(&mut open, &mut closed, ev.turn);
                publish(Update::TurnFailed {
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
                close(&mut open, &mut closed, ev.turn);
                publish(Update::TurnDropped {
                    turn: ev.turn,
                    reason,
                });
            }
            What::Delta(_) | What::SpeechDuringAnswer => {}
            What::Done {
                interrupted,
                audio_s,
            } => {
                let Some(mut p) = close(&mut open, &mut closed, ev.turn) else {
                    continue;
                };
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
                if let Some(f) = &mut sink {
                    let line = serde_json::to_string(&m).unwrap_or_default();
                    if writeln!(f, "{line}").and_then(|_| f.flush()).is_err() {
                        tracing::error!("cannot write the metrics file");
                    }
                }
                publish(Update::TurnDone(m.clone()));
                done.push(m);
            }
        }
    }
    // The run is over: turns still open end here, in order.
    let mut left: Vec<u64> = open.keys().copied().collect();
    left.sort_unstable();
    for turn in left {
        publish(Update::TurnDropped {
            turn,
            reason: "the conversation ended",
        });
    }
    done
}
