//! Remote speech recognition: one window of 16 kHz audio in, sent as a WAV file in a multipart
//! form to any OpenAI-compatible `{base_url}/audio/transcriptions` (another `seesay serve`,
//! speaches, vLLM, LocalAI, OpenAI), its timed segments (`verbose_json`) out.

use super::{is_silent, AsrConfig, AsrError, Transcriber};
use crate::media::audio::{pcm16, SAMPLE_RATE};
use crate::media::wav::wav_header;
use crate::stages::openai::{env_or, Endpoint};
use crate::text::transcript::Segment;

/// A client of an OpenAI-compatible transcription server.
pub struct RemoteTranscriber {
    endpoint: Endpoint,
    model: String,
    language: String,
    silence_rms: f32,
    no_speech_threshold: f32,
}

impl RemoteTranscriber {
    /// Checks the URL; the server is not contacted until the first transcription.
    pub fn new(cfg: &AsrConfig) -> Result<RemoteTranscriber, AsrError> {
        let endpoint = Endpoint::new(
            &cfg.base_url,
            &cfg.api_key,
            "SEESAY_ASR",
            "asr.base_url",
            cfg.timeout_s,
        )
        .map_err(|(url, detail)| AsrError::Remote { url, detail })?
        .at("/audio/transcriptions");
        Ok(RemoteTranscriber {
            endpoint,
            model: env_or("SEESAY_ASR_MODEL", &cfg.remote_model),
            language: cfg.language.clone(),
            silence_rms: cfg.silence_rms,
            no_speech_threshold: cfg.no_speech_threshold,
        })
    }

    fn remote_err(&self, detail: impl Into<String>) -> AsrError {
        AsrError::Remote {
            url: self.endpoint.url.clone(),
            detail: detail.into(),
        }
    }

    /// The form's text fields: the model, `verbose_json` and the language unless "auto".
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("model", self.model.as_str()),
            ("response_format", "verbose_json"),
        ];
        if self.language != "auto" {
            fields.push(("language", self.language.as_str()));
        }
        fields
    }
}

impl Transcriber for RemoteTranscriber {
    fn transcribe(&mut self, samples: &[f32], offset: f64) -> Result<Vec<Segment>, AsrError> {
        // As with Whisper here: silence is not sent (Whisper invents text on it).
        if samples.is_empty() || is_silent(samples, self.silence_rms) {
            return Ok(Vec::new());
        }
        let boundary = boundary();
        let body = multipart(&boundary, &self.fields(), &wav_bytes(samples));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let reply = self
            .endpoint
            .post_bytes(&content_type, &body)
            .map_err(|e| self.remote_err(e))?
            .into_string()
            .map_err(|e| self.remote_err(format!("reading the reply: {e}")))?;
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        segments_of(&reply, offset, secs, self.no_speech_threshold).map_err(|e| self.remote_err(e))
    }

    /// The language is sent with each request; the server says whether it knows it.
    fn set_language(&mut self, language: &str) -> Result<String, AsrError> {
        Ok(std::mem::replace(&mut self.language, language.to_string()))
    }
}

/// 16 kHz mono samples as a 16-bit WAV file.
pub fn wav_bytes(samples: &[f32]) -> Vec<u8> {
    let data = pcm16(samples);
    let mut out = wav_header(SAMPLE_RATE, Some(data.len() as u32));
    out.extend(data);
    out
}

/// A boundary that no WAV file or field holds in practice: 32 random-looking hex digits.
fn boundary() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "seesay{:032x}",
        nanos ^ ((std::process::id() as u128) << 64)
    )
}

