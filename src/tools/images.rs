//! `make_picture`: a description in; OpenAI's images API asked for a picture
//! (`POST {base_url}/images/generations`), the PNG saved under `[images] dir` with a unique
//! name, and its path (with the prompt the service actually drew) out.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::tool::{string_schema, text_arg, Tool, ToolError};
use crate::host::{expand_home, home};
use crate::stages::openai::{env_or, error_text};

/// Picture making (`[images]`): any service with OpenAI's images API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Base URL of the service, e.g. https://api.openai.com/v1. Empty: the model cannot make
    /// pictures (the make_picture tool is absent).
    pub base_url: String,
    /// API key; empty reads `$SEESAY_IMAGES_API_KEY`, then `$OPENAI_API_KEY`.
    pub api_key: String,
    /// The image model asked for, e.g. dall-e-3 or gpt-image-1.
    pub model: String,
    /// Picture size, e.g. 1024x1024.
    pub size: String,
    /// Folder the pictures are saved in. Empty: `pictures` under the data folder
    /// (`$XDG_DATA_HOME/seesay`, else `~/.local/share/seesay`).
    pub dir: String,
    /// Seconds to wait for the service (making a picture can take a minute).
    pub timeout_s: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            base_url: String::new(),
            api_key: String::new(),
            model: "dall-e-3".into(),
            size: "1024x1024".into(),
            dir: String::new(),
            timeout_s: 120,
        }
    }
}

impl ImagesConfig {
    /// The folder pictures are saved in.
    pub fn folder(&self) -> PathBuf {
        if !self.dir.trim().is_empty() {
            return expand_home(self.dir.trim());
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".local").join("share"));
        data.join("seesay").join("pictures")
    }
}

/// Makes pictures through the configured service.
pub struct MakePicture {
    cfg: ImagesConfig,
}

impl MakePicture {
    /// The tool, when `[images] base_url` is set.
    pub fn new(cfg: &ImagesConfig) -> Option<MakePicture> {
        (!cfg.base_url.trim().is_empty()).then(|| MakePicture { cfg: cfg.clone() })
    }

    fn url(&self) -> String {
        format!(
            "{}/images/generations",
            self.cfg.base_url.trim().trim_end_matches('/')
        )
    }

    fn fail(&self, detail: impl Into<String>) -> ToolError {
        ToolError::Images {
            url: self.url(),
            detail: detail.into(),
        }
    }

    /// Asks the service for a picture of `prompt`: its PNG bytes and revised prompt.
    fn request(&self, prompt: &str) -> Result<(Vec<u8>, Option<String>), ToolError> {
        let timeout = Duration::from_secs(self.cfg.timeout_s.max(1));
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        let mut req = agent
            .post(&self.url())
            .set("Content-Type", "application/json");
        let key = Some(self.cfg.api_key.clone())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| env_or("SEESAY_IMAGES_API_KEY", &env_or("OPENAI_API_KEY", "")));
        if !key.is_empty() {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let body = json!({
            "model": self.cfg.model,
            "prompt": prompt,
            "n": 1,
            "size": self.cfg.size,
            "response_format": "b64_json",
        });
        let reply: Value = match req.send_string(&body.to_string()) {
            Ok(r) => {
                let text = r
                    .into_string()
                    .map_err(|e| self.fail(format!("reading the reply: {e}")))?;
                serde_json::from_str(&text)
                    .map_err(|e| self.fail(format!("unreadable reply: {e}")))?
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                return Err(self.fail(format!("HTTP {code}: {}", error_text(&text))));
            }
            Err(e) => return Err(self.fail(e.to_string())),
        };
        let item = &reply["data"][0];
        let revised = item["revised_prompt"].as_str().map(str::to_string);
        let bytes = if let Some(b64) = item["b64_json"].as_str() {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| self.fail(format!("the picture's base64 is broken: {e}")))?
        } else if let Some(url) = item["url"].as_str() {
            let mut bytes = Vec::new();
            agent
                .get(url)
                .call()
                .map_err(|e| self.fail(format!("downloading {url}: {e}")))?
                .into_reader()
                .read_to_end(&mut bytes)
                .map_err(|e| self.fail(format!("downloading {url}: {e}")))?;
            bytes
        } else {
            return Err(self.fail("the reply holds no picture (data[0].b64_json or data[0].url)"));
        };
        Ok((bytes, revised))
    }
}

