//! Shared set-up for the WebSocket, replay and page tests: a provisioned
//! topic prefix on the stack under test, the gateway as a real process with a
//! routes file, real WebSocket clients (tokio-tungstenite) and a real HTTP
//! webhook receiver.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use opal_e2e::{brokers, redis_url, registry_url, unique};
// Re-exported for the tests; not every test binary uses both.
#[allow(unused_imports)]
pub use opal_e2e::probe::{free_port, metric};
use opal_e2e::provision::{provisioned_prefix, publisher};
use opal_producers::Publisher;
use opal_schemas::{Event, EventType};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A fresh topic prefix with every event topic and schema provisioned, and a
/// publisher for it.
pub struct Stack {
    pub prefix: String,
    pub group: String,
    pub publisher: Publisher,
}

impl Stack {
    pub async fn new() -> Stack {
        let (config, prefix) = provisioned_prefix("gw", &brokers(), &registry_url()).await;
        let publisher = publisher(&config);
        Stack {
            prefix,
            group: unique("opal-gateway-test"),
            publisher,
        }
    }

    /// `n` examples of `event_type` with fresh envelopes, keys `<key>-0` ..
    /// spread over `keys` keys, published in one batch; their ids in order.
    pub async fn publish(
        &self,
        event_type: EventType,
        n: usize,
        keys: usize,
        key: &str,
    ) -> Vec<String> {
        self.publish_with(event_type, n, keys, key, |_| {}).await
    }

    /// As [`Stack::publish`], each event changed by `change` first.
    pub async fn publish_with(
        &self,
        event_type: EventType,
        n: usize,
        keys: usize,
        key: &str,
        change: impl Fn(&mut Event),
    ) -> Vec<String> {
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let mut e = opal_schemas::samples::default_example(event_type);
                *e.envelope_mut() = self.publisher.new_envelope(None);
                *e.key_mut() = format!("{key}-{}", i % keys.max(1));
                change(&mut e);
                e
            })
            .collect();
        self.publisher
            .publish_batch(events)
            .await
            .into_iter()
            .map(|d| d.expect("published").event_id)
            .collect()
    }

    /// Starts the gateway on `port` with `routes` (a routes file's text).
    pub fn gateway(&self, port: u16, routes: &str, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("routes.toml");
        std::fs::write(&file, routes).expect("write routes");
        let child = Command::new(env!("CARGO_BIN_EXE_opal-gateway"))
            .arg("--routes")
            .arg(&file)
            .args(extra)
            .env("KAFKA_BROKERS", brokers())
            .env("SCHEMA_REGISTRY_URL", registry_url())
            .env("REDIS_URL", redis_url())
            .env("OPAL_TOPIC_PREFIX", &self.prefix)
            .env("OPAL_CONSUMER_GROUP", &self.group)
            .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("OPAL_TEST_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn opal-gateway");
        Gateway {
            child,
            port,
            _dir: dir,
        }
    }
}

/// The gateway process (killed when dropped).
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Waits until `/health/ready` answers 200: every group's start position is fixed then.
    pub async fn ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("opal-gateway exited during start-up: {status}");
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway not ready within {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A WebSocket client, connected.
    pub async fn connect(&self) -> Socket {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", self.port))
                .await
                .expect("websocket connect");
        socket
    }

    /// A client that subscribed with `request` and got `subscribed`.
    pub async fn subscribe(&self, request: Value) -> Socket {
        let mut socket = self.connect().await;
        socket
            .send(Message::text(request.to_string()))
            .await
            .expect("send subscribe");
        let first = next_message(&mut socket).await;
        assert_eq!(first["type"], "subscribed", "{first}");
        socket
    }
}

/// The next JSON message (pings are answered by tungstenite as we read),
/// within [`TIMEOUT`] whatever pings arrive meanwhile.
pub async fn next_message(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a message within the timeout")
            .expect("connection open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
            Message::Close(close) => panic!("closed by the server: {close:?}"),
            _ => continue,
        }
    }
}

/// The next `n` event messages (other messages in between are skipped).
pub async fn next_events(socket: &mut Socket, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let message = next_message(socket).await;
        if message["type"] == "event" {
            events.push(message);
        }
    }
    events
}

/// Messages arriving within `quiet` of each other, until a gap of `quiet`.
pub async fn drain(socket: &mut Socket, quiet: Duration) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(quiet, socket.next()).await {
        if let Message::Text(text) = frame {
            messages.push(serde_json::from_str(&text).expect("JSON message"));
        }
    }
    messages
}

/// One POST a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub body: Value,
}

/// A real HTTP webhook receiver on a free port, answering 200 and keeping
/// what it got.
pub struct Receiver {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let kept = kept.clone();
                    async move {
                        let webhook_id = headers
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        kept.lock().unwrap().push(Received { webhook_id, body });
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver");
        });
        Receiver {
            port,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The event ids received so far (a batch's events each).
    pub fn event_ids(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|r| match &r.body {
                Value::Array(events) => events.clone(),
                one => vec![one.clone()],
            })
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until at least `n` events arrived; their ids.
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let ids = self.event_ids();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} of {n} events",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A webhook secret for tests (`whsec_` + base64 of 24 bytes).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
