//! Embeddings and memory over HTTP: OpenAI's `POST /v1/embeddings` (text in, vectors out, as
//! float arrays or base64), and `/v1/memory` (list, add, search, forget) for a named store: a
//! request uses a memory store only when it names one (`memory=NAME`, the file NAME.sqlite
//! beside the default store).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::state::{blocking, json_body, ApiError, Shared};
use crate::memory::time::{self, parse_time};
use crate::memory::{Kind, Memory, MemoryError};

/// Most texts in one embeddings request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// `input`: one text or several (token arrays are refused: seesay tokenizes itself).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(Value),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn memory_err(e: MemoryError) -> ApiError {
    let status = match &e {
        MemoryError::Disabled => StatusCode::FORBIDDEN,
        MemoryError::BadName(_)
        | MemoryError::BadTime(_)
        | MemoryError::BadKind(_)
        | MemoryError::Empty => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingsRequest = json_body(&headers, &body)?;
    let texts = match req.input {
        Input::One(t) => vec![t],
        Input::Many(v) => v,
        Input::Tokens(other) => {
            let shown: String = other.to_string().chars().take(40).collect();
            return Err(ApiError::bad(format!(
                "input must be a string or an array of strings, not {shown} (token arrays are not accepted)"
            )));
        }
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::bad(format!(
            "input must hold 1 to {MAX_INPUTS} texts"
        )));
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(ApiError::bad("input texts must not be empty"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "encoding_format {other:?}: use float or base64"
            )))
        }
    };
    let st2 = st.clone();
    let (vectors, tokens, name) = blocking(&st, move |_| {
        let e = st2.embedder().map_err(ApiError::internal)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = e.embed(&refs).map_err(ApiError::internal)?;
        let tokens = e.count_tokens(&refs).map_err(ApiError::internal)?;
        Ok((vectors, tokens, e.name().to_string()))
    })
    .await?;
    if let Some(d) = req
        .dimensions
        .filter(|d| vectors.first().is_some_and(|v| v.len() != *d))
    {
        return Err(ApiError::bad(format!(
            "dimensions = {d}: this model's vectors have {} (leave dimensions out)",
            vectors[0].len()
        )));
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// The query of every `/v1/memory` request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryQuery {
    /// The store's name.
    memory: Option<String>,
    limit: Option<usize>,
    /// search: the query text.
    q: Option<String>,
    /// DELETE /v1/memory: everything, or what is older than `before`.
    all: Option<bool>,
    before: Option<String>,
}

/// `POST /v1/memory`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    memory: Option<String>,
    text: String,
    #[serde(default)]
    kind: Option<String>,
}

/// Opens the store `name` names, on a blocking thread; with the embedding model if `model`.
pub(super) fn open(st: &Shared, name: Option<&str>, model: bool) -> Result<Memory, ApiError> {
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad(
            "name a memory store: memory=NAME (a request uses a store only when it names one)",
        )
    })?;
    let cfg = &st.cfg.memory;
    if !cfg.enabled {
        return Err(memory_err(MemoryError::Disabled));
    }
    let path = cfg.named_file(name).map_err(memory_err)?;
    let embedder = match model {
        true => Some(st.embedder().map_err(ApiError::internal)?),
        false => None,
    };
    Memory::open_at(&path, cfg, embedder).map_err(memory_err)
}

/// Whether `path` is one memory's (`/v1/memory/12`), for the metrics' route `/v1/memory/{id}`.
pub fn is_item_path(route: &str, path: &str) -> bool {
    route == "/v1/memory/{id}"
        && path
            .strip_prefix("/v1/memory/")
            .is_some_and(|id| id.parse::<i64>().is_ok())
}

/// The query string, or 400 saying what is wrong with it.
fn query(raw: Option<String>) -> Result<MemoryQuery, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad(format!("bad query: {e} (memory, q, limit, all, before)")))
}

fn limit(q: &MemoryQuery, default: usize) -> usize {
    q.limit.unwrap_or(default).clamp(1, 1000)
}

/// `GET /v1/memory`: the newest memories, newest first.
pub async fn list(
    State(st): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw)?;
    let st2 = st.clone();
    blocking(&st, move |_| {
        let items = open(&st2, q.memory.as_deref(), false)?
            .list(limit(&q, 20))
            .map_err(memory_err)?;
        Ok(Json(json!({"object": "list", "data": items})))
    })
    .await
}

/// `POST /v1/memory`: remembers a text (a note unless `kind` says otherwise).
pub async fn add(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddRequest = json_body(&headers, &body)?;
    let kind: Kind = match req.kind.as_deref() {
        None => Kind::Note,
        Some(k) => k.parse().map_err(memory_err)?,
    };
    let st2 = st.clone();
    let item = blocking(&st, move |_| {
        let mut m = open(&st2, req.memory.as_deref(), true)?;
        let id = m
            .add_at(kind, &req.text, None, time::now(), "http")
            .map_err(memory_err)?;
        m.get(id).map_err(memory_err)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!(item))))
}

/// `GET /v1/memory/search?q=&limit=`: the memories nearest `q`, best first, with scores.
pub async fn search(
    State(st): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw)?;
    let text =
        q.q.clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ApiError::bad("search needs q=TEXT"))?;
    let st2 = st.clone();
    blocking(&st, move |_| {
        let hits = open(&st2, q.memory.as_deref(), true)?
            .search(&text, limit(&q, 5))
            .map_err(memory_err)?;
        Ok(Json(json!({"object": "list", "data": hits})))
    })
    .await
}

/// `DELETE /v1/memory/{id}`.
pub async fn forget(
    State(st): State<Shared>,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw)?;
    let st2 = st.clone();
    blocking(&st, move |_| {
        let gone = open(&st2, q.memory.as_deref(), false)?
            .forget(id)
            .map_err(memory_err)?;
        if !gone {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no memory with id {id}"),
            ));
        }
        Ok(Json(json!({"id": id, "deleted": true})))
    })
    .await
}

/// `DELETE /v1/memory?all=true` or `?before=TIME`.
pub async fn forget_many(
    State(st): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw)?;
    let before = match &q.before {
        Some(t) => Some(parse_time(t, time::now()).map_err(memory_err)?),
        None => None,
    };
    if q.all != Some(true) && before.is_none() {
        return Err(ApiError::bad(
            "say what to forget: all=true, before=TIME, or DELETE /v1/memory/{id}",
        ));
    }
    let st2 = st.clone();
    blocking(&st, move |_| {
        let mut m = open(&st2, q.memory.as_deref(), false)?;
        let n = match before {
            Some(at) => m.forget_before(at),
            None => m.forget_all(),
        }
        .map_err(memory_err)?;
        Ok(Json(json!({"deleted": n})))
    })
    .await
}
