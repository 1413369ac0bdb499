//! The pipeline benchmark through `seesay serve`: the server is started for the run (this
//! binary, the same configuration, its own port), one client holds a WebSocket conversation
//! (`/v1/conversation`) and speaks the questions in real time, 20 ms a message, and the answers'
//! first audio is timed where the client receives it, from the end of the question's speech
//! (the server's own figures come with each `turn_done`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use seesay::config::Config;
use seesay::media::audio::{pcm16, SAMPLE_RATE};
use seesay::pipeline::TurnMetrics;

/// The turns as the server reported them, and each answered turn's first audio as the client
/// received it (ms after the end of the question's speech).
pub(super) struct Served {
    pub turns: Vec<TurnMetrics>,
    pub first_audio_ms: Vec<f64>,
}

/// Audio sent in messages of this many samples (20 ms), each when it is due.
const CHUNK: usize = SAMPLE_RATE as usize / 50;

/// How long after the last of the audio the last turn may take to be reported.
const LAST_TURN_WAIT: Duration = Duration::from_secs(20);

/// Starts the server, asks `input` (`questions` of them) through one conversation, and stops
/// the server.
pub(super) fn run(cfg: &Config, input: &[f32], questions: usize) -> Result<Served> {
    let mut cfg = cfg.clone();
    // The server is the benchmark's own, on 127.0.0.1 and a port nobody else knows: its client
    // brings no token (nor does the server read one from $SEESAY_API_KEY, see `start`).
    cfg.server.api_key.clear();
    let server = Server::start(&cfg)?;
    let url = format!("ws://{}/v1/conversation?barge_in=false", server.addr);
    let (mut ws, _) = tungstenite::connect(&url).with_context(|| format!("cannot open {url}"))?;
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        // Short reads: the loop sends audio when it is due and reads what has come meanwhile.
        s.set_read_timeout(Some(Duration::from_millis(5)))?;
        s.set_nodelay(true)?;
    }
    let mut c = Client::default();
    c.wait_ready(&mut ws)?;
    c.converse(&mut ws, input, questions)?;
    let _ = ws.close(None);
    drop(server);
    Ok(c.served())
}

/// What the client has heard of the conversation.
#[derive(Default)]
struct Client {
    /// When the first sample was sent: sample k was sent at `t0 + k / SAMPLE_RATE`.
    t0: Option<Instant>,
    first_audio: HashMap<u64, Instant>,
    turns: Vec<TurnMetrics>,
}

impl Client {
    /// Reads until the server says the conversation is ready.
    fn wait_ready(&mut self, ws: &mut WebSocket<MaybeTlsStream<TcpStream>>) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Some(Message::Text(t)) = read(ws)? {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                match v["type"].as_str() {
                    Some("ready") => return Ok(()),
                    Some("error") => bail!("the server refused the conversation: {t}"),
                    _ => {}
                }
            }
        }
        bail!("the conversation was not ready within a minute")
    }

    /// Sends `input` in real time, reading what comes back, until `questions` turns are
    /// reported and none that was heard is still open, or `LAST_TURN_WAIT` has passed after the
    /// last sample.
    fn converse(
        &mut self,
        ws: &mut WebSocket<MaybeTlsStream<TcpStream>>,
        input: &[f32],
        questions: usize,
    ) -> Result<()> {
        let t0 = *self.t0.insert(Instant::now());
        let mut sent = 0;
        let mut ended: Option<Instant> = None;
        loop {
            let due = ((t0.elapsed().as_secs_f64() * SAMPLE_RATE as f64) as usize).min(input.len());
            while sent < due {
                let end = (sent + CHUNK).min(input.len());
                ws.send(Message::Binary(pcm16(&input[sent..end]).into()))?;
                sent = end;
            }
            while let Some(msg) = read(ws)? {
                self.take(msg)?;
            }
            if sent == input.len() {
                let at = *ended.get_or_insert_with(Instant::now);
                let open = self
                    .first_audio
                    .keys()
                    .any(|t| self.turns.iter().all(|m| m.turn != *t));
                if (self.turns.len() >= questions && !open) || at.elapsed() > LAST_TURN_WAIT {
                    return Ok(());
                }
            }
        }
    }

    /// One message from the server.
    fn take(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::Binary(b) if b.len() >= 4 => {
                let turn = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
                self.first_audio.entry(turn).or_insert_with(Instant::now);
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                match v["type"].as_str() {
                    Some("turn_done") => self.turns.push(serde_json::from_value(v)?),
                    Some("error") => eprintln!("pipeline (served): error: {t}"),
                    _ => {}
                }
            }
            Message::Close(f) => bail!("the server closed the conversation: {f:?}"),
            _ => {}
        }
        Ok(())
    }

    /// The figures: each answered, uninterrupted turn's first audio where the client got it.
    fn served(self) -> Served {
        let t0 = self.t0.unwrap_or_else(Instant::now);
        let first_audio_ms = self
            .turns
            .iter()
            .filter(|m| !m.interrupted && !m.announcement)
            .filter_map(|m| {
                let heard = *self.first_audio.get(&m.turn)?;
                let end = t0 + Duration::from_secs_f64(m.speech_end_s);
                Some(heard.saturating_duration_since(end).as_secs_f64() * 1000.0)
            })
            .collect();
        Served {
            turns: self.turns,
            first_audio_ms,
        }
    }
}

