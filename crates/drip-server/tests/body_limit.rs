//! A body over the 64 KiB limit gets its 413 and JSON error even when the
//! client keeps sending it (an 8 MiB POST, the way curl sends without
//! `Expect: 100-continue`): the server reads and drops the rest, up to a
//! bound, before it answers, instead of closing on unread data (which makes
//! the kernel reset the connection and lose the answer). A client that asks
//! `Expect: 100-continue` is answered at once, before it sends anything.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: usize = 8 * 1024 * 1024;

/// Sends `METHOD path` with a `BODY`-byte body (valid JSON, only too large)
/// over a raw socket, writing all of it while reading; returns what the
/// write did and the whole answer. With `expect_continue` it sends only the
/// head, as a client waiting for `100 Continue` does.
async fn send_big(
    s: &TestServer,
    method: &str,
    path: &str,
    expect_continue: bool,
) -> (std::io::Result<()>, String) {
    let stream = TcpStream::connect(s.http).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: drip\r\nContent-Type: application/json\r\n\
         Content-Length: {BODY}\r\n{expect}Connection: close\r\n\r\n"
    );
    // The writer hands its half back: dropping it would half-close the
    // socket, which hyper takes for a client that went away.
    let writer = tokio::spawn(async move {
        let sent = async {
            wr.write_all(head.as_bytes()).await?;
            if expect_continue {
                return Ok(());
            }
            let mut body = vec![b'a'; BODY];
            body[..8].copy_from_slice(b"{\"key\":\"");
            body[BODY - 2..].copy_from_slice(b"\"}");
            for chunk in body.chunks(64 * 1024) {
                wr.write_all(chunk).await?;
            }
            wr.flush().await
        }
        .await;
        (sent, wr)
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut answer))
        .await
        .expect("no answer within 30 s")
        .unwrap_or_else(|e| {
            panic!(
                "reading the answer failed: {e} (read so far: {:?})",
                String::from_utf8_lossy(&answer)
            )
        });
    let (wrote, _wr) = writer.await.unwrap();
    (wrote, String::from_utf8_lossy(&answer).into_owned())
}

/// The JSON error of a 413 answer.
fn error_of_413(answer: &str) -> Value {
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    let (_, body) = answer.split_once("\r\n\r\n").expect("no end of headers");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    v["error"].clone()
}

async fn server_with_bucket() -> TestServer {
    let s = TestServer::memory().await;
    let r = s.put("b", json!({"capacity": 10, "leak_rate": 1})).await;
    assert_eq!(r.status(), 200);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_body_reads_its_413_and_json_error() {
    let s = server_with_bucket().await;
    for (method, path) in [
        ("POST", "/v1/buckets/b/allow"),
        ("POST", "/v1/buckets/b/acquire"),
        ("PUT", "/v1/buckets/b"),
    ] {
        let (wrote, answer) = send_big(&s, method, path, false).await;
        let e = error_of_413(&answer);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("payload_too_large"), Some("body"))
        );
        // The server read the whole body: the client could send all of it.
        wrote.unwrap_or_else(|e| panic!("{method} {path}: sending the body failed: {e}"));
    }
    // Nothing was decided.
    let (_, st) = s.get_json("/v1/buckets/b").await;
    assert_eq!(st["total_requests"], 0);
}

#[tokio::test]
async fn expect_100_continue_is_refused_before_the_body_is_sent() {
    let s = server_with_bucket().await;
    let (wrote, answer) = send_big(&s, "POST", "/v1/buckets/b/allow", true).await;
    wrote.unwrap();
    // No "100 Continue" first: the 413 is the only answer.
    assert_eq!(error_of_413(&answer)["code"], "payload_too_large");
}
