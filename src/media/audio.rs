//! Audio files in, mono f32 PCM at the rate a stage wants out (and WAV files back out).
//!
//! Decoding is symphonia (WAV, FLAC, MP3, OGG/Vorbis); resampling is rubato. `AudioReader` yields
//! the file in chunks, so long recordings never sit in memory whole.

use std::fs::File;
use std::path::{Path, PathBuf};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The rate of speech everywhere in seesay: the microphone, the VAD and Whisper all take 16 kHz
/// mono.
pub const SAMPLE_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the file is empty")]
    Empty(PathBuf),
    #[error("{0}: not a recognised audio file (WAV, FLAC, MP3 or OGG/Vorbis expected)")]
    Unrecognised(PathBuf),
    #[error("{path}: cannot decode audio: {detail}")]
    Decode { path: PathBuf, detail: String },
    #[error("{0}: contains no audio samples")]
    NoSamples(PathBuf),
    #[error("cannot resample from {from} Hz to {to} Hz: {detail}")]
    Resample { from: u32, to: u32, detail: String },
    #[error("cannot write {path}: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// Streams an audio file as mono f32 chunks at `rate` Hz.
pub struct AudioReader {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    /// The file's own sample rate and channel count.
    pub source_rate: u32,
    pub source_channels: usize,
    resampler: Option<Resampling>,
    frames_in: u64,
    frames_out: u64,
    done: bool,
    /// Undecodable packets skipped, in all and since the last good one.
    skipped: u32,
    skipped_in_row: u32,
}

/// A stream with this many undecodable packets in a row is not audio worth reading on.
const MAX_BAD_PACKETS_IN_ROW: u32 = 20;

struct Resampling {
    inner: FftFixedIn<f32>,
    pending: Vec<f32>,
    to_skip: usize,
    ratio: f64,
}