/// The next message, or None when none came within the stream's read timeout.
fn read(ws: &mut WebSocket<MaybeTlsStream<TcpStream>>) -> Result<Option<Message>> {
    match ws.read() {
        Ok(m) => Ok(Some(m)),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("the conversation's WebSocket failed"),
    }
}

/// `seesay serve`, started from this binary on a port of its own, stopped (SIGTERM) when
/// dropped.
struct Server {
    child: Child,
    addr: String,
    _config: tempfile::NamedTempFile,
}

impl Server {
    /// Starts the server with `cfg` (written to a file it reads) and waits until it listens.
    fn start(cfg: &Config) -> Result<Server> {
        let config = write_config(cfg)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--wyoming", "off"])
            .env_remove("SEESAY_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start seesay serve")?;
        let stderr = child.stderr.take().context("no stderr from seesay serve")?;
        let started = watch_log(stderr);
        let mut server = Server {
            child,
            addr: String::new(),
            _config: config,
        };
        match started.recv_timeout(Duration::from_secs(180)) {
            Ok(Ok(addr)) => server.addr = addr,
            Ok(Err(log)) => bail!("seesay serve did not start:\n{log}"),
            Err(_) => bail!("seesay serve did not start within three minutes"),
        }
        Ok(server)
    }
}

/// Reads the server's log on a thread of its own: the address it serves at when it is printed
/// (or the log so far, if it ends first); after that, its warnings and errors are shown.
fn watch_log(stderr: std::process::ChildStderr) -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        for line in lines.by_ref() {
            let at = line.split("seesay serving http://").nth(1);
            if let Some(addr) = at.and_then(|rest| rest.split_whitespace().next()) {
                let _ = tx.send(Ok(addr.to_string()));
                break;
            }
            log.push(line);
        }
        let _ = tx.send(Err(log.join("\n")));
        for line in lines {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("seesay serve: {line}");
            }
        }
    });
    rx
}

impl Drop for Server {
    /// SIGTERM (the server winds down, its llama-server with it), then waits for it to exit.
    fn drop(&mut self) {
        // SAFETY: kill sends a signal to the child's pid, which this process has not yet waited
        // for (so the pid is still the child's).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The benchmark's configuration in a file of its own, created anew (only its owner may read
/// it: it may hold API keys), removed when dropped.
fn write_config(cfg: &Config) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix("seesay-bench-serve-")
        .suffix(".toml")
        .tempfile()
        .context("cannot create the benchmark's config file")?;
    f.write_all(toml::to_string(cfg)?.as_bytes())?;
    f.flush()?;
    Ok(f)
}
