//! What a conversation's client sends (`/v1/conversation`: audio, camera snapshots, typed
//! questions) and is sent (the pipeline's updates), as WebSocket messages; and why a connection
//! is closed.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Message;
use serde::Deserialize;
use serde_json::json;

use super::state::Shared;
use crate::media::audio::{from_pcm16, pcm16};
use crate::media::image::{data_uri_bytes, decode_image};
use crate::pipeline::Update;
use crate::stages::camera::{Frame, FrameSender};

/// The longest typed question taken, in characters.
pub const MAX_TYPED_CHARS: usize = 2000;

/// Why a connection is closed: the close code and the reason.
#[derive(Debug)]
pub struct Bad {
    pub code: u16,
    pub reason: String,
}

pub(super) fn bad(code: u16, reason: impl Into<String>) -> Bad {
    Bad {
        code,
        reason: reason.into(),
    }
}

/// 1003: a kind of message the server does not take; 1007: a message it cannot read.
const UNSUPPORTED: u16 = 1003;
const INVALID: u16 = 1007;
/// 1009: a message too long to take.
const TOO_BIG: u16 = 1009;
/// 1002: a frame the WebSocket layer refused (broken, or too big).
pub(super) const PROTOCOL: u16 = 1002;
/// 1008: the client broke a rule (it went quiet for too long, or typed faster than answered).
pub(super) const POLICY: u16 = 1008;
/// 1001: the server is going away (shutting down).
pub(super) const GOING_AWAY: u16 = 1001;
/// 1011: the server failed.
pub(super) const FAILED: u16 = 1011;

/// What the client sends into the pipeline: audio, camera pictures and typed questions.
pub(super) struct Inputs {
    pub audio: tokio::sync::mpsc::Sender<Vec<f32>>,
    pub pictures: FrameSender,
    pub typed: crossbeam_channel::Sender<String>,
}

#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    text: String,
}

/// A client's text message, read.
#[derive(Debug)]
pub enum FromClient {
    /// A camera snapshot (`{"type": "image", "data": "data:image/jpeg;base64,..."}`).
    Image(image::RgbImage),
    /// A typed question (`{"type": "text", "text": "..."}`), trimmed; empty: nothing to answer.
    Text(String),
}

/// A client's text message: JSON with a `type`. An image's data URI is decoded here (to at most
/// `max_side` pixels a side). Errors name the close code.
pub fn client_message(text: &str, max_side: u32) -> Result<FromClient, Bad> {
    let m: ClientMessage = serde_json::from_str(text).map_err(|e| {
        bad(
            INVALID,
            format!("a text message must be JSON with a \"type\": {e}"),
        )
    })?;
    match m.kind.as_str() {
        "image" => {
            let bytes = data_uri_bytes(&m.data).map_err(|e| bad(INVALID, format!("image: {e}")))?;
            decode_image(&bytes, "the snapshot", max_side)
                .map(FromClient::Image)
                .map_err(|e| bad(INVALID, e.to_string()))
        }
        "text" => match m.text.trim() {
            t if t.chars().count() > MAX_TYPED_CHARS => Err(bad(
                TOO_BIG,
                format!("a typed question is at most {MAX_TYPED_CHARS} characters"),
            )),
            t => Ok(FromClient::Text(t.to_string())),
        },
        other => Err(bad(
            UNSUPPORTED,
            format!(
                "unknown message type {other:?} (expected \"image\" or \"text\", or binary audio)"
            ),
        )),
    }
}

/// Handles one message from the client.
pub(super) async fn incoming(st: &Shared, msg: Message, inputs: &Inputs) -> Result<(), Bad> {
    match msg {
        Message::Binary(bytes) => {
            let samples = from_pcm16(&bytes).ok_or_else(|| {
                bad(
                    INVALID,
                    format!(
                        "audio must be 16-bit PCM: a binary message of {} bytes is not whole samples",
                        bytes.len()
                    ),
                )
            })?;
            // Waits when the pipeline is behind: the socket's reading slows, nothing is dropped.
            inputs
                .audio
                .send(samples)
                .await
                .map_err(|_| bad(FAILED, "the pipeline has stopped"))
        }
        Message::Text(text) => {
            let max_side = st.cfg.vision.max_side;
            let text = text.to_string();
            let said = tokio::task::spawn_blocking(move || client_message(&text, max_side))
                .await
                .map_err(|e| bad(FAILED, e.to_string()))??;
            take(said, inputs)
        }
        // Pings are answered by the WebSocket layer.
        _ => Ok(()),
    }
}

/// Passes what a text message said into the pipeline.
fn take(said: FromClient, inputs: &Inputs) -> Result<(), Bad> {
    match said {
        FromClient::Image(image) => {
            inputs.pictures.put(Frame {
                seq: 0,
                image: Arc::new(image),
                source: "the client's camera".into(),
                at: Instant::now(),
            });
            Ok(())
        }
        FromClient::Text(t) if t.is_empty() => Ok(()),
        FromClient::Text(t) => match inputs.typed.try_send(t) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(_)) => Err(bad(
                POLICY,
                "questions typed faster than they can be taken up",
            )),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                Err(bad(FAILED, "the pipeline has stopped"))
            }
        },
    }
}

/// An update as a WebSocket message.
pub(super) fn outgoing(up: Update) -> Message {
    let v = match up {
        Update::Audio { turn, pcm } => {
            let mut b = Vec::with_capacity(4 + pcm.len() * 2);
            b.extend((turn as u32).to_le_bytes());
            b.extend(pcm16(&pcm));
            return Message::Binary(b.into());
        }
        Update::SpeechStarted { turn } => json!({"type": "speech_started", "turn": turn}),
        Update::WakeWord { word } => json!({"type": "wake_word", "word": word}),
        Update::Transcript { turn, text } => {
            json!({"type": "transcript", "turn": turn, "text": text})
        }
        Update::AnswerText { turn, text } => json!({"type": "answer", "turn": turn, "text": text}),
        Update::Caption { text, .. } => json!({"type": "caption", "text": text}),
        Update::TurnDone(m) => {
            let mut v = serde_json::to_value(&m).unwrap_or_default();
            v["type"] = "turn_done".into();
            v
        }
        Update::TurnDropped { turn, reason } => {
            json!({"type": "turn_dropped", "turn": turn, "reason": reason})
        }
        Update::TurnFailed { turn, error } => {
            json!({"type": "error", "turn": turn, "message": error})
        }
        Update::SpeechIgnored { heard, why } => {
            json!({"type": "speech_ignored", "heard": heard, "reason": why})
        }
    };
    Message::Text(v.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_question_is_read_trimmed_and_bounded() {
        let said = client_message(r#"{"type": "text", "text": "  What time is it?\n"}"#, 64);
        assert!(matches!(said, Ok(FromClient::Text(t)) if t == "What time is it?"));
        let long = json!({"type": "text", "text": "a".repeat(MAX_TYPED_CHARS + 1)}).to_string();
        assert_eq!(client_message(&long, 64).unwrap_err().code, TOO_BIG);
        let odd = client_message(r#"{"type": "shout", "text": "hi"}"#, 64);
        assert_eq!(odd.unwrap_err().code, UNSUPPORTED);
        assert_eq!(client_message("hi", 64).unwrap_err().code, INVALID);
    }
}
