//! The spoken conversation over WebSocket (`/v1/conversation`) with a Rust client: an answer, a
//! camera snapshot, barge-in, and garbage on other connections.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;

/// A client that cannot be understood gets a reason and its connection closed.
async fn garbage_closes(s: &Server, msg: tokio_tungstenite::tungstenite::Message, code: u16) {
    use futures_util::SinkExt;
    let mut ws = connect(s, "").await;
    ws.send(msg).await.unwrap();
    let mut heard = Heard::default();
    read_until(&mut ws, &mut heard, Duration::from_secs(20), |h| {
        h.closed.is_some()
    })
    .await;
    let (got, reason) = heard.closed.clone().unwrap();
    assert_eq!(got, code, "{reason} {:?}", heard.events);
    let errors = heard.of("error");
    assert_eq!(errors.len(), 1, "{:?}", heard.events);
    assert!(!errors[0]["message"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_conversation_answers_sees_and_is_interrupted() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    // Garbage arrives on other conversations while the first is open: room for them.
    let s = Server::start_with(&[], "[llm]\nmax_tokens = 48\n[server]\nmax_sessions = 3\n");
    let dir = tempfile::tempdir().unwrap();
    let spoken = |text: &str| {
        let (wav, _) = questions(dir.path(), &[(text, 0.4)], 1.2);
        seesay::media::audio::read_file(&wav, 16_000).unwrap()
    };
    let q1 = spoken("What is the capital of France?");
    let q2 = spoken("Tell me about this animal.");

    let mut ws = connect(&s, "?barge_in=true").await;
    let mut heard = Heard::default();
    read_until(&mut ws, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    let ready = heard.of("ready")[0].clone();
    assert_eq!(ready["input_sample_rate"], 16000, "{ready}");
    let out_rate = ready["output_sample_rate"].as_u64().unwrap() as usize;

    // Garbage on other connections closes those only.
    garbage_closes(&s, Message::Text("this is not json".into()), 1007).await;
    garbage_closes(&s, Message::Binary(vec![1, 2, 3].into()), 1007).await;
    garbage_closes(&s, Message::Text("{\"type\": \"dance\"}".into()), 1003).await;
    let broken_image = "{\"type\": \"image\", \"data\": \"data:image/png;base64,AAAA\"}";
    garbage_closes(&s, Message::Text(broken_image.into()), 1007).await;
    // Over server.max_message_mb (4): the server stops reading and closes; the client sees the
    // close, or a reset while it is still sending the rest.
    let mut big = connect(&s, "").await;
    if big
        .send(Message::Binary(vec![0u8; 5 << 20].into()))
        .await
        .is_ok()
    {
        let mut heard = Heard::default();
        read_until(&mut big, &mut heard, Duration::from_secs(20), |h| {
            h.closed.is_some()
        })
        .await;
        let code = heard.closed.unwrap().0;
        assert!(code == 1002 || code == 1006, "{code}");
    }
    drop(big);

    // A camera snapshot: the page's way of showing seesay something.
    let png = std::fs::read(model_path("sample-chelsea")).unwrap();
    let uri = format!("data:image/png;base64,{}", base64_encode(&png));
    let image = serde_json::json!({"type": "image", "data": uri});
    ws.send(Message::Text(image.to_string().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut heard, Duration::from_secs(30), |h| {
        !h.of("caption").is_empty()
    })
    .await;

    // A question: its transcript, the answer as text and as audio.
    send_audio(&mut ws, &q1).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.audio.contains_key(&1)
    })
    .await;
    let transcript = heard.of("transcript")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let w = words(&transcript);
    assert!(
        w.contains(&"capital".to_string()) && w.contains(&"france".to_string()),
        "{transcript}"
    );
    assert!(!heard.of("answer").is_empty());
    assert_eq!(heard.of("speech_started")[0]["turn"], 1);

    // The second question while the first answer is still playing: barge-in.
    send_audio(&mut ws, &q2).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(90), |h| {
        h.turn_done(2).is_some()
    })
    .await;
    assert_eq!(heard.of("speech_started")[1]["turn"], 2);
    let first = heard
        .turn_done(1)
        .expect("turn 1 is reported when interrupted");
    assert_eq!(first["interrupted"], true, "{first}");
    let played = first["answer_audio_s"].as_f64().unwrap();
    let sent = heard.audio[&1] as f64 / 2.0 / out_rate as f64;
    assert!(played < sent, "interrupted at {played} s of {sent} s sent");
    let second = heard.turn_done(2).unwrap();
    eprintln!(
        "turn 1: {first}\nturn 2: {second}\ncaption: {}",
        heard.of("caption")[0]
    );
    assert_eq!(second["interrupted"], false, "{second}");
    assert!(heard.audio[&2] > 0);
    for key in ["transcript_ms", "first_token_ms", "voice_to_voice_ms"] {
        let v = second[key].as_f64().unwrap();
        assert!(v > 0.0 && v < 60_000.0, "{key} = {v}: {second}");
    }
    assert!(heard.closed.is_none(), "{:?}", heard.closed);
    ws.close(None).await.unwrap();

    // Half duplex: the same question spoken while the answer plays does not interrupt it; it
    // is answered once the answer is over.
    let mut ws = connect(&s, "?barge_in=false").await;
    let mut heard = Heard::default();
    send_audio(&mut ws, &q1).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.audio.contains_key(&1)
    })
    .await;
    send_audio(&mut ws, &q2).await;
    // The client keeps streaming (silence), as a microphone does.
    send_audio(&mut ws, &vec![0.0; 16_000 * 2]).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(90), |h| {
        h.turn_done(2).is_some()
    })
    .await;
    let first = heard.turn_done(1).unwrap();
    assert_eq!(first["interrupted"], false, "{first}");
    let spoken = heard.audio[&1] as f64 / 2.0 / out_rate as f64;
    assert!(
        (first["answer_audio_s"].as_f64().unwrap() - spoken).abs() < 0.01,
        "{first}"
    );
    let second = heard.turn_done(2).unwrap();
    assert!(
        words(second["transcript"].as_str().unwrap()).contains(&"animal".into()),
        "{second}"
    );
    ws.close(None).await.unwrap();

    // The server is still serving, and counted the conversation.
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("stage=\"conversation_voice_to_voice\""),
        "{metrics}"
    );
    assert!(metrics.contains("seesay_conversations"), "{metrics}");
    // Each of the four turns reported done is counted once by what ended it.
    let endings: Vec<(&str, u64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("seesay_turn_endings_total{by=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(by, n)| (by, n.trim().parse().unwrap()))
        .collect();
    assert_eq!(endings.iter().map(|e| e.1).sum::<u64>(), 4, "{metrics}");
    assert!(
        endings
            .iter()
            .all(|(by, _)| ["model", "unsure", "silence", "length"].contains(by)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_keeps_what_it_sees_only_in_the_store_it_names() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    // Two places: the first conversation's stages may still be reading the photo (OCR, seconds
    // on two cores) when the second connects, and the default (one on two cores) would make it
    // wait for them.
    let s = Server::start_with(
        &[("SEESAY_DATA_DIR", data.as_str())],
        "[server]\nmax_sessions = 2\n",
    );
    // A name that is not a plain name is refused before the conversation starts.
    let url = format!("ws://127.0.0.1:{}/v1/conversation?memory=../x", s.http);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let png = std::fs::read(model_path("sample-chelsea")).unwrap();
    let uri = format!("data:image/png;base64,{}", base64_encode(&png));
    let image = serde_json::json!({"type": "image", "data": uri}).to_string();
    for query in ["?memory=desk", ""] {
        let mut ws = connect(&s, query).await;
        ws.send(Message::Text(image.clone().into())).await.unwrap();
        let mut heard = Heard::default();
        read_until(&mut ws, &mut heard, Duration::from_secs(30), |h| {
            !h.of("caption").is_empty()
        })
        .await;
        ws.close(None).await.unwrap();
    }
    let listed: serde_json::Value = serde_json::from_str(&s.get("/v1/memory?memory=desk")).unwrap();
    let items = listed["data"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "the named conversation's scene, once: {listed}"
    );
    assert_eq!(items[0]["kind"], "seen", "{listed}");
    assert!(
        items[0]["text"].as_str().unwrap().contains("cat"),
        "{listed}"
    );
    // The unnamed conversation kept nothing anywhere.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(files, ["desk.sqlite"]);
}
