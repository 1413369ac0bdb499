//! `seesay serve`'s HTTP API with a client nobody here wrote (the official `openai` Python
//! package, installed by scripts/test into the virtual environment named by $SEESAY_TEST_PYTHON),
//! bad requests over raw HTTP and TCP, and authentication.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

const OPENAI_CLIENT: &str = r#"
import base64, sys, concurrent.futures
from openai import OpenAI
base, jfk, cat, out = sys.argv[1:5]
client = OpenAI(base_url=base, api_key="unused")
with open(jfk, "rb") as f:
    print("TRANSCRIPT:", client.audio.transcriptions.create(model="whisper-1", file=f).text)
with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="The weather is sunny today.", response_format="wav") as r:
    r.stream_to_file(out)
uri = "data:image/png;base64," + base64.b64encode(open(cat, "rb").read()).decode()
stream = client.chat.completions.create(model="smollm2-135m", stream=True, messages=[{"role": "user", "content": [
    {"type": "text", "text": "What animal is this?"},
    {"type": "image_url", "image_url": {"url": uri}}]}])
print("CHUNKS:", sum(1 for _ in [print("CHAT:", c.choices[0].delta.content or "") for c in stream]))
chunks = list(client.chat.completions.create(model="m", stream=True, max_tokens=8,
    stream_options={"include_usage": True}, messages=[{"role": "user", "content": "Say hello."}]))
u = chunks[-1].usage
print("USAGE:", len(chunks[-1].choices), u.prompt_tokens, u.completion_tokens, u.total_tokens,
      sum(1 for c in chunks if c.usage))
import json
tools = [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
msgs = [{"role": "user", "content": "What is the weather like in Lisbon right now?"}]
r = client.chat.completions.create(model="m", messages=msgs, tools=tools)
m = r.choices[0].message
print("CALLED:", r.choices[0].finish_reason, json.dumps([[c.function.name, json.loads(c.function.arguments)] for c in m.tool_calls or []]))
msgs.append(m.model_dump(exclude_none=True))
for c in m.tool_calls or []:
    msgs.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps({"sky": "snow", "celsius": -3})})
r = client.chat.completions.create(model="m", messages=msgs, tools=tools)
print("TOOL ANSWER:", r.choices[0].finish_reason, r.choices[0].message.content)
calls = [d for ch in client.chat.completions.create(model="m", messages=msgs[:1], tools=tools, stream=True)
         if ch.choices for d in ch.choices[0].delta.tool_calls or []]
print("STREAMED CALL:", json.dumps([[d.function.name, json.loads(d.function.arguments)] for d in calls]))
def one(_):
    with open(jfk, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f).text
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for t in pool.map(one, range(8)):
        print("PARALLEL:", t)
"#;

