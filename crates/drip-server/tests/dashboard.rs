//! The live dashboard in a real browser: a `drip serve` process with three
//! buckets under traffic, `/` loaded in headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs) driven over the DevTools protocol.
//! The page must show every bucket with a level that moves, and its busiest
//! keys, fullest first, with levels that move too; draw its charts
//! with the vendored uPlot, and load nothing from anywhere but the server:
//! Chromium runs with every host but 127.0.0.1 unresolvable (the network
//! off), and every request it made is checked. A screenshot is saved as
//! `target/dashboard.png`.

mod serve_proc;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use serve_proc::Serve;
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

const BUCKETS: [(&str, &str); 3] = [
    ("alpha", r#"{"capacity": 100, "leak_rate": 5}"#),
    (
        "beta",
        r#"{"mode": "shape", "capacity": 50, "leak_rate": 4}"#,
    ),
    ("gamma", r#"{"capacity": 20, "leak_rate": 1}"#),
];

/// Headless Chromium in its own process group, killed (group and all) on drop.
struct Chromium {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Every URL the page requested (Network.requestWillBeSent).
    requested: Vec<String>,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium_binary() -> String {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return name.to_owned();
        }
    }
    panic!("chromium is not installed: `apt-get install chromium` (.ci/run does)");
}

impl Chromium {
    fn start() -> Chromium {
        let profile = TempDir(
            std::env::temp_dir().join(format!("drip-dashboard-chromium-{}", std::process::id())),
        );
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
                // The network is off: only the server on loopback resolves.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("chromium did not print its DevTools address");
            if let Some(u) = line.split("DevTools listening on ").nth(1) {
                break u.trim().to_owned();
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Chromium {
            child,
            ws,
            next_id: 0,
            session: None,
            requested: Vec::new(),
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result, noting the events
    /// that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let text = match self.ws.read().expect("DevTools connection") {
                Message::Text(t) => t.to_string(),
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["method"] == "Network.requestWillBeSent" {
                let url = v["params"]["request"]["url"].as_str().unwrap_or("");
                self.requested.push(url.to_owned());
            }
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens a tab and attaches to it; later calls go to that tab.
    fn open_tab(&mut self) {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        self.call("Network.enable", json!({}));
        self.call("Page.enable", json!({}));
    }

    /// Evaluates `js` in the page; its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser and its helper processes share one group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys of every bucket with traffic, and every how many rounds each gets a
/// request: their levels differ, so the busiest keys have an order.
const KEYS: [(&str, u64); 4] = [("", 1), ("k1", 1), ("k2", 2), ("k3", 4)];

/// Sends a round every 40 ms until stopped: one allow per bucket and key
/// whose turn it is (more than any of them leaks).
fn traffic(http: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                for (bucket, _) in BUCKETS {
                    for (key, every) in KEYS {
                        if round % every == 0 {
                            let _ = client
                                .post(format!("http://{http}/v1/buckets/{bucket}/allow"))
                                .body(json!({ "key": key }).to_string())
                                .send()
                                .await;
                        }
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    })
}

/// The level each bucket card shows, by bucket.
const LEVELS_JS: &str = r#"JSON.stringify(Object.fromEntries(
    [...document.querySelectorAll('.bucket')].map(e => [e.dataset.bucket, e.querySelector('.level').textContent])))"#;

fn levels(chrome: &mut Chromium) -> BTreeMap<String, String> {
    let v = chrome.eval(LEVELS_JS);
    serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap()
}

/// The busiest-key rows each bucket card shows, in order: (key, level).
const KEY_ROWS_JS: &str = r#"JSON.stringify(Object.fromEntries(
    [...document.querySelectorAll('.bucket')].map(e => [e.dataset.bucket,
        [...e.querySelectorAll('tr.key-row')].map(r => [r.dataset.key, r.dataset.level])])))"#;

type KeyRows = BTreeMap<String, Vec<(String, String)>>;

fn key_rows(chrome: &mut Chromium) -> KeyRows {
    let v = chrome.eval(KEY_ROWS_JS);
    serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap()
}

/// The level `key`'s row of `bucket` shows, if it is shown.
fn key_level<'a>(rows: &'a KeyRows, bucket: &str, key: &str) -> Option<&'a str> {
    rows.get(bucket)?
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, l)| l.as_str())
}

/// Every bucket shows its busy keys k1, k2, k3 holding water, fullest first.
fn busy_keys_shown(rows: &KeyRows) -> bool {
    BUCKETS.iter().all(|(b, _)| {
        let Some(r) = rows.get(*b) else { return false };
        let levels: Vec<f64> = r.iter().filter_map(|(_, l)| l.parse().ok()).collect();
        ["k1", "k2", "k3"].iter().all(|k| {
            key_level(rows, b, k)
                .and_then(|l| l.parse::<f64>().ok())
                .is_some_and(|l| l > 0.0)
        }) && levels.len() == r.len()
            && levels.windows(2).all(|w| w[0] >= w[1])
    })
}

fn target_dir() -> PathBuf {
    // target/debug/drip -> target/
    PathBuf::from(serve_proc::DRIP)
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf()
}