impl AudioReader {
    /// Opens `path`, probing its container, and prepares resampling to `rate` Hz.
    pub fn open(path: &Path, rate: u32) -> Result<AudioReader, AudioError> {
        let open_err = |source| AudioError::Open {
            path: path.into(),
            source,
        };
        let source: Box<dyn symphonia::core::io::MediaSource> = if path.as_os_str() == "-" {
            // Standard input: read whole (a pipe cannot seek), then decoded like a file.
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(open_err)?;
            if bytes.is_empty() {
                return Err(AudioError::Empty(path.into()));
            }
            Box::new(std::io::Cursor::new(bytes))
        } else {
            let file = File::open(path).map_err(open_err)?;
            if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
                return Err(AudioError::Empty(path.into()));
            }
            Box::new(file)
        };
        AudioReader::from_source(source, path, rate)
    }

    /// Decodes audio already in memory (an upload); `name` (the client's file name) names it in
    /// errors and hints at its format. Nothing touches the disk.
    pub fn from_bytes(bytes: Vec<u8>, name: &str, rate: u32) -> Result<AudioReader, AudioError> {
        if bytes.is_empty() {
            return Err(AudioError::Empty(name.into()));
        }
        AudioReader::from_source(Box::new(std::io::Cursor::new(bytes)), Path::new(name), rate)
    }

    fn from_source(
        mut source: Box<dyn symphonia::core::io::MediaSource>,
        path: &Path,
        rate: u32,
    ) -> Result<AudioReader, AudioError> {
        super::riff::check_wav_header(&mut source).map_err(|detail| AudioError::Decode {
            path: path.into(),
            detail,
        })?;
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        // symphonia panics on some damaged headers: a damaged file, not a crash.
        let probed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            symphonia::default::get_probe().format(
                &hint,
                mss,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
        }))
        .map_err(|_| AudioError::Decode {
            path: path.into(),
            detail: "the file's header is damaged".into(),
        })?
        .map_err(|e| match e {
            SymError::Unsupported(_) => AudioError::Unrecognised(path.into()),
            other => AudioError::Decode {
                path: path.into(),
                detail: other.to_string(),
            },
        })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| AudioError::NoSamples(path.into()))?;
        let params = track.codec_params.clone();
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| AudioError::Decode {
                path: path.into(),
                detail: e.to_string(),
            })?;
        let source_rate = params.sample_rate.ok_or_else(|| AudioError::Decode {
            path: path.into(),
            detail: "the stream does not say its sample rate".into(),
        })?;
        // A damaged header can claim any rate; the resampler would size itself by it.
        if !(1_000..=768_000).contains(&source_rate) {
            return Err(AudioError::Decode {
                path: path.into(),
                detail: format!("a sample rate of {source_rate} Hz is not audio seesay reads"),
            });
        }
        let source_channels = params.channels.map(|c| c.count()).unwrap_or(1).max(1);
        let resampler = if source_rate == rate {
            None
        } else {
            let inner = FftFixedIn::<f32>::new(source_rate as usize, rate as usize, 1024, 2, 1)
                .map_err(|e| AudioError::Resample {
                    from: source_rate,
                    to: rate,
                    detail: e.to_string(),
                })?;
            Some(Resampling {
                to_skip: inner.output_delay(),
                inner,
                pending: Vec::new(),
                ratio: rate as f64 / source_rate as f64,
            })
        };
        Ok(AudioReader {
            path: path.into(),
            track: track.id,
            format,
            decoder,
            source_rate,
            source_channels,
            resampler,
            frames_in: 0,
            frames_out: 0,
            done: false,
            skipped: 0,
            skipped_in_row: 0,
        })
    }

    /// Next chunk of mono samples at the target rate; `None` at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        while !self.done {
            let mono = match self.decode_packet()? {
                Some(m) => m,
                None => {
                    self.done = true;
                    let tail = self.flush()?;
                    if self.frames_in == 0 {
                        return Err(AudioError::NoSamples(self.path.clone()));
                    }
                    return Ok((!tail.is_empty()).then_some(tail));
                }
            };
            self.frames_in += mono.len() as u64;
            let out = match &mut self.resampler {
                None => mono,
                Some(r) => r.push(&mono, false).map_err(|d| self.resample_err(d))?,
            };
            if !out.is_empty() {
                self.frames_out += out.len() as u64;
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Reads the rest of the file into one buffer.
    pub fn read_all(mut self) -> Result<Vec<f32>, AudioError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            all.extend(chunk);
        }
        Ok(all)
    }

    fn resample_err(&self, detail: String) -> AudioError {
        AudioError::Resample {
            from: self.source_rate,
            to: (self.source_rate as f64 * self.resampler.as_ref().map_or(1.0, |r| r.ratio)) as u32,
            detail,
        }
    }

    fn flush(&mut self) -> Result<Vec<f32>, AudioError> {
        let Some(r) = &mut self.resampler else {
            return Ok(Vec::new());
        };
        let wanted = (self.frames_in as f64 * r.ratio).round() as u64;
        let mut out = r.push(&[], true).map_err(|d| self.resample_err(d))?;
        let have = self.frames_out + out.len() as u64;
        out.truncate(
            out.len()
                .saturating_sub(have.saturating_sub(wanted) as usize),
        );
        self.frames_out += out.len() as u64;
        Ok(out)
    }

    /// Decodes packets until one yields samples; downmixes them to mono.
    fn decode_packet(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None)
                }
                Err(SymError::ResetRequired) => return Ok(None),
                Err(e) => {
                    return Err(AudioError::Decode {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })
                }
            };
            if packet.track_id() != self.track {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                // A damaged packet is skipped, as players do; a broken stream fails below.
                // Said once per file, not once per packet: a non-audio upload would otherwise
                // flood the log; a stream that is all damage fails.
                Err(SymError::DecodeError(e)) => {
                    self.skipped += 1;
                    self.skipped_in_row += 1;
                    if self.skipped == 1 {
                        tracing::warn!(path = %self.path.display(), "skipping undecodable packets: {e}");
                    }
                    if self.skipped_in_row >= MAX_BAD_PACKETS_IN_ROW {
                        return Err(AudioError::Decode {
                            path: self.path.clone(),
                            detail: format!(
                                "{MAX_BAD_PACKETS_IN_ROW} packets in a row cannot be decoded ({e})"
                            ),
                        });
                    }
                    continue;
                }
                Err(e) => {
                    return Err(AudioError::Decode {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })
                }
            };
            self.skipped_in_row = 0;
            if decoded.frames() == 0 {
                continue;
            }
            let spec = *decoded.spec();
            let channels = spec.channels.count().max(1);
            let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
            buf.copy_interleaved_ref(decoded);
            let mono = buf
                .samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32)
                // A float file may hold anything: NaN and infinities become silence (they
                // would poison the resampler), and the rest is kept within full scale.
                .map(|v: f32| {
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
                .collect();
            return Ok(Some(mono));
        }
    }
}

