//! `seesay say TEXT`: text in, speech out (a WAV file or the speakers); and the speech of the
//! text commands (`chat --speak`, `describe --speak`): sentences in as they are written, spoken
//! one after another on a thread of their own.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use seesay::config::Config;
use seesay::media::wav::write_wav;
use seesay::stages::speaker;
use seesay::stages::tts::{self, TtsError, Voice};
use seesay::store::Store;

#[derive(Debug, Args)]
pub struct SayArgs {
    /// Text to speak. Without it, standard input is read.
    pub text: Option<String>,
    /// Write a WAV file instead of playing on the speakers.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Piper voice: a name from `seesay models list` or an .onnx file.
    #[arg(long)]
    pub voice: Option<String>,
    /// Speaking rate (1 normal, 2 twice as fast).
    #[arg(long)]
    pub rate: Option<f32>,
    /// Output device name for playback (default: the system's).
    #[arg(long, default_value = "")]
    pub device: String,
}

/// Speaking a text answer as it is produced.
#[derive(Debug, Args)]
pub struct SpeechArgs {
    /// Speak the answer on the speakers, sentence by sentence as it is written.
    #[arg(long)]
    pub speak: bool,
    /// Speak the answer into this WAV file instead of the speakers.
    #[arg(long = "speak-to", value_name = "FILE")]
    pub speak_to: Option<PathBuf>,
    /// Output device name for --speak (default: the system's).
    #[arg(long, default_value = "")]
    pub device: String,
}

/// The configured voice, with onnxruntime and espeak-ng set up.
fn voice(cfg: &Config) -> Result<Box<dyn Voice>> {
    Ok(tts::open(&cfg.tts, &Store::from_config(&cfg.models)?)?)
}

pub fn say(mut cfg: Config, a: SayArgs) -> Result<()> {
    if let Some(v) = a.voice {
        cfg.tts.voice = v;
    }
    if let Some(r) = a.rate {
        cfg.tts.rate = r;
    }
    let text = match a.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading text from standard input")?;
            t
        }
    };
    if text.trim().is_empty() {
        bail!("nothing to say: give the text as an argument or on standard input");
    }
    let mut voice = voice(&cfg)?;
    let pcm = tts::speak_all(&mut *voice, &text, cfg.tts.sentence_silence_ms)?;
    let rate = voice.sample_rate();
    match a.output {
        Some(path) => {
            write_wav(&path, &pcm, rate)?;
            eprintln!(
                "wrote {} ({:.1} s of speech)",
                path.display(),
                pcm.len() as f64 / rate as f64
            );
        }
        None => speaker::play(&pcm, rate, &a.device)?,
    }
    Ok(())
}

/// Speech for text commands: a thread that synthesises each sentence as it arrives and plays it,
/// or collects it for a WAV file.
pub struct Speech {
    tx: crossbeam_channel::Sender<String>,
    worker: std::thread::JoinHandle<Result<()>>,
}

impl Speech {
    pub fn start(cfg: &Config, a: &SpeechArgs) -> Result<Option<Speech>> {
        if !a.speak && a.speak_to.is_none() {
            return Ok(None);
        }
        let mut voice = voice(cfg)?;
        let (tx, rx) = crossbeam_channel::bounded::<String>(16);
        let out = a.speak_to.clone();
        let device = a.device.clone();
        let gap_ms = cfg.tts.sentence_silence_ms;
        let worker =
            std::thread::Builder::new()
                .name("tts".into())
                .spawn(move || -> Result<()> {
                    let rate = voice.sample_rate();
                    let mut all = Vec::new();
                    for sentence in rx {
                        let mut failed = None;
                        let spoken = tts::speak(&mut *voice, &sentence, gap_ms, |pcm| match &out {
                            Some(_) => {
                                all.extend(pcm);
                                true
                            }
                            None => match speaker::play(&pcm, rate, &device) {
                                Ok(()) => true,
                                Err(e) => {
                                    failed = Some(e);
                                    false
                                }
                            },
                        });
                        match spoken {
                            Ok(_) | Err(TtsError::NothingToSay) => {}
                            Err(e) => return Err(e.into()),
                        }
                        if let Some(e) = failed {
                            return Err(e.into());
                        }
                    }
                    if let Some(path) = &out {
                        if all.is_empty() {
                            bail!("nothing was said, so {} was not written", path.display());
                        }
                        write_wav(path, &all, rate)?;
                        eprintln!(
                            "wrote {} ({:.1} s of speech)",
                            path.display(),
                            all.len() as f64 / rate as f64
                        );
                    }
                    Ok(())
                })?;
        Ok(Some(Speech { tx, worker }))
    }

    pub fn say(&self, sentence: String) {
        // A failed send means the speech thread stopped with an error, reported by finish().
        let _ = self.tx.send(sentence);
    }

    pub fn finish(self) -> Result<()> {
        drop(self.tx);
        self.worker
            .join()
            .map_err(|_| anyhow::anyhow!("the speech thread panicked"))?
    }
}
