//! The harness of the `seesay serve` tests: a server on free local ports (killed when dropped),
//! Python clients run from the test environment, raw HTTP status, and a WebSocket conversation
//! client that collects what it hears.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the process when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `seesay serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub http: u16,
    pub wyoming: u16,
    log: std::path::PathBuf,
    cfg: std::path::PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with(env, "")
    }

    /// With `config` as the configuration file.
    pub fn start_with(env: &[(&str, &str)], config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let (http, wyoming) = (free_port(), free_port());
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Server {
            child: None,
            http,
            wyoming,
            log,
            cfg,
            env,
            _dir: dir,
        };
        s.spawn(true);
        s
    }

    /// Starts the server process (its log appended to) and waits until it answers. A port the
    /// test picked can be taken before the server binds it (`free_port` frees it at once, and an
    /// outgoing connection's source port may land on it): the server then exits with "Address
    /// already in use", and is started again, on fresh ports if `fresh_ports`.
    fn spawn(&mut self, fresh_ports: bool) {
        for attempt in 1.. {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if attempt < 4 && log.contains("Address already in use") => {
                    eprintln!("a port was taken before the server bound it; starting it again");
                    if fresh_ports {
                        (self.http, self.wyoming) = (free_port(), free_port());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(log) => panic!("server did not start: {log}"),
            }
        }
    }

    /// One start: Ok once it answers; Err(its log) if it exited first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_seesay"))
            .args([
                "--config",
                self.cfg.to_str().unwrap(),
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.http),
                "--wyoming",
                &format!("127.0.0.1:{}", self.wyoming),
            ])
            .env(
                "RUST_LOG",
                std::env::var("SEESAY_TEST_SERVER_LOG").unwrap_or_else(|_| "seesay=info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while ureq::get(&self.url("/healthz")).call().is_err() {
            if let Some(child) = &mut self.child {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return Err(self.log());
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills the server (SIGKILL: a crash, nothing said to its clients) and starts it again on
    /// the same ports; returns once it answers.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn(false);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// The body of a GET that must succeed.
    pub fn get(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// Sends the server a signal (SIGTERM, SIGINT).
    pub fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// Waits up to `limit` for the server to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The server's resident memory (kB) and thread count, from /proc.
    pub fn rss_threads(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("Threads:"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // For a person chasing a failure: SEESAY_TEST_SERVER_LOG_FILE keeps the server's log.
        if let Some(keep) = std::env::var_os("SEESAY_TEST_SERVER_LOG_FILE") {
            let _ = std::fs::copy(&self.log, keep);
        }
    }
}

/// Runs a Python script with the test environment's interpreter; returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let py = std::env::var("SEESAY_TEST_PYTHON").expect(
        "SEESAY_TEST_PYTHON is not set: run the tests through scripts/test, which installs the openai and wyoming packages",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.py");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(py).arg(&file).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn status_of(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a conversation client has received so far.
#[derive(Default)]
pub struct Heard {
    pub events: Vec<serde_json::Value>,
    /// Bytes of answer audio per turn.
    pub audio: std::collections::BTreeMap<u64, usize>,
    pub closed: Option<(u16, String)>,
}

impl Heard {
    pub fn of(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }
    pub fn turn_done(&self, turn: u64) -> Option<&serde_json::Value> {
        self.of("turn_done").into_iter().find(|e| e["turn"] == turn)
    }
}

pub async fn connect(s: &Server, query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/v1/conversation{query}", s.http);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads messages into `heard` until `done` says so (or `limit` passes: then it fails).
pub async fn read_until(
    ws: &mut Ws,
    heard: &mut Heard,
    limit: Duration,
    done: impl Fn(&Heard) -> bool,
) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let t = Instant::now();
    while !done(heard) {
        let left = limit.checked_sub(t.elapsed()).unwrap_or_default();
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                heard.closed.get_or_insert((1006, String::new()));
                break;
            }
            Err(_) => panic!("timed out; received so far: {:#?}", heard.events),
        };
        match msg {
            Message::Text(t) => heard.events.push(serde_json::from_str(&t).unwrap()),
            Message::Binary(b) => {
                let turn = u32::from_le_bytes(b[..4].try_into().unwrap()) as u64;
                *heard.audio.entry(turn).or_default() += b.len() - 4;
            }
            Message::Close(f) => {
                heard.closed = Some(f.map_or((1005, String::new()), |f| {
                    (f.code.into(), f.reason.to_string())
                }));
                break;
            }
            _ => {}
        }
    }
}

/// Streams 16 kHz audio as 16-bit PCM in 100 ms messages (faster than real time).
pub async fn send_audio(ws: &mut Ws, pcm: &[f32]) {
    use futures_util::SinkExt;
    for chunk in pcm.chunks(1600) {
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
            .collect();
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            bytes.into(),
        ))
        .await
        .unwrap();
    }
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