impl Resampling {
    /// Feeds samples through the fixed-size resampler; `last` pads and drains the tail.
    fn push(&mut self, samples: &[f32], last: bool) -> Result<Vec<f32>, String> {
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        let mut pos = 0;
        while self.pending.len() - pos >= self.inner.input_frames_next() {
            let n = self.inner.input_frames_next();
            let res = self
                .inner
                .process(&[&self.pending[pos..pos + n]], None)
                .map_err(|e| e.to_string())?;
            out.extend_from_slice(&res[0]);
            pos += n;
        }
        self.pending.drain(..pos);
        if last {
            // Pad the remainder, then push silence until the delayed tail is out.
            // (rubato refuses an empty partial block: input that was a multiple of 1024 samples.)
            let rest = std::mem::take(&mut self.pending);
            if !rest.is_empty() {
                let res = self
                    .inner
                    .process_partial(Some(&[rest.as_slice()]), None)
                    .map_err(|e| e.to_string())?;
                out.extend_from_slice(&res[0]);
            }
            // Two blocks of silence push the whole delayed tail out; callers trim the excess.
            for _ in 0..2 {
                let res = self
                    .inner
                    .process_partial::<&[f32]>(None, None)
                    .map_err(|e| e.to_string())?;
                out.extend_from_slice(&res[0]);
            }
        }
        let skip = self.to_skip.min(out.len());
        self.to_skip -= skip;
        out.drain(..skip);
        Ok(out)
    }
}

/// A streaming resampler for live audio (microphone in, speaker out): chunks in, chunks out.
pub struct StreamResampler {
    inner: Option<Resampling>,
    from: u32,
    to: u32,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<StreamResampler, AudioError> {
        let inner = if from == to {
            None
        } else {
            let r =
                FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1).map_err(|e| {
                    AudioError::Resample {
                        from,
                        to,
                        detail: e.to_string(),
                    }
                })?;
            Some(Resampling {
                to_skip: r.output_delay(),
                inner: r,
                pending: Vec::new(),
                ratio: to as f64 / from as f64,
            })
        };
        Ok(StreamResampler { inner, from, to })
    }

    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, AudioError> {
        match &mut self.inner {
            None => Ok(samples.to_vec()),
            Some(r) => r
                .push(samples, false)
                .map_err(|detail| AudioError::Resample {
                    from: self.from,
                    to: self.to,
                    detail,
                }),
        }
    }
}

/// Resamples a whole mono buffer from `from` Hz to `to` Hz.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let err = |detail: String| AudioError::Resample { from, to, detail };
    let inner = FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1)
        .map_err(|e| err(e.to_string()))?;
    let mut r = Resampling {
        to_skip: inner.output_delay(),
        inner,
        pending: Vec::new(),
        ratio: to as f64 / from as f64,
    };
    let mut out = r.push(samples, true).map_err(err)?;
    out.truncate((samples.len() as f64 * r.ratio).round() as usize);
    Ok(out)
}