/// A multipart/form-data body: the text `fields`, then `wav` as the `file` field.
pub fn multipart(boundary: &str, fields: &[(&str, &str)], wav: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    for (name, value) in fields {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(wav);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The segments of a transcription reply, times offset by `offset` and kept within the window
/// (`secs` long): `verbose_json`'s segments (those the server thinks are not speech dropped), or,
/// from a server that gives none, its `text` as one segment over the whole window.
pub fn segments_of(
    reply: &str,
    offset: f64,
    secs: f64,
    no_speech_threshold: f32,
) -> Result<Vec<Segment>, String> {
    let v: serde_json::Value = serde_json::from_str(reply)
        .map_err(|e| format!("the reply is not JSON ({e}): {reply:.200}"))?;
    let end = offset + secs;
    let Some(list) = v["segments"].as_array() else {
        let text = v["text"]
            .as_str()
            .ok_or_else(|| format!("the reply has neither segments nor text: {reply:.200}"))?;
        return Ok(segment(offset, end, text).into_iter().collect());
    };
    Ok(list
        .iter()
        .filter(|s| {
            s["no_speech_prob"]
                .as_f64()
                .is_none_or(|p| p <= no_speech_threshold as f64)
        })
        .filter_map(|s| {
            let at = |k: &str| (offset + s[k].as_f64().unwrap_or(0.0)).min(end);
            segment(
                at("start"),
                at("end"),
                s["text"].as_str().unwrap_or_default(),
            )
        })
        .collect())
}

/// A segment of trimmed text; none for text with no words.
fn segment(start: f64, end: f64, text: &str) -> Option<Segment> {
    let text = text.trim();
    (!text.is_empty()).then(|| Segment {
        start,
        end: end.max(start),
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::decode_bytes;

    #[test]
    fn a_window_becomes_a_wav_file_that_decodes_to_the_same_samples() {
        let samples: Vec<f32> = (0..1600).map(|i| ((i as f32) * 0.05).sin() * 0.5).collect();
        let wav = wav_bytes(&samples);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 3200);
        assert_eq!(wav.len(), 44 + 3200);
        let back = decode_bytes(wav, "audio.wav", 16_000).unwrap();
        assert_eq!(back.len(), samples.len());
        let worst = back
            .iter()
            .zip(&samples)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-3, "{worst}");
    }

    #[test]
    fn the_form_has_each_field_and_the_file_between_boundaries() {
        let wav = b"RIFF\x00\x01binary\r\n".to_vec();
        let body = multipart("XyZ", &[("model", "whisper-1"), ("language", "en")], &wav);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\n"
        ));
        assert!(text.contains("name=\"language\"\r\n\r\nen\r\n"));
        assert!(text
            .contains("name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n"));
        assert!(body.ends_with(b"\r\n--XyZ--\r\n"));
        // The file's bytes stand whole between its part's head and the closing boundary.
        let at = body.windows(wav.len()).position(|w| w == wav).unwrap();
        assert_eq!(&body[at + wav.len()..], b"\r\n--XyZ--\r\n");
        assert_eq!(text.matches("--XyZ\r\n").count(), 3);
    }

    #[test]
    fn segments_are_offset_clamped_and_silence_dropped() {
        let reply = r#"{"text": "Hi there. Bye.", "segments": [
            {"id": 0, "start": 0.0, "end": 1.2, "text": " Hi there."},
            {"id": 1, "start": 1.2, "end": 2.5, "text": " Bye.", "no_speech_prob": 0.1},
            {"id": 2, "start": 2.5, "end": 9.0, "text": " you", "no_speech_prob": 0.9},
            {"id": 3, "start": 2.5, "end": 2.6, "text": "  "}]}"#;
        let s = segments_of(reply, 10.0, 2.0, 0.6).unwrap();
        let got: Vec<(f64, f64, &str)> = s
            .iter()
            .map(|s| (s.start, s.end, s.text.as_str()))
            .collect();
        assert_eq!(got, [(10.0, 11.2, "Hi there."), (11.2, 12.0, "Bye.")]);
    }

    #[test]
    fn a_reply_without_segments_is_one_segment_of_its_text() {
        let s = segments_of(r#"{"text": " What is the time? "}"#, 5.0, 1.5, 0.6).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start, s[0].end), (5.0, 6.5));
        assert_eq!(s[0].text, "What is the time?");
        assert!(segments_of(r#"{"text": ""}"#, 0.0, 1.0, 0.6)
            .unwrap()
            .is_empty());
        let bad = segments_of("<html>502</html>", 0.0, 1.0, 0.6).unwrap_err();
        assert!(bad.contains("not JSON") && bad.contains("502"), "{bad}");
        assert!(segments_of(r#"{"error": "x"}"#, 0.0, 1.0, 0.6).is_err());
    }

    #[test]
    fn silence_is_not_sent_and_a_server_that_is_not_there_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = AsrConfig {
            backend: "openai".into(),
            base_url: format!("http://127.0.0.1:{port}/v1/"),
            timeout_s: 5,
            ..AsrConfig::default()
        };
        let mut asr = RemoteTranscriber::new(&cfg).unwrap();
        let url = format!("http://127.0.0.1:{port}/v1/audio/transcriptions");
        assert_eq!(asr.endpoint.url, url);
        assert!(asr.transcribe(&[0.0; 16_000], 0.0).unwrap().is_empty());
        let e = asr.transcribe(&[0.3; 16_000], 0.0).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("transcription server at {url}: ")),
            "{e}"
        );
        // The URL is said once.
        assert_eq!(e.matches(&url).count(), 1, "{e}");
        let bad = AsrConfig {
            base_url: "127.0.0.1:8000".into(),
            ..cfg
        };
        assert!(matches!(
            RemoteTranscriber::new(&bad),
            Err(AsrError::Remote { .. })
        ));
    }
}
