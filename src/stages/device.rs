//! Audio devices through cpal: one place that picks a device by name and converts between the
//! device's sample format and channels and the mono f32 the stages use, in both directions.

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{FromSample, SizedSample};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("no microphone: pass --input FILE to answer a recording instead")]
    NoMicrophone,
    #[error("no audio output device: use `-o FILE.wav` to write the speech to a file instead")]
    NoSpeaker,
    #[error("{what} {name:?} not found (available: {available})")]
    Unknown {
        what: &'static str,
        name: String,
        available: String,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: &'static str, detail: String },
}

/// Which way sound goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    fn what(self) -> &'static str {
        match self {
            Direction::Input => "microphone",
            Direction::Output => "audio output device",
        }
    }

    /// An error of this direction's device.
    pub fn failed(self, detail: impl std::fmt::Display) -> DeviceError {
        DeviceError::Failed {
            what: self.what(),
            detail: detail.to_string(),
        }
    }
}

/// The device called `name`, or the default one for an empty name.
pub fn pick(dir: Direction, name: &str) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    if name.is_empty() {
        let dev = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return dev.ok_or(match dir {
            Direction::Input => DeviceError::NoMicrophone,
            Direction::Output => DeviceError::NoSpeaker,
        });
    }
    let devices = match dir {
        Direction::Input => host.input_devices(),
        Direction::Output => host.output_devices(),
    }
    .map_err(|e| dir.failed(e))?;
    let mut names = Vec::new();
    for d in devices {
        let n = d.description().map(|n| n.to_string()).unwrap_or_default();
        if n == name {
            return Ok(d);
        }
        names.push(n);
    }
    Err(DeviceError::Unknown {
        what: dir.what(),
        name: name.into(),
        available: names.join(", "),
    })
}

/// Sends the ALSA library's own error printing ("cannot find card '0'", "Unknown PCM default",
/// eight lines on a machine with no sound card) to the debug log instead of stderr; seesay says
/// in a line of its own what it found. Call once, before any device is probed.
#[cfg(target_os = "linux")]
pub fn quiet_alsa() {
    use std::ffi::{c_char, c_int, CStr};
    /// ALSA's handler is variadic (printf's arguments follow `fmt`); this one reads none of them,
    /// so it logs the unformatted message.
    unsafe extern "C" fn to_debug_log(
        file: *const c_char,
        line: c_int,
        function: *const c_char,
        err: c_int,
        fmt: *const c_char,
    ) {
        let text = |p: *const c_char| match p.is_null() {
            true => String::new(),
            // SAFETY: ALSA passes NUL-terminated strings (or null) that live for the call.
            false => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
        };
        tracing::debug!(target: "alsa", file = %text(file), line, function = %text(function), err, "{}", text(fmt));
    }
    type Fixed = unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char);
    let handler: Fixed = to_debug_log;
    // SAFETY: on the C ABIs Linux uses, a callee that ignores the variadic arguments after its
    // fixed ones may be called through the variadic type (the usual way Rust programs silence
    // ALSA, as stable Rust cannot define a variadic function); the handler never unwinds.
    unsafe {
        let handler = std::mem::transmute::<
            Fixed,
            unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char, ...),
        >(handler);
        alsa_sys::snd_lib_error_set_handler(Some(handler));
    }
}

/// ALSA is Linux's; elsewhere there is nothing to quiet.
#[cfg(not(target_os = "linux"))]
pub fn quiet_alsa() {}

/// Whether the system has a usable default microphone (ALSA lists a `null` device even with no
/// sound card; it has no input configuration).
pub fn has_microphone() -> bool {
    cpal::default_host()
        .default_input_device()
        .is_some_and(|d| d.default_input_config().is_ok())
}

/// Runs `$build::<T>(args)` with `T` the Rust type of the device's sample format: the one place
/// that maps cpal's formats to sample types.
macro_rules! with_sample_type {
    ($format:expr, $dir:expr, $build:ident($($arg:expr),*)) => {
        match $format {
            cpal::SampleFormat::F32 => $build::<f32>($($arg),*),
            cpal::SampleFormat::I16 => $build::<i16>($($arg),*),
            cpal::SampleFormat::I32 => $build::<i32>($($arg),*),
            cpal::SampleFormat::U16 => $build::<u16>($($arg),*),
            other => return Err($dir.failed(format!("unsupported sample format {other}"))),
        }
    };
}

/// Whether a stream error means the device is gone (the stream has stopped), as opposed to a
/// glitch it goes on after (an underrun, a passing backend error), which is only logged.
pub fn is_fatal(e: &cpal::Error) -> bool {
    matches!(
        e.kind(),
        cpal::ErrorKind::DeviceNotAvailable
            | cpal::ErrorKind::HostUnavailable
            | cpal::ErrorKind::PermissionDenied
    )
}

