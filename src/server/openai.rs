//! The OpenAI-compatible handlers of `seesay serve` (uploads to text are in `transcribe`): text
//! in, speech out (`/v1/audio/speech`: WAV or PCM as it is synthesised, MP3, Ogg Opus or FLAC
//! whole); messages (with `image_url` parts) in, an answer or a stream of chunks out
//! (`/v1/chat/completions`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::state::{blocking, json_body, speak, stream_blocking, ApiError, Feed, Shared};
use super::tool_calls::{self, Offered};
use crate::media::audio::{self, pcm16};
use crate::media::encode::{self, AudioFormat};
use crate::media::image::{data_uri_bytes, decode_image, jpeg_data_uri};
use crate::media::wav::wav_header;
use crate::pipeline::{lock, Locked};
use crate::stages::asr::{self, AsrError, Transcriber};
use crate::stages::llm::conversation::context_line;
use crate::stages::llm::{Finish, Message, Role};
use crate::stages::Cancel;
use crate::text::splitter::split_sentences;
use crate::text::transcript::Segment;
use crate::tools::parse::Gate;
use crate::tools::results_message;

/// Transcribes 16 kHz audio window by window, in `language` if given. The shared recogniser is
/// locked for one window at a time (with the language set for it, and put back after), and each
/// window waits for conversations' turns under way (`priority`), so a long upload (or a Wyoming
/// transcription) does not hold up the conversations.
pub fn transcribe_pcm(
    st: &Shared,
    pcm: &[f32],
    language: Option<&str>,
    cancel: &Cancel,
) -> Result<Vec<Segment>, ApiError> {
    /// The shared model, one window at a time, until cancelled.
    struct Windowed<'a> {
        model: &'a Locked<Box<dyn Transcriber>>,
        language: Option<&'a str>,
        cancel: &'a Cancel,
        urgent: &'a super::priority::Urgent,
    }
    impl Transcriber for Windowed<'_> {
        fn transcribe(&mut self, pcm: &[f32], offset: f64) -> Result<Vec<Segment>, AsrError> {
            if self.cancel.is_cancelled() {
                return Err(AsrError::Inference("cancelled".into()));
            }
            self.urgent.give_way_blocking();
            let mut m = lock(self.model);
            let previous = self.language.map(|l| m.set_language(l)).transpose()?;
            let result = m.transcribe(pcm, offset);
            if let Some(p) = previous {
                let _ = m.set_language(&p);
            }
            result
        }
        fn set_language(&mut self, _: &str) -> Result<String, AsrError> {
            Err(AsrError::Inference(
                "the language is set per window here".into(),
            ))
        }
    }
    let t = Instant::now();
    let mut windowed = Windowed {
        model: &st.models.asr,
        language,
        cancel,
        urgent: &st.urgent,
    };
    let chunks = [Ok::<_, AsrError>(pcm.to_vec())];
    let (_, segments) =
        asr::transcribe_stream(&mut windowed, st.cfg.asr.window_seconds, chunks, |_| {})
            .map_err(|e| ApiError::bad(e.to_string()))?;
    st.metrics.observe("asr", t.elapsed().as_secs_f64());
    Ok(segments)
}

#[derive(Deserialize)]
pub struct SpeechRequest {
    input: String,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    speed: Option<f32>,
    #[allow(dead_code)]
    #[serde(default)]
    model: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    voice: Option<String>,
}

/// OpenAI's `pcm` format is 24 kHz 16-bit mono.
const PCM_RATE: u32 = 24_000;

