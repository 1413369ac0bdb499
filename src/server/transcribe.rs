//! Uploads in, text out: `/v1/audio/transcriptions` and `/v1/audio/translations` (Whisper's
//! translate task: speech in any language, English text), as json, text, srt, vtt or
//! verbose_json (segments, and words with their times when `timestamp_granularities[]` asks).

use std::time::Instant;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::state::{blocking, content_type_is, read_form, ApiError, Shared};
use crate::media::audio::{self, SAMPLE_RATE};
use crate::pipeline::{lock, Locked};
use crate::stages::asr::{Decode, Timed, Transcriber, Windower};
use crate::stages::Cancel;
use crate::text::transcript::{self, Format, Segment};

/// What an upload asks for.
struct Upload {
    name: String,
    bytes: Vec<u8>,
    format: String,
    language: Option<String>,
    /// `timestamp_granularities[]`: segments, words.
    segments: bool,
    words: bool,
}

type MultipartResult = Result<Multipart, axum::extract::multipart::MultipartRejection>;

pub async fn transcriptions(
    State(st): State<Shared>,
    headers: HeaderMap,
    form: MultipartResult,
) -> Result<Response, ApiError> {
    audio_to_text(st, headers, form, false).await
}

pub async fn translations(
    State(st): State<Shared>,
    headers: HeaderMap,
    form: MultipartResult,
) -> Result<Response, ApiError> {
    audio_to_text(st, headers, form, true).await
}

async fn read_upload(headers: &HeaderMap, form: MultipartResult) -> Result<Upload, ApiError> {
    if !content_type_is(headers, "multipart/form-data") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the audio as multipart/form-data with a `file` field",
        ));
    }
    let form = form.map_err(|e| ApiError::bad(e.body_text()))?;
    let fields = read_form(form).await?;
    let texts = |n: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(k, _, _)| k == n || k.strip_suffix("[]") == Some(n))
            .map(|(_, _, v)| String::from_utf8_lossy(v).trim().to_string())
            .collect()
    };
    let (name, bytes) = fields
        .iter()
        .find(|(k, _, _)| k == "file")
        .map(|(_, f, b)| (f.clone().unwrap_or_else(|| "audio".into()), b.clone()))
        .ok_or_else(|| ApiError::bad("the form has no `file` field"))?;
    let format = texts("response_format")
        .pop()
        .unwrap_or_else(|| "json".into());
    if !["json", "text", "srt", "vtt", "verbose_json"].contains(&format.as_str()) {
        return Err(ApiError::bad(format!(
            "response_format {format:?} is not one of json, text, srt, vtt, verbose_json"
        )));
    }
    let granularities = texts("timestamp_granularities");
    if let Some(g) = granularities
        .iter()
        .find(|g| *g != "segment" && *g != "word")
    {
        return Err(ApiError::bad(format!(
            "timestamp_granularities: {g:?} is not segment or word"
        )));
    }
    if !granularities.is_empty() && format != "verbose_json" {
        return Err(ApiError::bad(
            "timestamp_granularities need response_format verbose_json",
        ));
    }
    Ok(Upload {
        name,
        bytes,
        format,
        language: texts("language").pop().filter(|l| !l.is_empty()),
        segments: granularities.is_empty() || granularities.iter().any(|g| g == "segment"),
        words: granularities.iter().any(|g| g == "word"),
    })
}

async fn audio_to_text(
    st: Shared,
    headers: HeaderMap,
    form: MultipartResult,
    translate: bool,
) -> Result<Response, ApiError> {
    let up = read_upload(&headers, form).await?;
    let how = Decode {
        translate,
        words: up.words,
    };
    let (st2, language, name) = (st.clone(), up.language.clone(), up.name);
    let (duration, timed) = blocking(&st, move |cancel| {
        let pcm = audio::decode_bytes(up.bytes, &name, SAMPLE_RATE)
            .map_err(|e| ApiError::bad(format!("cannot read the audio: {e}")))?;
        let duration = pcm.len() as f64 / SAMPLE_RATE as f64;
        if duration > st2.cfg.server.max_audio_s {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the audio is {duration:.0} s long; the limit is {:.0} s (server.max_audio_s)",
                    st2.cfg.server.max_audio_s
                ),
            ));
        }
        let model = match translate {
            true => st2.translator()?,
            false => st2.models.asr.clone(),
        };
        let timed = decode_pcm(&st2, &model, &pcm, language.as_deref(), how, cancel)?;
        Ok((duration, timed))
    })
    .await?;
    let segments: Vec<Segment> = timed.iter().map(|t| t.segment.clone()).collect();
    let text = transcript::plain_text(&segments);
    Ok(match up.format.as_str() {
        "text" => text.into_response(),
        "srt" => transcript::render(Format::Srt, "", duration, &segments).into_response(),
        "vtt" => transcript::render(Format::Vtt, "", duration, &segments).into_response(),
        "verbose_json" => {
            let mut body = serde_json::json!({
                "task": if translate { "translate" } else { "transcribe" },
                "language": up.language.unwrap_or_else(|| st.cfg.asr.language.clone()),
                "duration": duration,
                "text": text,
            });
            if up.segments {
                body["segments"] = segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        serde_json::json!({
                            "id": i, "start": s.start, "end": s.end, "text": s.text,
                        })
                    })
                    .collect();
            }
            if up.words {
                body["words"] =
                    serde_json::json!(timed.iter().flat_map(|t| &t.words).collect::<Vec<_>>());
            }
            Json(body).into_response()
        }
        _ => Json(serde_json::json!({ "text": text })).into_response(),
    })
}

/// Decodes 16 kHz audio window by window with `model`, in `language` if given. The model is
/// locked for one window at a time (with the language set for it, and put back after), so a
/// long upload does not hold up the conversations.
fn decode_pcm(
    st: &Shared,
    model: &Locked<Box<dyn Transcriber>>,
    pcm: &[f32],
    language: Option<&str>,
    how: Decode,
    cancel: &Cancel,
) -> Result<Vec<Timed>, ApiError> {
    let t = Instant::now();
    let mut windower = Windower::new(st.cfg.asr.window_seconds);
    let mut windows = windower.push(pcm);
    windows.extend(windower.finish());
    let mut out = Vec::new();
    for (offset, window) in windows {
        if cancel.is_cancelled() {
            return Err(ApiError::internal("cancelled"));
        }
        let mut m = lock(model);
        let previous = language
            .map(|l| m.set_language(l))
            .transpose()
            .map_err(|e| ApiError::bad(e.to_string()))?;
        let result = m.transcribe_timed(&window, offset, how);
        if let Some(p) = previous {
            let _ = m.set_language(&p);
        }
        out.extend(result.map_err(|e| ApiError::bad(e.to_string()))?);
    }
    st.metrics.observe("asr", t.elapsed().as_secs_f64());
    Ok(out)
}