/// Saves `bytes` in `dir` under a new name (`picture-<unix ms>[-n].<ext>`).
fn save(dir: &Path, bytes: &[u8]) -> Result<PathBuf, ToolError> {
    let failed = |e: std::io::Error| {
        ToolError::Failed(format!(
            "cannot save the picture in {}: {e} (set images.dir)",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let ext = match bytes {
        [0x89, b'P', b'N', b'G', ..] => "png",
        [0xFF, 0xD8, ..] => "jpg",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
        _ => {
            return Err(ToolError::Failed(
                "the picture service sent something that is not a PNG, JPEG or WebP picture".into(),
            ))
        }
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for n in 0..1000 {
        let name = match n {
            0 => format!("picture-{ms}.{ext}"),
            n => format!("picture-{ms}-{n}.{ext}"),
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write as _;
                f.write_all(bytes).map_err(failed)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(ToolError::Failed(format!(
        "no free picture name in {}",
        dir.display()
    )))
}

impl Tool for MakePicture {
    fn name(&self) -> &str {
        "make_picture"
    }
    fn description(&self) -> &str {
        "Make (draw, paint, generate) a picture from a description; it is saved as a file."
    }
    fn parameters(&self) -> Value {
        string_schema(&[("prompt", "What the picture shows, in detail.")], 1)
    }
    fn limit(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_s.max(1) + 5)
    }
    fn call(&self, args: Value) -> Result<String, ToolError> {
        let prompt = ["prompt", "description", "text"]
            .iter()
            .find_map(|k| text_arg(&args, k))
            .ok_or_else(|| ToolError::arguments("make_picture", "say what to draw in prompt"))?;
        let (bytes, revised) = self.request(prompt)?;
        let path = save(&self.cfg.folder(), &bytes)?;
        Ok(match revised {
            Some(r) => format!("The picture is saved at {}. It shows: {r}", path.display()),
            None => format!("The picture is saved at {}.", path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// A 1x1 PNG.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52, 0,
        0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
    ];

    /// Serves one request with `reply` (status, JSON body); returns what was asked (headers, body).
    fn serve_once(
        status: u16,
        reply: String,
    ) -> (String, std::thread::JoinHandle<(String, Value)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line.trim().is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
            (head, serde_json::from_slice(&body).unwrap())
        });
        (base, server)
    }

    fn tool(base: &str, dir: &Path) -> MakePicture {
        MakePicture::new(&ImagesConfig {
            base_url: base.into(),
            api_key: "sk-test".into(),
            dir: dir.display().to_string(),
            timeout_s: 10,
            ..ImagesConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_picture_is_asked_for_in_openais_shape_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
        let reply = json!({"created": 1, "data": [{"b64_json": b64, "revised_prompt": "A white cat on a sofa."}]});
        let (base, server) = serve_once(200, reply.to_string());
        let said = tool(&base, dir.path())
            .call(json!({"prompt": "a white cat"}))
            .unwrap();
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /v1/images/generations "), "{head}");
        assert!(head.contains("Authorization: Bearer sk-test"), "{head}");
        assert_eq!(
            body,
            json!({"model": "dall-e-3", "prompt": "a white cat", "n": 1, "size": "1024x1024", "response_format": "b64_json"})
        );
        let saved: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(saved.len(), 1);
        assert_eq!(std::fs::read(&saved[0]).unwrap(), PNG);
        assert!(saved[0].extension().unwrap() == "png");
        assert!(said.contains(&saved[0].display().to_string()), "{said}");
        assert!(said.contains("A white cat on a sofa."));
        // A second picture gets a name of its own.
        let again = save(dir.path(), PNG).unwrap();
        assert_ne!(again, saved[0]);
    }

    #[test]
    fn service_errors_and_bad_replies_are_told() {
        let dir = tempfile::tempdir().unwrap();
        let (base, server) = serve_once(
            400,
            json!({"error": {"message": "content policy"}}).to_string(),
        );
        let e = tool(&base, dir.path())
            .call(json!({"prompt": "x"}))
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(e.contains("HTTP 400: content policy"), "{e}");
        let (base, server) =
            serve_once(200, json!({"data": [{"b64_json": "aGVsbG8="}]}).to_string());
        let e = tool(&base, dir.path())
            .call(json!({"prompt": "x"}))
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(e.contains("not a PNG"), "{e}");
        assert!(tool("http://x", dir.path()).call(json!({})).is_err());
        assert!(MakePicture::new(&ImagesConfig::default()).is_none());
    }
}