/// Decodes a whole file to mono f32 at `rate` Hz.
pub fn read_file(path: &Path, rate: u32) -> Result<Vec<f32>, AudioError> {
    AudioReader::open(path, rate)?.read_all()
}

/// Decodes audio held in memory (`name`: what errors call it, and a hint at its format) to mono
/// f32 at `rate` Hz.
pub fn decode_bytes(bytes: Vec<u8>, name: &str, rate: u32) -> Result<Vec<f32>, AudioError> {
    AudioReader::from_bytes(bytes, name, rate)?.read_all()
}

/// Mono f32 samples as 16-bit little-endian PCM bytes (what WAV data, Wyoming and the
/// WebSocket conversation carry).
pub fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}

/// 16-bit little-endian PCM bytes as f32 samples; `None` for an odd byte count.
pub fn from_pcm16(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(2).then(|| {
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect()
    })
}

/// Root mean square of a block of samples.
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a WAV header claiming 4294959296 Hz made the resampler allocate
    /// gigabytes; a float WAV holding NaN made it panic.
    #[test]
    fn impossible_rates_and_nan_samples_are_handled() {
        let wav = |rate: u32, format: u16, bits: u16, data: &[u8]| {
            let mut b = b"RIFF".to_vec();
            b.extend((36 + data.len() as u32).to_le_bytes());
            b.extend(b"WAVEfmt ");
            b.extend(16u32.to_le_bytes());
            b.extend(format.to_le_bytes());
            b.extend(1u16.to_le_bytes());
            b.extend(rate.to_le_bytes());
            b.extend((rate.wrapping_mul(bits as u32 / 8)).to_le_bytes());
            b.extend((bits / 8).to_le_bytes());
            b.extend(bits.to_le_bytes());
            b.extend(b"data");
            b.extend((data.len() as u32).to_le_bytes());
            b.extend(data);
            b
        };
        let err = decode_bytes(wav(4_294_959_296, 1, 16, &[0; 64]), "x.wav", 16_000).unwrap_err();
        assert!(err.to_string().contains("sample rate"), "{err}");
        let nan: Vec<u8> = [f32::NAN, f32::INFINITY, 0.5, -7.0]
            .iter()
            .cycle()
            .take(4000)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let pcm = decode_bytes(wav(22_050, 3, 32, &nan), "x.wav", 16_000).unwrap();
        assert!(pcm.iter().all(|v| v.is_finite() && v.abs() <= 1.5));
    }

    /// A 16-bit WAV written by hound (seesay's own writer lives a layer above, in `wav.rs`).
    fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<(), hound::Error> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec)?;
        for s in samples {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        w.finalize()
    }

    fn tone(rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampling_keeps_length_and_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        write_wav(&path, &tone(44_100, 2.0), 44_100).unwrap();
        let out = read_file(&path, 16_000).unwrap();
        assert_eq!(out.len(), 32_000);
        let level = rms(&out[1000..31_000]);
        assert!((level - 0.5 / 2f32.sqrt()).abs() < 0.02, "rms {level}");
    }

    #[test]
    fn a_multiple_of_the_block_size_resamples() {
        let x = vec![0.1f32; 4096];
        let y = resample(&x, 22_050, 16_000).unwrap();
        assert!((y.len() as i64 - 2972).abs() <= 1, "{}", y.len());
    }

    #[test]
    fn same_rate_passes_samples_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let t = tone(16_000, 0.5);
        write_wav(&path, &t, 16_000).unwrap();
        let out = read_file(&path, 16_000).unwrap();
        assert_eq!(out.len(), t.len());
        assert!((out[100] - t[100]).abs() < 1e-3);
    }

    #[test]
    fn garbage_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e.wav");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            read_file(&empty, 16_000),
            Err(AudioError::Empty(_))
        ));
        let junk = dir.path().join("j.bin");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = read_file(&junk, 16_000).unwrap_err();
        assert!(matches!(err, AudioError::Unrecognised(_)), "{err}");
    }
}
