//! What the machine offers, in one place: the user's folders (home, cache), the CPU thread count,
//! the compute device for candle models and the onnxruntime library. Every stage takes these from
//! here rather than from a sibling.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("onnxruntime library {path} not found: run `seesay models fetch onnxruntime` or set tts.onnxruntime")]
    NoRuntime { path: PathBuf },
    #[error("cannot load onnxruntime from {path}: {detail}")]
    Runtime { path: PathBuf, detail: String },
    #[error(
        "onnxruntime is not loaded yet: load it (host::init_onnxruntime) before any ONNX model"
    )]
    RuntimeNotLoaded,
    #[error("compute device: {0}")]
    Device(String),
}

/// The user's home folder (`$HOME`, else the current folder).
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$SEESAY_CACHE_DIR`, else `$XDG_CACHE_HOME/seesay`, else `~/.cache/seesay`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEESAY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("seesay");
    }
    home().join(".cache").join("seesay")
}

/// Where seesay keeps what it makes for the user (the memory store): `$SEESAY_DATA_DIR`, else
/// `$XDG_DATA_HOME/seesay`, else `~/.local/share/seesay`.
pub fn data_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEESAY_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("seesay");
    }
    home().join(".local").join("share").join("seesay")
}

/// Expands a leading `~/` to the home folder.
pub fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(path),
    }
}

/// How much lower than listening (the VAD, the recogniser) the work that can wait a little runs:
/// writing an answer (llama-server) and speaking it (the voice's thread); between themselves they
/// share as before. Speech heard while an answer is written and spoken must be transcribed at
/// once (to stop the answer within 300 ms): on two cores, beside the model and the voice at the
/// same priority, 0.4 s of it took whisper.cpp 0.7-1.9 s (its threads wait on each other at
/// every step, and were preempted); at nice 10 below it, 100-140 ms.
pub const BACKGROUND_NICE: i32 = 10;

/// Makes `cmd`'s process (a helper server) die with the thread that starts it (with seesay,
/// however seesay ends) and run at `BACKGROUND_NICE`.
pub fn background_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and setpriority are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Lowering is always allowed; if refused anyway, it runs as before.
            libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE);
            Ok(())
        });
    }
}

/// Lowers the calling thread's priority by `BACKGROUND_NICE` (threads it starts later inherit
/// it). Lowering is always allowed; if the kernel refuses anyway, the thread runs as before.
pub fn lower_this_thread() {
    // SAFETY: plain system calls on the calling thread (on Linux a thread id names one thread).
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE)
    };
    if done != 0 {
        tracing::debug!(
            "could not lower the thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A thread left at the priority of the thread that started it, for the one step of lowered
/// work that must not wait: the first audio of an answer, synthesised while the language model
/// (at `BACKGROUND_NICE`, like the voice's thread) writes the rest. At equal priority the two
/// shared the cores and a first phrase took 180-200 ms instead of 110-120 ms. (A lowered
/// thread may not raise itself again without privileges: hence a thread of its own.)
pub struct Unlowered {
    tx: crossbeam_channel::Sender<Box<dyn FnOnce() + Send>>,
}

impl Unlowered {
    /// Starts the thread (call it before lowering the calling thread). It ends when this is
    /// dropped.
    pub fn start(name: &str) -> std::io::Result<Unlowered> {
        let (tx, rx) = crossbeam_channel::bounded::<Box<dyn FnOnce() + Send>>(1);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rx.into_iter().for_each(|job| job()))?;
        Ok(Unlowered { tx })
    }

    /// Runs `job` on the thread and waits for its result (run here if the thread is gone).
    pub fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = crossbeam_channel::bounded(1);
        let job = Box::new(move || {
            let _ = done.send(job());
        });
        if let Err(crossbeam_channel::SendError(job)) = self.tx.send(job) {
            job();
        }
        result.recv().expect("the job sends its result")
    }
}

/// Caps glibc's malloc at two arenas. By default each thread that allocates while the others
/// hold theirs gets an arena of its own, up to eight per core, and memory freed in one stays
/// there: a server whose conversations come and go (each with its own stage threads) grew by
/// 15-20 MB steps as new arenas filled, +15 % in ten minutes of `scripts/soak`. Called first
/// thing in `main`, before any thread starts. (glibc's thresholds for handing memory back are
/// left to adapt: fixed at 256 KiB and 1 MiB they made the soak's RSS steady, but every Piper
/// synthesis then mapped its large buffers afresh, 55 % slower: 340-385 ms for the benchmark's
/// first sentence instead of 206-208. The server trims instead: `give_back_freed_memory`.)
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes a malloc setting; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory that was freed back to the system (glibc keeps freed memory in its arenas,
/// to be used again, and returns only what lies at an arena's top): called when a conversation
/// has ended and its stages are gone, and by the server when it falls idle and every half
/// minute, so what it used does not stay counted in its RSS.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The CPU cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How the process shares its cores between the stages, so that stages running at the same
/// time do not ask for more threads than there are cores (ggml's and onnxruntime's workers spin
/// while they wait: two stages each asking for every core run many times slower than one).
/// The speech recogniser and the language model's prefill run one after the other at the end of
/// a turn, each on every core; the voice speaks while the language model writes, so it gets half
/// the cores (one of two); the VAD takes one 32 ms frame at a time on one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub asr: usize,
    pub llm: usize,
    pub tts: usize,
    pub vad: usize,
}

impl Budget {
    pub fn for_cores(cores: usize) -> Budget {
        let cores = cores.max(1);
        Budget {
            asr: cores,
            llm: cores,
            tts: (cores / 2).max(1),
            vad: 1,
        }
    }

    /// The split of this machine's cores.
    pub fn machine() -> Budget {
        Budget::for_cores(cores())
    }

    /// The split when several conversations and requests run at once (`seesay serve`): the
    /// recogniser and the language model then run at the same time too, so they share the cores
    /// instead of each taking all of them. ggml's workers meet at a barrier after every step;
    /// with more of them than cores, each barrier waits for a descheduled thread, and a 0.3 s
    /// transcription took 8 s in the four-conversation test.
    pub fn serving(cores: usize) -> Budget {
        let cores = cores.max(1);
        let asr = (cores / 2).max(1);
        Budget {
            asr,
            llm: (cores - asr).max(1),
            tts: 1,
            vad: 1,
        }
    }
}

/// A stage's thread count: `configured`, or its `share` of the budget when 0. More threads than
/// cores only slow everything down: such a setting is capped at the core count, with a warning
/// (once).
pub fn thread_count(configured: usize, share: usize) -> usize {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let cores = cores();
    match configured {
        0 => share.clamp(1, cores),
        n if n > cores => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "{n} threads asked for, but this machine has {cores} cores: using {cores}"
                );
            }
            cores
        }
        n => n,
    }
}

/// The device candle models run on: the first CUDA GPU in a `cuda` build, the CPU otherwise.
pub fn compute_device() -> Result<candle_core::Device, HostError> {
    if cfg!(feature = "cuda") {
        candle_core::Device::cuda_if_available(0).map_err(|e| HostError::Device(e.to_string()))
    } else {
        Ok(candle_core::Device::Cpu)
    }
}

static ORT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Loads onnxruntime once per process. A missing or old library is an error here, not a hang
/// (the `ort` crate's dynamic loading deadlocks on a library older than 1.24).
pub fn init_onnxruntime(path: &Path) -> Result<(), HostError> {
    if !path.is_file() {
        return Err(HostError::NoRuntime { path: path.into() });
    }
    ORT.get_or_init(|| {
        ort::init_from(path)
            .map_err(|e| e.to_string())?
            .with_name("seesay")
            .commit();
        Ok(path.to_path_buf())
    })
    .clone()
    .map(|_| ())
    .map_err(|detail| HostError::Runtime {
        path: path.into(),
        detail,
    })
}

/// Fails unless onnxruntime has been loaded: every ONNX model (voice, VAD) checks this first, so
/// none depends on another having set it up.
pub fn onnxruntime_loaded() -> Result<(), HostError> {
    match ORT.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(detail)) => Err(HostError::Runtime {
            path: PathBuf::new(),
            detail: detail.clone(),
        }),
        None => Err(HostError::RuntimeNotLoaded),
    }
}

/// The onnxruntime library the user chose: `configured` (a path), else `$ORT_DYLIB_PATH`; `None`
/// means the model store's copy.
pub fn onnxruntime_override(configured: &str) -> Option<PathBuf> {
    if !configured.is_empty() {
        return Some(expand_home(configured));
    }
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_means_the_budget_and_too_many_are_capped() {
        assert_eq!(thread_count(1, 5), 1);
        assert_eq!(thread_count(0, 1), 1);
        assert_eq!(thread_count(0, 1000), cores());
        assert_eq!(thread_count(cores() + 3, 1), cores());
    }

    #[test]
    fn two_cores_are_not_oversubscribed() {
        let b = Budget::for_cores(2);
        // The recogniser and the model's prefill each get both cores (they run one after the
        // other); the voice gets one.
        assert_eq!((b.asr, b.llm, b.tts, b.vad), (2, 2, 1, 1));
        assert_eq!(Budget::for_cores(8).tts, 4);
        assert_eq!(
            Budget::for_cores(1),
            Budget {
                asr: 1,
                llm: 1,
                tts: 1,
                vad: 1
            }
        );
    }

    #[test]
    fn a_lowered_thread_runs_its_urgent_step_unlowered() {
        fn nice() -> i32 {
            // SAFETY: plain system calls on the calling thread.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        }
        std::thread::spawn(|| {
            let before = nice();
            let unlowered = Unlowered::start("test-unlowered").unwrap();
            lower_this_thread();
            let lowered = nice();
            let (name, theirs) = unlowered.run(|| {
                let name = std::thread::current().name().map(str::to_string);
                (name, nice())
            });
            assert_eq!(name.as_deref(), Some("test-unlowered"));
            assert_eq!(
                theirs, before,
                "the step runs at the priority before lowering"
            );
            if before + BACKGROUND_NICE <= 19 {
                assert_eq!(lowered, before + BACKGROUND_NICE);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        assert_eq!(expand_home("/a/~/b"), PathBuf::from("/a/~/b"));
        assert_eq!(expand_home("~/x"), home().join("x"));
    }
}