pub async fn speech(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SpeechRequest = json_body(&headers, &body)?;
    let format = AudioFormat::parse(req.response_format.as_deref().unwrap_or("wav"))
        .map_err(|e| ApiError::bad(e.to_string()))?;
    if req.input.chars().count() > st.cfg.server.max_speech_chars {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the input has more than {} characters (server.max_speech_chars)",
                st.cfg.server.max_speech_chars
            ),
        ));
    }
    if split_sentences(&req.input).is_empty() {
        return Err(ApiError::bad("nothing to say: the input has no words"));
    }
    if let Some(speed) = req.speed {
        if !(0.25..=4.0).contains(&speed) {
            return Err(ApiError::bad("speed must be between 0.25 and 4.0"));
        }
    }
    let rate = st.models.voice_rate;
    let st2 = st.clone();
    let speed = req.speed;
    let stream = stream_blocking(
        &st,
        8,
        move |feed: &Feed<Result<Bytes, std::io::Error>>| {
            if format == AudioFormat::Wav && !feed.send(Ok(Bytes::from(wav_header(rate, None)))) {
                return;
            }
            // WAV and PCM go out as they are spoken; the compressed formats as one file at the end.
            let mut whole = Vec::new();
            let spoken = speak(&st2, &req.input, speed, |pcm| match format {
                AudioFormat::Wav => feed.send(Ok(Bytes::from(pcm16(&pcm)))),
                AudioFormat::Pcm => {
                    let pcm = audio::resample(&pcm, rate, PCM_RATE).unwrap_or(pcm);
                    // False: the client went away, or the time is up.
                    feed.send(Ok(Bytes::from(pcm16(&pcm))))
                }
                _ => {
                    whole.extend(pcm);
                    !feed.cancel().is_cancelled()
                }
            });
            let result = spoken.map_err(|e| e.to_string()).and_then(|()| {
                if matches!(format, AudioFormat::Wav | AudioFormat::Pcm)
                    || feed.cancel().is_cancelled()
                {
                    return Ok(());
                }
                let bytes = encode::encode(format, &whole, rate).map_err(|e| e.to_string())?;
                feed.send(Ok(Bytes::from(bytes)));
                Ok(())
            });
            if let Err(e) = result {
                feed.last(Err(std::io::Error::other(e)));
            } else if feed.timed_out() {
                feed.last(Err(std::io::Error::other("request_timeout_s passed")));
            }
        },
        |_| Err(std::io::Error::other("speech synthesis failed")),
    );
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The text of a message's content: a string, or the text parts of a list; images go to `images`.
fn content_text(
    content: &serde_json::Value,
    images: &mut Vec<Vec<u8>>,
) -> Result<String, ApiError> {
    match content {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(parts) => {
            let mut text = Vec::new();
            for p in parts {
                match p["type"].as_str() {
                    Some("text") => text.push(p["text"].as_str().unwrap_or_default().to_string()),
                    Some("image_url") => {
                        let url = p["image_url"]["url"]
                            .as_str()
                            .or_else(|| p["image_url"].as_str())
                            .unwrap_or_default();
                        let bytes = data_uri_bytes(url)
                            .map_err(|e| ApiError::bad(format!("image_url: {e}")))?;
                        images.push(bytes);
                    }
                    other => {
                        return Err(ApiError::bad(format!(
                            "unknown content part type {other:?}"
                        )))
                    }
                }
            }
            Ok(text.join("\n"))
        }
        serde_json::Value::Null => Ok(String::new()),
        _ => Err(ApiError::bad(
            "message content must be a string or a list of parts",
        )),
    }
}

#[derive(Deserialize)]
pub struct ChatRequest {
    messages: Vec<serde_json::Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    model: Option<String>,
    /// `{"include_usage": true}`: a last chunk (no choices) carries the token counts.
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Functions the model may call (OpenAI's `tools`); its calls come back as `tool_calls`.
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The messages of a chat request, and the bytes of the images in them (data URIs decoded).
/// An assistant's `tool_calls` and the `tool` results that follow are written as the model's
/// chat template writes them (consecutive results: one message).
pub fn chat_messages(req: &ChatRequest) -> Result<(Vec<Message>, Vec<Vec<u8>>), ApiError> {
    let mut images = Vec::new();
    let mut msgs = Vec::new();
    let mut results: Vec<String> = Vec::new();
    for m in &req.messages {
        let text = content_text(&m["content"], &mut images)?;
        if m["role"] == "tool" {
            results.push(text);
            continue;
        }
        if !results.is_empty() {
            msgs.push(Message::new(Role::User, results_message(&results)));
            results.clear();
        }
        let role = match m["role"].as_str() {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => return Err(ApiError::bad(format!("unknown role {other:?}"))),
        };
        let text = match role {
            Role::Assistant => tool_calls::assistant_text(text, m)?,
            _ => text,
        };
        msgs.push(Message::new(role, text));
    }
    if !results.is_empty() {
        msgs.push(Message::new(Role::User, results_message(&results)));
    }
    if !msgs
        .iter()
        .any(|m| m.role == Role::User && !m.content.trim().is_empty())
    {
        return Err(ApiError::bad("no user message with text"));
    }
    Ok((msgs, images))
}

pub async fn chat(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ChatRequest = json_body(&headers, &body)?;
    let job = ChatJob::new(&st, req)?;
    match job.stream {
        false => chat_whole(st, job).await,
        true => Ok(chat_streamed(st, job)),
    }
}

/// One chat request, checked: what to answer and how to reply.
struct ChatJob {
    msgs: Vec<Message>,
    images: Vec<Vec<u8>>,
    offered: Offered,
    model_name: String,
    max_tokens: usize,
    temperature: Option<f64>,
    stream: bool,
    include_usage: bool,
    id: String,
    created: u64,
}

impl ChatJob {
    fn new(st: &Shared, req: ChatRequest) -> Result<ChatJob, ApiError> {
        let (msgs, images) = chat_messages(&req)?;
        let offered = Offered::from_request(req.tools.as_ref(), req.tool_choice.as_ref())?;
        if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::bad("temperature must be between 0 and 2"));
        }
        // Unique per response: the time, and a counter for responses within the same nanosecond.
        static N: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(ChatJob {
            msgs,
            images,
            offered,
            model_name: req.model.unwrap_or_else(|| st.cfg.llm.model.clone()),
            max_tokens: req
                .max_completion_tokens
                .or(req.max_tokens)
                .unwrap_or(st.cfg.llm.max_tokens)
                .min(st.cfg.llm.max_tokens.max(1) * 4),
            temperature: req.temperature,
            stream: req.stream,
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
            id: format!(
                "chatcmpl-{:x}{:04x}",
                now.as_nanos(),
                N.fetch_add(1, Ordering::Relaxed) & 0xffff
            ),
            created: now.as_secs(),
        })
    }

