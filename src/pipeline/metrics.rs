//! The per-turn figures: events from the stages in, one `TurnMetrics` per answered turn out
//! (logged, written as a JSON line to the metrics file, and reported to the client), plus the
//! client's live updates in the order things happened.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::messages::{Event, TurnMetrics, Update, What};

pub(crate) fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Collects events into per-turn figures; logs each finished turn and writes it as a JSON line.
pub(crate) fn collect(
    rx: Receiver<Event>,
    mut sink: Option<std::io::BufWriter<std::fs::File>>,
    updates: Option<Sender<Update>>,
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
    }
    let mut open: HashMap<u64, Partial> = HashMap::new();
    let mut done = Vec::new();
    for ev in rx {
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
        let p = open.entry(ev.turn).or_insert_with(|| Partial {
            m: TurnMetrics {
                turn: ev.turn,
                ..Default::default()
            },
            end_at: None,
        });
        let since_end = |p: &Partial, at: Instant| p.end_at.map_or(0.0, |e| ms_between(e, at));
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
            What::NoWords => {
                tracing::info!(turn = ev.turn, "heard no words; not answering");
                open.remove(&ev.turn);
                publish(Update::TurnDropped { turn: ev.turn });
            }
            What::FirstToken => p.m.first_token_ms = since_end(p, ev.at),
            What::Answer { text, cancelled } => {
                p.m.answer = text;
                p.m.interrupted |= cancelled;
            }
            What::FirstAudioReady => p.m.first_audio_ready_ms = since_end(p, ev.at),
            What::FirstAudio(at) => p.m.voice_to_voice_ms = since_end(p, at),
            What::Failed(error) => {
                tracing::error!(turn = ev.turn, "turn failed: {error}");
                open.remove(&ev.turn);
                publish(Update::TurnFailed {
                    turn: ev.turn,
                    error,
                });
            }
            What::Unspoken => {
                tracing::info!(
                    turn = ev.turn,
                    "no answer was spoken (interrupted or empty)"
                );
                open.remove(&ev.turn);
                publish(Update::TurnDropped { turn: ev.turn });
            }
            What::Delta(_) | What::SpeechDuringAnswer => {}
            What::Done {
                interrupted,
                audio_s,
            } => {
                let Some(mut p) = open.remove(&ev.turn) else {
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
    done
}