#[test]
fn the_openai_python_client_transcribes_speaks_chats_and_calls_tools() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech.wav");
    let out = python(
        OPENAI_CLIENT,
        &[
            &s.url("/v1"),
            model_path("sample-jfk").to_str().unwrap(),
            model_path("sample-chelsea").to_str().unwrap(),
            speech.to_str().unwrap(),
        ],
    );
    let line = |p: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(p).map(|x| x.trim().to_string()))
            .collect()
    };
    let transcript = &line("TRANSCRIPT:")[0];
    assert!(
        word_errors(&words(JFK), &words(transcript)) <= 1,
        "{transcript}"
    );
    let heard = words(&ok(seesay(&["transcribe", speech.to_str().unwrap()])));
    assert!(
        heard.contains(&"weather".into()) && heard.contains(&"sunny".into()),
        "{heard:?}"
    );
    let chat = line("CHAT:").concat();
    assert!(
        line("CHAT:").len() > 2,
        "the answer was not streamed: {out}"
    );
    assert!(chat.to_lowercase().contains("cat"), "{chat}");
    // stream_options.include_usage: one last chunk without choices carries the counts.
    let usage: Vec<usize> = line("USAGE:")[0]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(usage[0], 0, "{out}");
    assert!(usage[1] > 5 && usage[2] >= 1 && usage[2] <= 8, "{out}");
    assert_eq!(usage[1] + usage[2], usage[3], "{out}");
    assert_eq!(usage[4], 1, "only the last chunk has usage: {out}");
    // Function calling: the call comes back as tool_calls (streamed too), and the tool's result
    // (snow, which no model would guess for Lisbon) makes the answer.
    let lisbon = r#"[["get_weather", {"city": "Lisbon"}]]"#;
    assert_eq!(line("CALLED:")[0], format!("tool_calls {lisbon}"), "{out}");
    assert_eq!(line("STREAMED CALL:")[0], lisbon, "{out}");
    let answer = line("TOOL ANSWER:")[0].to_lowercase();
    assert!(answer.starts_with("stop "), "{out}");
    assert!(answer.contains("snow"), "{out}");
    let parallel = line("PARALLEL:");
    assert_eq!(parallel.len(), 8);
    for t in &parallel {
        assert!(word_errors(&words(JFK), &words(t)) <= 1, "{t}");
    }
    // One process, each model loaded once, eight transcriptions observed.
    assert_eq!(s.log().matches("models loaded").count(), 1, "{}", s.log());
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("seesay_stage_seconds_count{stage=\"asr\"} 9"),
        "{metrics}"
    );
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let transcriptions = s.url("/v1/audio/transcriptions");
    // Wrong content type.
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "application/json")
            .send_string("{}"),
    );
    assert_eq!(code, 415, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("multipart/form-data"),
        "{body}"
    );
    // 50 MB over the 25 MB limit.
    let big = vec![b'a'; 50 << 20];
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_bytes(&big),
    );
    assert!(code == 413 || code == 0, "{code} {body}");
    // A truncated multipart body.
    let cut = "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....";
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_string(cut),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("multipart"), "{body}");
    // Not audio: a short file, and 200 kB of noise that looks like an MPEG stream (it used to
    // flood the log with a warning per packet, and the error named the server's temporary file).
    let form = "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nhello\r\n--XYZ--\r\n";
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_string(form),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a.wav") && !body.contains("/tmp"), "{body}");
    let mut junk =
        b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"talk.mp3\"\r\n\r\n"
            .to_vec();
    let mut x: u32 = 12345;
    for i in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        // An MPEG frame sync every 400 bytes, noise between.
        junk.push(match i % 400 {
            0 => 0xff,
            1 => 0xfb,
            _ => (x >> 16) as u8,
        });
    }
    junk.extend(b"\r\n--XYZ--\r\n");
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_bytes(&junk),
    );
    assert!(code == 400 || code == 200, "{code} {body}");
    assert!(
        !body.contains("/tmp") && !body.contains("seesay-upload"),
        "{body}"
    );
    let warnings = s.log().matches("undecodable").count();
    assert!(warnings <= 1, "{warnings} warnings:\n{}", s.log());
    // Chat with an image URL seesay would have to fetch, and bad JSON.
    let chat = s.url("/v1/chat/completions");
    let remote_image = serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}},
            {"type": "text", "text": "hi"}]}]
    });
    let (code, body) = status_of(
        ureq::post(&chat)
            .set("Content-Type", "application/json")
            .send_string(&remote_image.to_string()),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("data: URI"), "{body}");
    let (code, _) = status_of(
        ureq::post(&chat)
            .set("Content-Type", "application/json")
            .send_string("{\"messages\": ["),
    );
    assert_eq!(code, 400);

    // Wyoming: a header promising more payload than follows closes that connection only.
    let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
    sock.write_all(b"{\"type\": \"audio-chunk\", \"payload_length\": 100000}\nshort")
        .unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // Garbage instead of JSON, an audio format that cannot be, streamed text without end: the
    // client is told why (an `error` event), and that connection closes.
    let rejected = |events: &[u8], why: &str| {
        let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = sock.write_all(events);
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains("\"error\"") && rest.contains(why),
            "{why}: {rest}"
        );
    };
    rejected(b"this is not json\n", "JSON");
    for format in [
        r#"{"rate": 0, "width": 2, "channels": 1}"#,
        r#"{"rate": 4294983296, "width": 2, "channels": 1}"#,
        r#"{"rate": 16000, "width": 2, "channels": 0}"#,
        r#"{"rate": 16000, "width": 2, "channels": 70000}"#,
        r#"{"rate": 16000, "width": 3, "channels": 1}"#,
        r#"{"rate": -5, "width": 2, "channels": 1}"#,
    ] {
        let ev = format!("{{\"type\": \"audio-start\", \"data\": {format}}}\n");
        rejected(ev.as_bytes(), "audio-start");
    }
    let mut chunks = b"{\"type\": \"synthesize-start\"}\n".to_vec();
    let text = "word ".repeat(2000);
    for _ in 0..10 {
        chunks.extend(
            format!("{{\"type\": \"synthesize-chunk\", \"data\": {{\"text\": \"{text}\"}}}}\n")
                .as_bytes(),
        );
    }
    rejected(&chunks, "longer than");
    let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
    sock.write_all(b"{\"type\": \"describe\"}\n").unwrap();
    let mut reader = std::io::BufReader::new(sock);
    let mut header = String::new();
    std::io::BufRead::read_line(&mut reader, &mut header).unwrap();
    assert!(header.contains("\"info\""), "{header}");

    // Still serving.
    let models = s.get("/v1/models");
    assert!(models.contains("whisper-1"), "{models}");
    // A scanner's junk paths are counted as one "other" route, not one series each.
    for i in 0..20 {
        let (code, _) = status_of(ureq::get(&s.url(&format!("/wp-admin/{i}.php"))).call());
        assert_eq!(code, 404);
    }
    let metrics = s.get("/metrics");
    assert!(metrics.contains("status=\"415\""), "{metrics}");
    assert!(!metrics.contains("wp-admin"), "{metrics}");
    assert!(
        metrics.contains("route=\"other\",status=\"404\"} 20"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_auth_is_on() {
    let s = Server::start_with(
        &[("SEESAY_API_KEY", "s3cret")],
        "[server]\nmax_sessions = 1\nrequest_timeout_s = 3\ncors_origins = [\"https://app.example\"]\n",
    );
    assert_eq!(status_of(ureq::get(&s.url("/healthz")).call()).0, 200);
    // CORS: a listed origin's preflight is answered without the token; others get no grant.
    let pre = ureq::request("OPTIONS", &s.url("/v1/chat/completions"))
        .set("Origin", "https://app.example")
        .set("Access-Control-Request-Method", "POST")
        .call()
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("authorization")));
    let granted = |origin: &str| {
        let r = ureq::get(&s.url("/v1/models"))
            .set("Origin", origin)
            .set("Authorization", "Bearer s3cret")
            .call()
            .unwrap();
        r.header("access-control-allow-origin").map(str::to_string)
    };
    assert_eq!(
        granted("https://app.example").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(granted("https://evil.example"), None);
    let (code, body) = status_of(ureq::get(&s.url("/v1/models")).call());
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (code, _) = status_of(
        ureq::get(&s.url("/v1/models"))
            .set("Authorization", "Bearer wrong")
            .call(),
    );
    assert_eq!(code, 401);
    let (code, _) = status_of(
        ureq::get(&s.url("/v1/models"))
            .set("Authorization", "Bearer s3cret")
            .call(),
    );
    assert_eq!(code, 200);
    assert_eq!(status_of(ureq::get(&s.url("/metrics")).call()).0, 401);
    // One access-log line a request, without the query (which may carry a token).
    let log = s.log();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("seesay::access") && l.contains("path=/v1/models"))
        .collect();
    assert_eq!(access.len(), 5, "{log}");
    assert!(access.iter().any(|l| l.contains("status=401")), "{log}");
    assert!(access.iter().any(|l| l.contains("status=200")), "{log}");
    // The page loads without the token; its conversation needs it (as ?token=: browsers cannot
    // set headers on a WebSocket), and only server.max_sessions conversations run at once.
    assert_eq!(status_of(ureq::get(&s.url("/")).call()).0, 200);
    let refused = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    let url = format!("ws://127.0.0.1:{}/v1/conversation", s.http);
    assert_eq!(refused(tokio_tungstenite::connect_async(&url).await), 401);
    let wrong = format!("{url}?token=nope");
    assert_eq!(refused(tokio_tungstenite::connect_async(&wrong).await), 401);
    let mut one = connect(&s, "?token=s3cret").await;
    let mut heard = Heard::default();
    read_until(&mut one, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    let again = format!("{url}?token=s3cret");
    assert_eq!(refused(tokio_tungstenite::connect_async(&again).await), 429);
    // A conversation whose client goes quiet is closed (server.request_timeout_s), and the slot
    // comes back.
    read_until(&mut one, &mut heard, Duration::from_secs(20), |h| {
        h.closed.is_some()
    })
    .await;
    let (code, reason) = heard.closed.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("request_timeout_s"), "{reason}");
    drop(one);
    let t = Instant::now();
    while refused(tokio_tungstenite::connect_async(&again).await) != 101 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client refused a conversation (429) is given a ticket; shown when it calls again, the next
/// free place is held for it: a client that calls at once without one (the one whose
/// conversation just ended, say) does not take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_keeps_its_place_in_line_with_its_ticket() {
    let s = Server::start_with(&[], "[server]\nmax_sessions = 1\n");
    let url = format!("ws://127.0.0.1:{}/v1/conversation", s.http);
    // (status, ticket, message) of a refused call; 101 and no ticket when admitted.
    let call = |query: String| {
        let url = format!("{url}{query}");
        async move {
            match tokio_tungstenite::connect_async(&url).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    let ticket = resp.headers().get("seesay-ticket");
                    let ticket = ticket.map(|t| t.to_str().unwrap().parse::<u64>().unwrap());
                    let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                    (resp.status().as_u16(), ticket, body.into_owned(), None)
                }
                Err(e) => panic!("{e}"),
                Ok((ws, _)) => (101, None, String::new(), Some(ws)),
            }
        }
    };
    let mut one = connect(&s, "").await;
    let mut heard = Heard::default();
    read_until(&mut one, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    // Refused, with a ticket; back with it, refused again and now in line.
    let (code, ticket, body, _) = call(String::new()).await;
    assert_eq!(code, 429, "{body}");
    let ticket = ticket.expect("a refusal gives a ticket (Seesay-Ticket)");
    assert!(body.contains(&format!("ticket={ticket}")), "{body}");
    let (code, again, body, _) = call(format!("?ticket={ticket}")).await;
    assert_eq!((code, again), (429, Some(ticket)), "{body}");
    // The conversation ends; a client without a ticket calls at once: the place is held.
    drop(one);
    let (code, _, body, _) = call(String::new()).await;
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("held for a client refused before you"),
        "{body}"
    );
    // The client in line comes back and is admitted.
    let (code, _, body, admitted) = call(format!("?ticket={ticket}")).await;
    assert_eq!(code, 101, "{body}");
    drop(admitted);
}

