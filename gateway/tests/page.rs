//! The live page `GET /` in a real headless browser (Debian's chromium,
//! driven by chromedriver over WebDriver): a person types a pattern and a
//! filter, subscribes, and the events published afterwards appear, newest
//! first, those the filter leaves out do not.
//!
//! scripts/test.sh installs chromium and chromium-driver; the binaries are
//! `OPAL_CHROMEDRIVER_BIN` and `OPAL_CHROMIUM_BIN` (defaults: Debian's paths).

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opal_schemas::EventType;
use serde_json::{Value, json};
use ws_support::*;

/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless chromium session.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin = std::env::var("OPAL_CHROMEDRIVER_BIN")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {driver_bin} (scripts/test.sh installs chromium-driver): {e}")
            });
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(r) = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                && r.json::<Value>()
                    .await
                    .is_ok_and(|s| s["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chromium =
            std::env::var("OPAL_CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let session = browser
            .call(
                "POST",
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-background-networking", "--disable-dev-shm-usage"],
                    },
                }}}),
            )
            .await;
        let id = session["sessionId"].as_str().unwrap().to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url).json(&body),
            _ => self.http.delete(&url),
        };
        let response = request.send().await.expect("webdriver");
        let status = response.status();
        let answer: Value = response.json().await.expect("webdriver JSON");
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.call("POST", &format!("/element/{element}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.element(css).await;
        let text = self
            .call("GET", &format!("/element/{element}/text"), json!({}))
            .await;
        text.as_str().unwrap().to_owned()
    }

    /// The rows shown, top to bottom: (event id, type, key).
    async fn rows(&self) -> Vec<(String, String, String)> {
        let rows = self
            .call(
                "POST",
                "/execute/sync",
                json!({"script": "return Array.from(document.querySelectorAll('#events tr.event')).map(r => [r.dataset.eventId, r.querySelector('.type').textContent, r.querySelector('.key').textContent]);", "args": []}),
            )
            .await;
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let text = |i: usize| r[i].as_str().unwrap().to_owned();
                (text(0), text(1), text(2))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_page_shows_events_published_after_it_subscribed_newest_first() {
    let stack = Stack::new().await;
    let mut gateway = stack.gateway(free_port(), "", &[]);
    gateway.ready().await;
    let browser = Browser::start().await;

    browser
        .call("POST", "/url", json!({"url": gateway.url("/")}))
        .await;
    browser.type_into("#patterns", "decision.*").await;
    browser
        .type_into("#filter", r#"{"field": "client_name", "eq": "acme-0"}"#)
        .await;
    let button = browser.element("#go").await;
    browser
        .call("POST", &format!("/element/{button}/click"), json!({}))
        .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let status = browser.text("#status").await;
        if status.starts_with("Subscribed") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "page status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Keys acme-0 and acme-1 alternate; the filter keeps acme-0's.
    let published = stack
        .publish(EventType::DecisionGenerated, 6, 2, "acme")
        .await;
    let wanted: Vec<String> = published.iter().step_by(2).rev().cloned().collect();
    stack
        .publish(EventType::KnowledgeUpserted, 2, 2, "kb")
        .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let rows = loop {
        let rows = browser.rows().await;
        if rows.len() >= wanted.len() {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page shows {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown: Vec<String> = rows.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(shown, wanted, "acme-0's events, newest first");
    assert!(
        rows.iter()
            .all(|(_, t, key)| t == "decision.generated" && key == "acme-0"),
        "{rows:?}"
    );
    browser.call("DELETE", "", json!({})).await;
}
