//! Wyoming's framing: one JSON header line, then `data_length` bytes of JSON data, then
//! `payload_length` bytes of payload; and why a connection is closed.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Why a Wyoming connection was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WyomingError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Failed(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("too many Wyoming connections at once ({0}: server.wyoming_max_connections)")]
    Busy(usize),
    #[error("nothing from the client for {0} s (server.wyoming_idle_timeout_s)")]
    Idle(u64),
}

impl WyomingError {
    /// The `code` of the `error` event that tells the client.
    pub(super) fn code(&self) -> &'static str {
        match self {
            WyomingError::Io(_) => "io",
            WyomingError::Json(_) | WyomingError::Protocol(_) => "bad-request",
            WyomingError::Failed(_) => "failed",
            WyomingError::ShuttingDown => "shutdown",
            WyomingError::Busy(_) => "busy",
            WyomingError::Idle(_) => "idle",
        }
    }
}

pub(super) fn protocol(msg: impl Into<String>) -> WyomingError {
    WyomingError::Protocol(msg.into())
}

/// Largest header line, data block and payload accepted.
const MAX_HEADER: usize = 64 << 10;
const MAX_DATA: usize = 1 << 20;
const MAX_PAYLOAD: usize = 4 << 20;

pub struct Event {
    pub kind: String,
    pub data: Value,
    pub payload: Vec<u8>,
}

/// Reads one event; `Ok(None)` at a clean end of the connection.
pub async fn read_event<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
) -> Result<Option<Event>, WyomingError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_HEADER as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_HEADER || !line.ends_with(b"\n") {
        return Err(protocol("header line too long or cut off"));
    }
    let header: Value = serde_json::from_slice(&line)?;
    let kind = header["type"]
        .as_str()
        .ok_or_else(|| protocol("event without a type"))?
        .to_string();
    let mut data = header.get("data").cloned().unwrap_or(json!({}));
    let data_len = header["data_length"].as_u64().unwrap_or(0) as usize;
    let payload_len = header["payload_length"].as_u64().unwrap_or(0) as usize;
    if data_len > MAX_DATA || payload_len > MAX_PAYLOAD {
        return Err(protocol(format!(
            "data or payload too large ({data_len} / {payload_len} bytes)"
        )));
    }
    if data_len > 0 {
        let mut buf = vec![0; data_len];
        r.read_exact(&mut buf).await?;
        let extra: Value = serde_json::from_slice(&buf)?;
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
    }
    let mut payload = vec![0; payload_len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Event {
        kind,
        data,
        payload,
    }))
}

/// How long one event may take to reach a client before the connection is given up.
const WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes one event (data in the header's `data_length` block, as the Python library does);
/// a client that stops reading for `WRITE_LIMIT` fails it.
pub async fn write_event(
    w: &mut (impl AsyncWriteExt + Unpin),
    kind: &str,
    data: Value,
    payload: &[u8],
) -> std::io::Result<()> {
    let data_bytes = serde_json::to_vec(&data)?;
    let mut header = json!({"type": kind, "version": "1.5.3", "data_length": data_bytes.len()});
    if !payload.is_empty() {
        header["payload_length"] = json!(payload.len());
    }
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend(data_bytes);
    out.extend_from_slice(payload);
    tokio::time::timeout(WRITE_LIMIT, w.write_all(&out))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