/// Wyoming connections past `server.wyoming_max_connections` are told "busy" and closed; one
/// silent for `server.wyoming_idle_timeout_s` is told "idle" and closed, and its place is free.
/// (The idle time leaves the test 5 s to connect the third before the first two are closed.)
#[test]
fn wyoming_connections_are_limited_and_idle_ones_closed() {
    let s = Server::start_with(
        &[],
        "[server]\nwyoming_max_connections = 2\nwyoming_idle_timeout_s = 5\n",
    );
    let connect = || {
        let sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock
    };
    // What a connection hears until it is closed.
    let rest = |mut sock: TcpStream| {
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    };
    let held = [connect(), connect()];
    // Both places taken (each has been accepted once it answers).
    for sock in &held {
        let mut w = sock.try_clone().unwrap();
        w.write_all(b"{\"type\": \"describe\"}\n").unwrap();
        let mut header = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(sock), &mut header).unwrap();
        assert!(header.contains("\"info\""), "{header}");
    }
    let refused = rest(connect());
    assert!(refused.contains("\"busy\""), "{refused}");
    // The held ones go quiet: closed after 5 s, saying why.
    let t = Instant::now();
    for sock in held {
        let said = rest(sock);
        assert!(said.contains("\"idle\""), "{said}");
    }
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // Their places are free again.
    let mut sock = connect();
    sock.write_all(b"{\"type\": \"describe\"}\n").unwrap();
    let mut header = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sock), &mut header).unwrap();
    assert!(header.contains("\"info\""), "{header}");
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("seesay_wyoming_connections_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
}

