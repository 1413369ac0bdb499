//! A remote voice: one sentence in, sent as JSON to any OpenAI-compatible
//! `{base_url}/audio/speech` (another `seesay serve`, speaches, LocalAI, OpenAI), its audio out
//! as mono f32 at OpenAI's `pcm` rate (16-bit little-endian, 24 kHz).

use std::io::Read;

use super::{TtsConfig, TtsError, Voice};
use crate::media::audio::{decode_bytes, from_pcm16};
use crate::stages::openai::{env_or, Endpoint};

/// OpenAI's `pcm` response format: 16-bit little-endian mono at 24 kHz (seesay's server sends the
/// same).
pub const PCM_RATE: u32 = 24_000;

/// The most audio one sentence may bring back: ten minutes of it.
const MAX_BYTES: u64 = PCM_RATE as u64 * 2 * 600;

/// A client of an OpenAI-compatible speech server.
pub struct RemoteVoice {
    endpoint: Endpoint,
    model: String,
    voice: String,
    rate: f32,
}

impl RemoteVoice {
    /// Checks the URL and the rate; the server is not contacted until the first sentence.
    pub fn new(cfg: &TtsConfig) -> Result<RemoteVoice, TtsError> {
        if !(0.25..=4.0).contains(&cfg.rate) {
            return Err(TtsError::Rate(cfg.rate));
        }
        let endpoint = Endpoint::new(
            &cfg.base_url,
            &cfg.api_key,
            "SEESAY_TTS",
            "tts.base_url",
            cfg.timeout_s,
        )
        .map_err(|(url, detail)| TtsError::Remote { url, detail })?
        .at("/audio/speech");
        Ok(RemoteVoice {
            endpoint,
            model: env_or("SEESAY_TTS_MODEL", &cfg.remote_model),
            voice: env_or("SEESAY_TTS_VOICE", &cfg.remote_voice),
            rate: cfg.rate,
        })
    }

    /// The request for one sentence; `speed` only when it is not the voice's own pace (not
    /// every server knows it).
    pub fn request_body(&self, sentence: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.model,
            "input": sentence,
            "voice": self.voice,
            "response_format": "pcm",
        });
        if self.rate != 1.0 {
            body["speed"] = self.rate.into();
        }
        body
    }

    fn remote_err(&self, detail: impl Into<String>) -> TtsError {
        TtsError::Remote {
            url: self.endpoint.url.clone(),
            detail: detail.into(),
        }
    }
}

impl Voice for RemoteVoice {
    fn sample_rate(&self) -> u32 {
        PCM_RATE
    }

    fn synthesize(&mut self, sentence: &str) -> Result<Vec<f32>, TtsError> {
        // Text with nothing to say (a lone "..."): servers refuse it; here it is silence.
        if !sentence.chars().any(char::is_alphanumeric) {
            return Ok(Vec::new());
        }
        let resp = self
            .endpoint
            .post(&self.request_body(sentence))
            .map_err(|e| self.remote_err(e))?;
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| self.remote_err(format!("reading the audio: {e}")))?;
        decode_speech(bytes).map_err(|e| self.remote_err(e))
    }

    fn set_rate(&mut self, rate: f32) -> f32 {
        std::mem::replace(&mut self.rate, rate.clamp(0.25, 4.0))
    }
}

/// The audio of a speech reply at `PCM_RATE`: raw 16-bit little-endian PCM as asked for, or a
/// WAV file from a server that sends one anyway (resampled to `PCM_RATE`).
pub fn decode_speech(bytes: Vec<u8>) -> Result<Vec<f32>, String> {
    if bytes.starts_with(b"RIFF") {
        return decode_bytes(bytes, "speech.wav", PCM_RATE)
            .map_err(|e| format!("the audio is a WAV file that does not decode: {e}"));
    }
    let n = bytes.len();
    from_pcm16(&bytes)
        .ok_or_else(|| format!("{n} bytes is not 16-bit PCM (an odd count): was it cut off?"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::pcm16;
    use crate::media::wav::wav_header;

    #[test]
    fn pcm_is_16_bit_little_endian() {
        let pcm = decode_speech(vec![0x00, 0x00, 0xff, 0x7f, 0x00, 0x80, 0x00, 0x40]).unwrap();
        assert_eq!(pcm.len(), 4);
        assert_eq!(pcm[0], 0.0);
        assert!((pcm[1] - 1.0).abs() < 1e-4, "{}", pcm[1]);
        assert!((pcm[2] + 1.0).abs() < 1e-4, "{}", pcm[2]);
        assert!((pcm[3] - 0.5).abs() < 1e-4, "{}", pcm[3]);
        assert!(decode_speech(Vec::new()).unwrap().is_empty());
        let odd = decode_speech(vec![1, 2, 3]).unwrap_err();
        assert!(odd.contains("3 bytes"), "{odd}");
    }

    #[test]
    fn a_wav_reply_is_decoded_at_the_pcm_rate() {
        // 0.1 s of a 440 Hz tone at 16 kHz: 0.1 s at 24 kHz once decoded.
        let tone: Vec<f32> = (0..1600)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.5)
            .collect();
        let data = pcm16(&tone);
        let mut wav = wav_header(16_000, Some(data.len() as u32));
        wav.extend(data);
        let pcm = decode_speech(wav).unwrap();
        assert!((pcm.len() as i64 - 2400).abs() <= 48, "{}", pcm.len());
        let peak = pcm.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.4..0.6).contains(&peak), "{peak}");
    }

    #[test]
    fn the_request_asks_for_pcm_and_speed_only_when_changed() {
        let cfg = TtsConfig {
            backend: "openai".into(),
            base_url: "http://127.0.0.1:1/v1/".into(),
            ..TtsConfig::default()
        };
        let mut voice = RemoteVoice::new(&cfg).unwrap();
        assert_eq!(voice.endpoint.url, "http://127.0.0.1:1/v1/audio/speech");
        assert_eq!(voice.sample_rate(), 24_000);
        let body = voice.request_body("Hello there.");
        assert_eq!(body["input"], "Hello there.");
        assert_eq!(body["response_format"], "pcm");
        assert_eq!(body["model"], "tts-1");
        assert_eq!(body["voice"], "alloy");
        assert!(body.get("speed").is_none());
        assert_eq!(voice.set_rate(2.0), 1.0);
        assert_eq!(voice.request_body("Hi.")["speed"], 2.0);
        assert!(voice.synthesize(" ... ").unwrap().is_empty());
        let bad = TtsConfig {
            rate: 9.0,
            ..cfg.clone()
        };
        assert!(matches!(RemoteVoice::new(&bad), Err(TtsError::Rate(_))));
    }

    #[test]
    fn a_server_that_is_not_there_is_a_clear_error() {
        let cfg = TtsConfig {
            backend: "openai".into(),
            base_url: format!("http://127.0.0.1:{}/v1", closed_port()),
            timeout_s: 5,
            ..TtsConfig::default()
        };
        let mut voice = RemoteVoice::new(&cfg).unwrap();
        let e = voice.synthesize("Hello.").unwrap_err().to_string();
        assert!(
            e.starts_with("speech server at http://127.0.0.1:") && e.contains("/v1/audio/speech: "),
            "{e}"
        );
    }

    /// A local port with nothing listening on it.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
}