#[test]
fn dashboard_shows_every_bucket_live_and_loads_nothing_external() {
    let serve = Serve::start();
    for (bucket, body) in BUCKETS {
        serve.put_bucket(bucket, body);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(serve.http.clone(), stop.clone());

    let mut chrome = Chromium::start();
    chrome.open_tab();
    let page = format!("{}/", serve.http_url());
    chrome.call("Page.navigate", json!({"url": page}));

    // Wait (polling the DOM) for every bucket to appear with a level...
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, first_keys) = loop {
        let l = levels(&mut chrome);
        // Shown, and holding water from the traffic.
        let keys = key_rows(&mut chrome);
        if BUCKETS.iter().all(|(b, _)| {
            l.get(*b)
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        }) && busy_keys_shown(&keys)
        {
            break (l, keys);
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed every bucket and its busiest keys: {l:?} {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // ...then stop the traffic: every level must move as its bucket leaks
    // (under traffic a full bucket can sit at its capacity).
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    // So must the busiest key's level (k1 gets the most traffic).
    let mut moved = BTreeMap::new();
    let mut keys_moved = BTreeMap::new();
    while moved.len() < BUCKETS.len() || keys_moved.len() < BUCKETS.len() {
        let now = levels(&mut chrome);
        let keys = key_rows(&mut chrome);
        for (b, _) in BUCKETS {
            if now[b] != first[b] {
                moved.insert(b, (first[b].clone(), now[b].clone()));
            }
            let (was, is) = (key_level(&first_keys, b, "k1"), key_level(&keys, b, "k1"));
            if is.is_some() && is != was {
                keys_moved.insert(b, (was.map(str::to_owned), is.map(str::to_owned)));
            }
        }
        assert!(
            Instant::now() < deadline,
            "levels did not move: first {first:?} {first_keys:?}, now {now:?} {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Charts drawn by the vendored uPlot, one per bucket, with samples.
    let charts = chrome.eval(
        "typeof uPlot === 'function' ? document.querySelectorAll('.bucket .uplot canvas').length : -1",
    );
    assert_eq!(charts, json!(3), "one uPlot chart per bucket");
    let cluster = chrome.eval("document.querySelector('#cluster .leader').textContent");
    assert!(
        cluster.as_str().is_some_and(|s| !s.is_empty()),
        "leader shown"
    );
    let shape_queue = chrome
        .eval("document.querySelector('.bucket[data-bucket=beta] .queue-wrap').style.display");
    assert_eq!(shape_queue, json!(""), "the shape bucket shows its queue");

    // Let a few more samples land on the charts, then keep a picture.
    let samples = chrome.eval("+document.querySelector('.bucket').dataset.samples");
    let want = samples.as_u64().unwrap_or(0) + 3;
    while chrome
        .eval("+document.querySelector('.bucket').dataset.samples")
        .as_u64()
        .unwrap_or(0)
        < want
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "no more samples"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let shot = chrome.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    let path = target_dir().join("dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Nothing came from anywhere but the server.
    let origin = serve.http_url();
    assert!(
        chrome
            .requested
            .iter()
            .any(|u| u.contains("uPlot.iife.min.js"))
    );
    let external: Vec<_> = chrome
        .requested
        .iter()
        .filter(|u| !u.starts_with(&origin) && !u.starts_with("data:") && *u != "about:blank")
        .collect();
    assert!(external.is_empty(), "external requests: {external:?}");

    eprintln!("levels moved: {moved:?}; busiest key k1 moved: {keys_moved:?}");
}

/// 1,000 buckets: the events carry one page of them, busiest first, and the
/// count of all; no browser needed.
#[test]
fn a_thousand_buckets_come_a_page_at_a_time_busiest_first() {
    let serve = Serve::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = serve.http_url();
        for i in 0..1000 {
            let r = client
                .put(format!("{base}/v1/buckets/b{i:04}"))
                .body(r#"{"capacity": 1000, "leak_rate": 1}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        // Read the event stream while one bucket gets traffic.
        let mut events = client
            .get(format!("{base}/v1/events?page=0&per_page=20"))
            .send()
            .await
            .unwrap();
        assert_eq!(events.headers()["content-type"], "text/event-stream");
        let mut text = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for _ in 0..20 {
                client
                    .post(format!("{base}/v1/buckets/b0777/allow"))
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            // The latest complete event.
            let data: Vec<Value> = text
                .split("\n\n")
                .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            if let Some(last) = data.last() {
                assert_eq!(last["total_buckets"], 1000);
                let page = last["buckets"].as_array().unwrap();
                assert_eq!(page.len(), 20);
                if page[0]["bucket_id"] == "b0777" && page[0]["admitted_per_s"].as_f64() > Some(0.0)
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "b0777 never came first: {text:.2000}"
            );
        }
        // Another page: other buckets, the same total.
        let r = client
            .get(format!("{base}/v1/events?page=49&per_page=20"))
            .send()
            .await
            .unwrap();
        let mut r = r;
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data: Value =
            serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
                .unwrap();
        assert_eq!(data["page"], 49);
        assert_eq!(data["buckets"].as_array().unwrap().len(), 20);
        assert!(
            data["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["bucket_id"] != "b0777")
        );
    });
}
