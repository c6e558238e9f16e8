//! A real browser for the dashboard's tests: headless Chromium (Debian's `chromium`, which
//! `scripts/test.sh` installs) driven over the DevTools protocol, so a test waits for what
//! the page shows rather than for a fixed time, and keeps a screenshot of it under
//! `target/test-artifacts/`.

use super::process::{ChildGuard, TempDir};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The page's session on the browser's one DevTools connection.
    session: String,
    next_id: u64,
    _child: ChildGuard,
    _profile: TempDir,
}

impl Browser {
    /// Chromium showing `url` in a 1400x900 window.
    pub async fn open(url: &str) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "Chromium is not installed: run ./scripts/test.sh (it installs Debian's `chromium` \
             package)"
        );
        let profile = TempDir::new("chromium");
        let child = std::process::Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting chromium");
        let child = ChildGuard(child);
        // Chromium writes the port it chose, and its browser endpoint, to this file.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(Instant::now() < deadline, "Chromium did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (devtools, _) = tokio_tungstenite::connect_async(&endpoint)
            .await
            .expect("connecting to Chromium's DevTools endpoint");
        let mut browser = Browser {
            devtools,
            session: String::new(),
            next_id: 0,
            _child: child,
            _profile: profile,
        };
        let page = loop {
            let targets = browser.call("Target.getTargets", json!({})).await;
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|all| all.iter().find(|t| t["type"] == "page"))
                .map(|t| t["targetId"].clone());
            if let Some(page) = page {
                break page;
            }
            assert!(Instant::now() < deadline, "Chromium opened no page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// One DevTools command (to the page once attached); its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.devtools
            .send(Message::text(message.to_string()))
            .await
            .expect("sending to Chromium");
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(60), self.devtools.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method} in 60 s"))
                .expect("Chromium closed its DevTools connection")
                .expect("reading from Chromium");
            let Message::Text(text) = answer else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] != json!(id) {
                continue; // an event
            }
            assert!(answer["error"].is_null(), "{method}: {answer}");
            return answer["result"].clone();
        }
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|thrown| panic!("{expression}: {thrown}"))
    }

    /// The value of a JavaScript expression in the page, or what it threw.
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        match result.get("exceptionDetails") {
            Some(thrown) => Err(thrown["exception"]["description"].clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Waits (up to `within`) until `expression` is truthy in the page (one that throws, as
    /// before the page has loaded, is not); its value then.
    pub async fn wait_for(&mut self, what: &str, within: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.try_eval(expression).await.unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body.innerText").await;
                let shot = self.screenshot("timed-out").await;
                panic!(
                    "timed out after {within:?} waiting for {what}; the page shows \
                     (screenshot {shot}):\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the page shows as `target/test-artifacts/NAME.png`; the path.
    pub async fn screenshot(&mut self, name: &str) -> String {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/test-artifacts");
        std::fs::create_dir_all(artifacts).unwrap();
        let path = format!("{artifacts}/{name}.png");
        std::fs::write(&path, png).unwrap();
        path
    }
}
