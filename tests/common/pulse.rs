//! A PulseAudio server of the test's own, for tests through real audio devices (cpal).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A PulseAudio server of our own with two null sinks: `mic` (its monitor is the default
/// source) and `spk` (the default sink). Audio there is paced like a sound card's.
pub struct Pulse {
    pub env: Vec<(String, String)>,
    daemon: Child,
}

impl Pulse {
    pub fn start(dir: &Path) -> Pulse {
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let env = vec![
            ("HOME".to_string(), dir.display().to_string()),
            ("XDG_RUNTIME_DIR".to_string(), run.display().to_string()),
        ];
        let daemon = Command::new("pulseaudio")
            .args([
                "--daemonize=no",
                "-n",
                "--exit-idle-time=-1",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=mic",
                "--load=module-null-sink sink_name=spk",
            ])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio (scripts/setup installs it)");
        let p = Pulse { env, daemon };
        for _ in 0..100 {
            if p.cmd("pactl")
                .arg("info")
                .output()
                .unwrap()
                .status
                .success()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for default in [
            ["set-default-source", "mic.monitor"],
            ["set-default-sink", "spk"],
        ] {
            assert!(p.cmd("pactl").args(default).status().unwrap().success());
        }
        p
    }

    /// The environment for `seesay` to run in this server: the server's own home, so the
    /// models and the language-model engine are named outright.
    pub fn seesay_env(&self) -> Vec<(String, String)> {
        let jfk = super::model_path("sample-jfk");
        let models = jfk.parent().and_then(Path::parent).unwrap();
        let llama = super::ok(super::seesay(&["bench", "--print-llama-server"]));
        let mut env = self.env.clone();
        env.push(("SEESAY_MODELS_DIR".into(), models.display().to_string()));
        env.push(("SEESAY_LLAMA_SERVER".into(), llama.trim().to_string()));
        env
    }

    /// How many streams record from this server now.
    pub fn recordings(&self) -> usize {
        let out = self
            .cmd("pactl")
            .args(["list", "short", "source-outputs"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Waits until more than `before` streams record (a program opened its microphone).
    pub fn wait_for_recording(&self, before: usize) {
        for _ in 0..600 {
            if self.recordings() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing opened the microphone in 30 s");
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
