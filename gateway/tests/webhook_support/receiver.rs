//! A real HTTP webhook receiver: keeps every request (headers and raw body),
//! answers the status it is told to, and can go down (its port refuses
//! connections) and come back on the same port.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The `webhook-*` and `opal-*` headers.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Request {
    pub fn webhook_id(&self) -> &str {
        self.headers.get("webhook-id").map_or("", String::as_str)
    }

    /// The events in the body (one object, or a batch's array).
    pub fn events(&self) -> Vec<Value> {
        match serde_json::from_str(&self.body).unwrap_or(Value::Null) {
            Value::Array(events) => events,
            one => vec![one],
        }
    }
}

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

pub struct Hook {
    pub port: u16,
    shared: Shared,
    server: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Hook {
    pub async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hook = Hook {
            port,
            shared: Shared {
                requests: Arc::default(),
                status: Arc::new(AtomicU16::new(200)),
                delay_ms: Arc::new(AtomicU64::new(0)),
            },
            server: Mutex::new(None),
        };
        hook.serve(listener);
        hook
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move {
                    let headers = headers
                        .iter()
                        .filter(|(k, _)| {
                            k.as_str().starts_with("webhook-") || k.as_str().starts_with("opal-")
                        })
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let delay = shared.delay_ms.load(Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    shared
                        .requests
                        .lock()
                        .unwrap()
                        .push(Request { headers, body });
                    StatusCode::from_u16(shared.status.load(Ordering::Relaxed)).unwrap()
                }
            }),
        );
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            // As a production receiver would: no Nagle delay on answers.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        *self.server.lock().unwrap() = Some((stop, task));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// From now on, answer `status`.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// From now on, take `ms` before answering.
    pub fn delay(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Goes down: the port refuses connections (idle keep-alive connections closed).
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some((stop, task)) = server {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the receiver's port still accepts connections"
        );
    }

    /// Comes back on the same port.
    pub async fn restart(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the receiver's port");
        self.serve(listener);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The event ids received (a batch's each), with repeats.
    pub fn event_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .flat_map(Request::events)
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until every id of `ids` was received at least once.
    pub async fn wait_for_all(&self, ids: &[String], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got: std::collections::HashSet<String> = self.event_ids().into_iter().collect();
            let missing = ids.iter().filter(|id| !got.contains(*id)).count();
            if missing == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing} of {} events not received within {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.lock().unwrap().take() {
            stop.cancel();
            task.abort();
        }
    }
}
