//! What the benchmarks share: the median and 95th percentile of a set of measurements, the
//! voice that asks their spoken questions, and the paragraph the voice benchmarks synthesise.

use anyhow::{Context, Result};

use seesay::config::Config;
use seesay::media::audio::{self, SAMPLE_RATE};
use seesay::stages::tts::{self, Voice};
use seesay::store::Store;

/// The paragraph synthesised by the TTS benchmark (fixed, so runs compare).
pub const TTS_PARAGRAPH: &str = "The quick brown fox jumps over the lazy dog. \
On the third of March, 2024, about 1,250 people gathered in the square to watch the eclipse. \
Would you like me to read the rest of the article, or shall we stop here? \
Speech synthesis has come a long way since the first talking machines.";

/// Median of a set of measurements.
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// 95th percentile (nearest rank) of a set of measurements.
pub fn p95(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((0.95 * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// The voice that asks benchmark questions: espeak-ng (Debian's `espeak-ng` command, a voice
/// unlike Piper's) or Piper; 16 kHz audio out.
pub(super) struct QuestionVoice {
    piper: Option<Box<dyn Voice>>,
    /// Where espeak-ng writes (a file of this process's own, removed when dropped).
    wav: tempfile::TempPath,
}

impl QuestionVoice {
    pub fn new(cfg: &Config, name: &str) -> Result<QuestionVoice> {
        let piper = match name {
            "piper" => Some(tts::open_piper(
                &cfg.tts,
                &Store::from_config(&cfg.models)?,
            )?),
            "espeak" => None,
            other => anyhow::bail!("unknown --voice {other:?}: use espeak or piper"),
        };
        Ok(QuestionVoice {
            piper: piper.map(|v| Box::new(v) as Box<dyn Voice>),
            wav: tempfile::Builder::new()
                .prefix("seesay-question-")
                .suffix(".wav")
                .tempfile()
                .context("cannot create a file for espeak-ng's recording")?
                .into_temp_path(),
        })
    }

    pub fn say(&mut self, text: &str) -> Result<Vec<f32>> {
        self.say_at(text, 1.0)
    }

    /// `text` spoken `speed` times as fast as the voice's normal pace.
    pub fn say_at(&mut self, text: &str, speed: f32) -> Result<Vec<f32>> {
        if let Some(v) = &mut self.piper {
            let before = v.set_rate(speed);
            let pcm = v.synthesize(text);
            v.set_rate(before);
            return Ok(audio::resample(&pcm?, v.sample_rate(), SAMPLE_RATE)?);
        }
        let wav: &std::path::Path = &self.wav;
        let wpm = (165.0 * speed).round().to_string();
        let status = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", &wpm, "-w"])
            .arg(wav)
            .arg(text)
            .status()
            .context("cannot run espeak-ng (Debian package espeak-ng; scripts/setup --test installs it), or use --voice piper")?;
        anyhow::ensure!(status.success(), "espeak-ng failed on {text:?}");
        Ok(audio::read_file(wav, SAMPLE_RATE)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(super::p95(&mut [5.0, 1.0, 3.0, 2.0, 4.0]), 5.0);
    }
}