    /// The messages for the model: the images described and the tools offered in the system
    /// prompt.
    fn prepare(&mut self, st: &Shared) -> Result<Vec<Message>, ApiError> {
        let mut captions = Vec::new();
        let mut picture = None;
        for (i, bytes) in self.images.iter().enumerate() {
            let img = decode_image(bytes, &format!("image {}", i + 1), st.cfg.vision.max_side)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            let t = Instant::now();
            let captioner = st.models.captioner.as_ref().ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no captioner loaded")
            })?;
            captions.push(lock(captioner).caption(&img).map_err(ApiError::internal)?);
            st.metrics.observe("caption", t.elapsed().as_secs_f64());
            picture = Some(img);
        }
        let msgs = std::mem::take(&mut self.msgs);
        let mut system: Vec<String> = msgs
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .collect();
        if system.is_empty() {
            // With tools, the chat template's own default: the voice prompt (plain spoken
            // words, no code) kept Qwen2.5-Coder-1.5B from calling them ("weather in Lisbon?":
            // an invented answer instead of a call).
            system.push(match self.offered.any() {
                true => tool_calls::DEFAULT_SYSTEM.to_string(),
                false => st.cfg.llm.system_prompt.clone(),
            });
        }
        if !captions.is_empty() {
            system.push(format!(
                "You can see through a camera. {}",
                context_line(&captions.join(" "))
            ));
        }
        let system = self.offered.system_prompt(&system.join(" "));
        let mut out = vec![Message::new(Role::System, system)];
        out.extend(msgs.into_iter().filter(|m| m.role != Role::System));
        // A model that takes images (`llm.mmproj`) is shown the last picture itself too, with
        // the last question.
        let question = out.iter_mut().rev().find(|m| m.role == Role::User);
        if let (true, Some(img), Some(m)) = (st.models.llm_sees, picture, question) {
            m.image = Some(jpeg_data_uri(&img).map_err(ApiError::internal)?.into());
        }
        Ok(out)
    }

    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The answer's calls (when tools were offered) in OpenAI's form, if it made any.
    fn tool_calls(&self, answer: &str) -> Option<serde_json::Value> {
        let calls = self.offered.calls_in(answer);
        (!calls.is_empty()).then(|| tool_calls::tool_calls_json(&self.id, &calls))
    }
}

/// The whole answer in one response.
async fn chat_whole(st: Shared, mut job: ChatJob) -> Result<Response, ApiError> {
    let st2 = st.clone();
    let (job, (answer, finish, usage)) = blocking(&st, move |cancel| {
        let messages = job.prepare(&st2)?;
        let out = generate(
            &st2,
            &messages,
            job.max_tokens,
            job.temperature,
            cancel,
            &mut |_| {},
        )?;
        Ok((job, out))
    })
    .await?;
    let message = match job.tool_calls(&answer) {
        Some(calls) => {
            serde_json::json!({"role": "assistant", "content": null, "tool_calls": calls})
        }
        None => serde_json::json!({"role": "assistant", "content": answer}),
    };
    let finish = match message["tool_calls"].is_null() {
        true => finish,
        false => "tool_calls",
    };
    Ok(Json(serde_json::json!({
        "id": job.id, "object": "chat.completion", "created": job.created, "model": job.model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }))
    .into_response())
}

