//! A real browser for the page tests: Debian's headless Chromium, driven through ChromeDriver
//! with the W3C WebDriver protocol (plain JSON over HTTP). tests/run.sh installs both.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    profile: std::path::PathBuf,
}

fn binary(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run tests/run.sh, which installs Debian's chromium and chromium-driver"
    );
    path
}

impl Browser {
    /// A phone-sized window.
    pub async fn start() -> Self {
        Self::sized(412, 900).await
    }

    pub async fn sized(width: u32, height: u32) -> Self {
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let port = super::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        super::wait_port(port).await;
        let profile = std::env::temp_dir().join(format!("keel-chromium-{}", uuid::Uuid::new_v4()));
        let http = keel::net::http_client()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_string();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            driver,
            profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    /// Ends the browser session (Chromium exits), then the driver.
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    pub async fn goto(&self, url: &str) {
        let v = self
            .command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(v.is_null(), "navigating to {url}: {v}");
    }

    /// The element `css` selects, waiting a few seconds for it to appear.
    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `command` on the element `css` selects; finds it again when the page re-rendered
    /// it in between (the console refreshes itself).
    async fn on_element(
        &self,
        css: &str,
        method: reqwest::Method,
        action: &str,
        body: Option<Value>,
    ) -> Value {
        for _ in 0..20 {
            let id = self.element(css).await;
            let v = self
                .command(
                    method.clone(),
                    &format!("/element/{id}{action}"),
                    body.clone(),
                )
                .await;
            if v["error"] != "stale element reference" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css} kept being re-rendered");
    }

    pub async fn click(&self, css: &str) {
        let v = self
            .on_element(css, reqwest::Method::POST, "/click", Some(json!({})))
            .await;
        assert!(v.is_null(), "clicking {css}: {v}");
    }

    /// Chooses the option of value `value` in the `<select>` `css` (as a click does).
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value='{value}']")).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let v = self
            .on_element(
                css,
                reqwest::Method::POST,
                "/value",
                Some(json!({"text": text})),
            )
            .await;
        assert!(v.is_null(), "typing into {css}: {v}");
    }

    /// Presses Enter on the element `css` selects (focusing it): the keyboard's way to use it.
    pub async fn press_enter(&self, css: &str) {
        self.type_into(css, "\u{E007}").await;
    }

    /// The rendered text of `css` ("" while it is hidden).
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .on_element(css, reqwest::Method::GET, "/text", None)
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `words`; returns the text.
    pub async fn wait_for_text(&self, css: &str, words: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text(css).await;
            if text.contains(words) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said {words:?}; it says {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn title(&self) -> String {
        let v = self.command(reqwest::Method::GET, "/title", None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Saves what the browser shows to `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a screenshot"))
            .unwrap();
        let dir = format!("{}/target/screenshots", env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