/// Glitches in one second that mean the stream is not recovering by itself.
const GLITCHES_PER_SECOND: u32 = 20;

/// The stream's error callback: a fatal error goes to `fatal` (which must not block; the thread
/// that owns the stream then ends with it, or opens the device again); a glitch is logged and the
/// stream goes on, unless glitches come so fast that the stream plainly has stopped working (the
/// ALSA pulse plugin can fail every poll with EIO), which is fatal too.
pub fn on_error(
    dir: Direction,
    fatal: impl Fn(String) + Send + 'static,
) -> impl FnMut(cpal::Error) + Send + 'static {
    let mut since = std::time::Instant::now();
    let mut glitches = 0u32;
    move |e: cpal::Error| {
        if is_fatal(&e) {
            return fatal(e.to_string());
        }
        if since.elapsed() > std::time::Duration::from_secs(1) {
            since = std::time::Instant::now();
            glitches = 0;
        }
        glitches += 1;
        match glitches {
            1..=3 => tracing::warn!("{} glitch (going on): {e}", dir.what()),
            GLITCHES_PER_SECOND => fatal(format!("{e}, over and over")),
            _ => {}
        }
    }
}

/// An open device stream and the rate it runs at. Dropping it stops the device.
pub struct Stream {
    pub rate: u32,
    _stream: cpal::Stream,
}

/// The rate `output_stream` will run `dev` at.
pub fn output_rate(dev: &cpal::Device) -> Result<u32, DeviceError> {
    let supported = dev
        .default_output_config()
        .map_err(|e| Direction::Output.failed(e))?;
    Ok(supported.sample_rate())
}

/// Plays on `dev` at its default configuration: `next` gives one mono sample per device frame
/// (every channel gets it). Runs in the device's real-time callback: `next` must not block.
pub fn output_stream(
    dev: &cpal::Device,
    next: impl FnMut() -> f32 + Send + 'static,
    on_err: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<Stream, DeviceError> {
    let dir = Direction::Output;
    let supported = dev.default_output_config().map_err(|e| dir.failed(e))?;
    let config: cpal::StreamConfig = supported.config();
    fn build<T: SizedSample + FromSample<f32>>(
        dev: &cpal::Device,
        config: &cpal::StreamConfig,
        mut next: impl FnMut() -> f32 + Send + 'static,
        on_err: impl FnMut(cpal::Error) + Send + 'static,
    ) -> Result<cpal::Stream, cpal::Error> {
        let channels = (config.channels as usize).max(1);
        dev.build_output_stream::<T, _, _>(
            *config,
            move |out: &mut [T], _| {
                for frame in out.chunks_mut(channels) {
                    let v = T::from_sample(next());
                    frame.iter_mut().for_each(|s| *s = v);
                }
            },
            on_err,
            None,
        )
    }
    let stream = with_sample_type!(
        supported.sample_format(),
        dir,
        build(dev, &config, next, on_err)
    )
    .map_err(|e| dir.failed(e))?;
    start(&stream, dir)?;
    Ok(Stream {
        rate: config.sample_rate,
        _stream: stream,
    })
}

/// Captures from `dev` at its default configuration: `on_data` gets each buffer as mono f32 (the
/// channels averaged). Runs in the device's real-time callback: `on_data` must not block.
pub fn input_stream(
    dev: &cpal::Device,
    on_data: impl FnMut(Vec<f32>) + Send + 'static,
    on_err: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<Stream, DeviceError> {
    let dir = Direction::Input;
    let supported = dev.default_input_config().map_err(|e| dir.failed(e))?;
    let config: cpal::StreamConfig = supported.config();
    fn build<T: SizedSample>(
        dev: &cpal::Device,
        config: &cpal::StreamConfig,
        mut on_data: impl FnMut(Vec<f32>) + Send + 'static,
        on_err: impl FnMut(cpal::Error) + Send + 'static,
    ) -> Result<cpal::Stream, cpal::Error>
    where
        f32: FromSample<T>,
    {
        let channels = (config.channels as usize).max(1);
        dev.build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _| {
                let mono = data
                    .chunks(channels)
                    .map(|f| f.iter().map(|&s| f32::from_sample_(s)).sum::<f32>() / f.len() as f32)
                    .collect();
                on_data(mono);
            },
            on_err,
            None,
        )
    }
    let stream = with_sample_type!(
        supported.sample_format(),
        dir,
        build(dev, &config, on_data, on_err)
    )
    .map_err(|e| dir.failed(e))?;
    start(&stream, dir)?;
    Ok(Stream {
        rate: config.sample_rate,
        _stream: stream,
    })
}

fn start(stream: &cpal::Stream, dir: Direction) -> Result<(), DeviceError> {
    use cpal::traits::StreamTrait;
    stream.play().map_err(|e| dir.failed(e))
}