/// The answer as server-sent events, a chunk per piece of text (a call is never sent as text:
/// with tools offered, the start of the answer is held until it is clear it is no call).
fn chat_streamed(st: Shared, mut job: ChatJob) -> Response {
    let st2 = st.clone();
    let stream = stream_blocking(
        &st,
        32,
        move |feed: &Feed<Result<Bytes, std::io::Error>>| {
            let event = |v: serde_json::Value| Ok(Bytes::from(format!("data: {v}\n\n")));
            let send = |v: serde_json::Value| feed.send(event(v));
            let mut gate = Gate::default();
            let result = job.prepare(&st2).and_then(|messages| {
                send(job.chunk(
                    serde_json::json!({"role": "assistant", "content": ""}),
                    None,
                ));
                // A failed send cancels the generation (the client went away, or the time is up).
                let mut text = |t: &str| {
                    send(job.chunk(serde_json::json!({"content": t}), None));
                };
                generate(
                    &st2,
                    &messages,
                    job.max_tokens,
                    job.temperature,
                    feed.cancel(),
                    &mut |t| match job.offered.any() {
                        true => gate.push(t, &mut text),
                        false => text(t),
                    },
                )
            });
            match result {
                _ if feed.timed_out() => feed.last(event(serde_json::json!({"error": {
                    "message": "the request took longer than server.request_timeout_s",
                    "type": "server_error"}}))),
                Ok((answer, finish, usage)) => {
                    let finish = match job.tool_calls(&answer) {
                        Some(calls) => {
                            send(job.chunk(serde_json::json!({"tool_calls": calls}), None));
                            "tool_calls"
                        }
                        None => {
                            gate.flush(&mut |t| {
                                send(job.chunk(serde_json::json!({"content": t}), None));
                            });
                            finish
                        }
                    };
                    send(job.chunk(serde_json::json!({}), Some(finish)));
                    if job.include_usage {
                        let mut last = job.chunk(serde_json::json!({}), None);
                        last["choices"] = serde_json::json!([]);
                        last["usage"] = usage;
                        send(last);
                    }
                }
                Err(e) => {
                    send(
                        serde_json::json!({"error": {"message": e.message, "type": "server_error"}}),
                    );
                }
            }
            feed.last(Ok(Bytes::from("data: [DONE]\n\n")));
        },
        |_| {
            Ok(Bytes::from(
                "data: {\"error\": {\"message\": \"the answer failed\", \"type\": \"server_error\"}}\n\n",
            ))
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One stateless generation with per-request sampling settings, on the shared model (waiting
/// for it counts in the "llm" latency).
pub(crate) fn generate(
    st: &Shared,
    messages: &[Message],
    max_tokens: usize,
    temperature: Option<f64>,
    cancel: &Cancel,
    on_text: &mut dyn FnMut(&str),
) -> Result<(String, &'static str, serde_json::Value), ApiError> {
    let t = Instant::now();
    // A chat model of this request's own: with llama.cpp, requests and conversations are
    // answered at the same time.
    let mut llm = (st.models.llm)().map_err(ApiError::internal)?;
    let cfg = &st.cfg.llm;
    let mut c = cfg.clone();
    c.max_tokens = max_tokens;
    if let Some(t) = temperature {
        c.temperature = t;
    }
    let prompt_tokens = llm.count_tokens(messages).unwrap_or(0);
    if prompt_tokens + 1 > c.context_tokens {
        return Err(ApiError::bad(format!(
            "the messages need {prompt_tokens} tokens; the context window holds {}",
            c.context_tokens
        )));
    }
    llm.set_config(&c);
    let result = llm.generate(messages, cancel, on_text);
    st.metrics.observe("llm", t.elapsed().as_secs_f64());
    let (answer, finish) = result.map_err(ApiError::internal)?;
    let completion = llm.stats().map(|s| s.generated).unwrap_or(0);
    let finish = match finish {
        Finish::Length => "length",
        _ => "stop",
    };
    Ok((
        answer,
        finish,
        serde_json::json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}),
    ))
}
