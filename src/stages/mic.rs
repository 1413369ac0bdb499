//! Audio sources: a recording (paced in real time, or as fast as the pipeline takes it) or a
//! microphone through cpal. Both send 32 ms frames of 16 kHz mono PCM, stamped with the sample
//! index of their first sample and the moment their last sample was heard.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::device::{self, DeviceError, Direction};
use super::echo::{EchoCanceller, EchoError};
use super::vad::FRAME;
use crate::media::audio::{AudioError, AudioReader, StreamResampler, SAMPLE_RATE};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MicError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Echo(#[from] EchoError),
    #[error("cannot start the audio source thread: {0}")]
    Spawn(std::io::Error),
}

/// A frame of 16 kHz mono audio.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub samples: Vec<f32>,
    /// Sample index (16 kHz) of the first sample since the source started.
    pub start: u64,
    /// When the last sample was captured (or, for a paced file, would have been).
    pub at: Instant,
}

/// How a recording is fed to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One second of audio per second, as a microphone would deliver it.
    Realtime,
    /// As fast as the pipeline takes it.
    Fast,
}

/// Cuts audio into the VAD's frames and sends them to `tx` in order; a failed send (pipeline
/// gone) or `stop` ends the source.
pub struct Framer {
    pending: Vec<f32>,
    next: u64,
    tx: Sender<AudioFrame>,
}

impl Framer {
    pub fn new(tx: Sender<AudioFrame>) -> Framer {
        Framer {
            pending: Vec::new(),
            next: 0,
            tx,
        }
    }

    /// Queues `samples` (16 kHz); `at` gives the capture time of the sample before an index.
    /// Returns false once the pipeline is gone.
    pub fn push(&mut self, samples: &[f32], at: impl Fn(u64) -> Instant) -> bool {
        self.pending.extend_from_slice(samples);
        let mut pos = 0;
        while self.pending.len() - pos >= FRAME {
            let frame = AudioFrame {
                samples: self.pending[pos..pos + FRAME].to_vec(),
                start: self.next,
                at: at(self.next + FRAME as u64),
            };
            self.next += FRAME as u64;
            pos += FRAME;
            if self.tx.send(frame).is_err() {
                return false;
            }
        }
        self.pending.drain(..pos);
        true
    }
}

/// The most silence a paced recording is followed by while the pipeline is still busy.
const MOST_SILENCE_AFTER: Duration = Duration::from_secs(120);
/// How long the pipeline must stay idle before that silence ends.
const SETTLE: Duration = Duration::from_millis(500);

/// Plays a recording into the pipeline, followed by `tail` of silence (so the last answer has
/// time to be heard in the output). Paced in real time, the silence then goes on, as a
/// microphone's would, until `idle()` (nobody speaking, nothing being answered) or
/// `MOST_SILENCE_AFTER`: a question at the very end of a recording is ended and answered as it
/// would be live, and its answer's time is real time (after a short tail it was played out at
/// once, and its first audio counted from the end of the input, before its first token).
/// Errors opening the file come back before the thread starts.
pub fn file_source(
    path: &Path,
    pace: Pace,
    tail: Duration,
    idle: impl Fn() -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
    tx: Sender<AudioFrame>,
) -> Result<JoinHandle<Result<(), MicError>>, MicError> {
    let mut reader = AudioReader::open(path, SAMPLE_RATE)?;
    let handle = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || -> Result<(), MicError> {
            let t0 = Instant::now();
            let mut framer = Framer::new(tx);
            let at = |end: u64| t0 + Duration::from_secs_f64(end as f64 / SAMPLE_RATE as f64);
            let samples = |d: Duration| (d.as_secs_f64() * SAMPLE_RATE as f64) as usize;
            let mut tail_left = Some(samples(tail));
            let mut more_left = match pace {
                Pace::Realtime => samples(MOST_SILENCE_AFTER),
                Pace::Fast => 0,
            };
            let mut idle_since: Option<Instant> = None;
            loop {
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                let chunk = match reader.next_chunk()? {
                    Some(c) => c,
                    None => match tail_left.take() {
                        Some(n) => vec![0.0; n],
                        // Idle for a while, not a moment: a question held back during an
                        // answer starts its turn with the frames after the answer's end.
                        None if more_left > 0
                            && idle_since.is_none_or(|t| t.elapsed() < SETTLE) =>
                        {
                            more_left = more_left.saturating_sub(FRAME);
                            idle_since = match idle() {
                                true => idle_since.or(Some(Instant::now())),
                                false => None,
                            };
                            vec![0.0; FRAME]
                        }
                        None => return Ok(()),
                    },
                };
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    // Cut at frame ends, so each frame goes out the moment its last sample has
                    // "been spoken", as from a microphone. (Pieces of a frame's length that
                    // straddled two frames held each frame back by up to 32 ms: 16 ms on
                    // average added to every end of turn measured on a recording.)
                    let (piece, tail) =
                        rest.split_at((FRAME - framer.pending.len()).min(rest.len()));
                    rest = tail;
                    if pace == Pace::Realtime {
                        // Sleep until this piece has "been spoken".
                        let due = at(framer.next + (framer.pending.len() + piece.len()) as u64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        if stop.load(Ordering::Acquire) {
                            return Ok(());
                        }
                    }
                    if !framer.push(piece, |end| match pace {
                        Pace::Realtime => at(end),
                        Pace::Fast => Instant::now(),
                    }) {
                        return Ok(());
                    }
                }
            }
        })
        .map_err(MicError::Spawn)?;
    Ok(handle)
}

/// Captures from a microphone (empty `name`: the default one), with the speaker's echo taken out
/// by `echo` if given. The cpal callback never blocks:
/// it hands buffers over with `try_send` and counts what it had to drop (`dropped`). The stream
/// lives on the source thread and stops when `stop` is set or the pipeline is gone.
pub fn mic_source(
    name: &str,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    mut echo: Option<EchoCanceller>,
    tx: Sender<AudioFrame>,
) -> Result<JoinHandle<Result<(), MicError>>, MicError> {
    let dev = device::pick(Direction::Input, name)?;
    let (tx_raw, rx_raw) = crossbeam_channel::bounded::<Vec<f32>>(256);
    let (tx_err, rx_err) = crossbeam_channel::bounded::<String>(1);
    let handle = std::thread::Builder::new()
        .name("mic".into())
        .spawn(move || -> Result<(), MicError> {
            let on_err = device::on_error(Direction::Input, move |e| {
                let _ = tx_err.try_send(e);
            });
            // The callback never blocks: a buffer the pipeline has no room for is counted.
            let on_data = move |mono: Vec<f32>| {
                if tx_raw.try_send(mono).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            };
            let stream = device::input_stream(&dev, on_data, on_err)?;
            let mut resampler = StreamResampler::new(stream.rate, SAMPLE_RATE)?;
            let mut framer = Framer::new(tx);
            while !stop.load(Ordering::Acquire) {
                if let Ok(e) = rx_err.try_recv() {
                    return Err(Direction::Input.failed(e).into());
                }
                let raw = match rx_raw.recv_timeout(Duration::from_millis(100)) {
                    Ok(r) => r,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return Err(Direction::Input.failed("the input stream ended").into()),
                };
                let mut pcm = resampler.push(&raw)?;
                if let Some(aec) = &mut echo {
                    pcm = aec.process(&pcm)?;
                }
                if !framer.push(&pcm, |_| Instant::now()) {
                    break;
                }
            }
            drop(stream);
            Ok(())
        })
        .map_err(MicError::Spawn)?;
    Ok(handle)
}
