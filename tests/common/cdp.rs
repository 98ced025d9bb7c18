//! Headless Chromium driven over the DevTools protocol: just enough of CDP
//! (JSON over one WebSocket, `tungstenite`) to open pages, evaluate
//! JavaScript and take screenshots. One browser process per [`Browser`],
//! killed on drop; every wait is bounded.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary, or a failure naming the package to install.
pub fn require_chromium() -> PathBuf {
    for candidate in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(candidate).output() {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!("chromium not found: install Debian's `chromium` package (apt-get install chromium)");
}

pub struct Browser {
    child: Option<Child>,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// One page (a target with a flattened session).
#[derive(Debug, Clone)]
pub struct Page {
    pub session: String,
    pub target: String,
}

impl Browser {
    /// Starts headless Chromium with a fake microphone playing `fake_mic` (a WAV file).
    pub fn start(fake_mic: &Path) -> Browser {
        let exe = require_chromium();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
                "--window-size=520,760",
            ])
            .arg(format!("--use-file-for-fake-audio-capture={}", fake_mic.display()))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port and the browser endpoint's path here.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromium exited ({status}) before its DevTools endpoint was up");
            }
            assert!(Instant::now() < deadline, "chromium's DevTools endpoint not up after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connect to the DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Browser { child: Some(child), ws, next_id: 0, _profile: profile }
    }

    /// Sends a command (on `session`, or the browser) and waits for its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).expect("send a DevTools command");
        loop {
            let reply = match self.ws.read().expect("read from DevTools") {
                Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).expect("DevTools JSON"),
                _ => continue,
            };
            if reply["id"].as_u64() == Some(id) {
                if let Some(err) = reply.get("error") {
                    panic!("DevTools {method} failed: {err}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page.
    pub fn open(&mut self, url: &str) -> Page {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }))["targetId"].as_str().unwrap().to_owned();
        let session = self.call(None, "Target.attachToTarget", json!({ "targetId": target, "flatten": true }))["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = Page { session, target };
        self.call(Some(&page.session), "Page.enable", json!({}));
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }));
        self.wait_for(&page, "document.readyState === 'complete' && !!window.voiceEdgeWidget", Duration::from_secs(20), "the widget page to load");
        page
    }

    /// Evaluates `expr` in `page` (promises awaited) and returns its value.
    pub fn eval(&mut self, page: &Page, expr: &str) -> Value {
        let r = self.call(
            Some(&page.session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript {expr:?} threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true; panics with `what` and `dump` (an
    /// expression describing the page) after `timeout`.
    pub fn wait_for(&mut self, page: &Page, expr: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(page, &format!("!!({expr})")) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let state = self.eval(page, "document.body ? document.body.innerText : ''");
                panic!("timed out after {timeout:?} waiting for {what}; page text: {state}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element with `data-testid` = `testid` (with a real mouse event at its centre).
    pub fn click(&mut self, page: &Page, testid: &str) {
        let rect = self.eval(
            page,
            &format!(
                "(() => {{ const e = document.querySelector('[data-testid=\"{testid}\"]'); if (!e) return null; \
                 e.scrollIntoView(); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2, e.disabled === true]; }})()"
            ),
        );
        let arr = rect.as_array().unwrap_or_else(|| panic!("no element with data-testid={testid}"));
        assert_eq!(arr[2], json!(false), "{testid} is disabled");
        let (x, y) = (arr[0].as_f64().unwrap(), arr[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                Some(&page.session),
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// A PNG of the page's viewport.
    pub fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        use base64::Engine;
        let r = self.call(Some(&page.session), "Page.captureScreenshot", json!({ "format": "png" }));
        base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).expect("base64 PNG")
    }

    pub fn close_page(&mut self, page: &Page) {
        self.call(None, "Target.closeTarget", json!({ "targetId": page.target }));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