/// With `server.zeroconf`, the Wyoming port is announced as `_wyoming._tcp` (how Home Assistant
/// discovers it) and withdrawn when the server stops.
#[test]
fn wyoming_is_announced_over_zeroconf_and_withdrawn_at_exit() {
    use mdns_sd::{ServiceDaemon, ServiceEvent};
    let mut s = Server::start_with(&[], "[server]\nzeroconf = true\n");
    let browser = ServiceDaemon::new().unwrap();
    let events = browser.browse("_wyoming._tcp.local.").unwrap();
    let next = |what: &str, hit: &dyn Fn(&ServiceEvent) -> bool| {
        let t = Instant::now();
        let mut seen = Vec::new();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(ev) = events.recv_timeout(Duration::from_millis(200)) {
                if hit(&ev) {
                    return ev;
                }
                seen.push(format!("{ev:?}"));
            }
        }
        panic!("no {what} within 10 s: {seen:?}");
    };
    let port = s.wyoming;
    let found = next(
        "announcement",
        &|ev| matches!(ev, ServiceEvent::ServiceResolved(i) if i.get_port() == port),
    );
    let ServiceEvent::ServiceResolved(info) = found else {
        unreachable!()
    };
    assert!(info.get_fullname().starts_with("seesay-"), "{info:?}");
    let name = info.get_fullname().to_string();
    s.signal(libc::SIGTERM);
    assert!(s
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|e| e.success()));
    next(
        "withdrawal",
        &|ev| matches!(ev, ServiceEvent::ServiceRemoved(_, n) if *n == name),
    );
    let _ = browser.shutdown();
}
