//! One WebSocket client from its subscription to its close: registers it on
//! the hub, runs its `from` catch-up and merges it with the live stream at
//! the seam, sends pings, and writes its events; a kick from the hub (slow
//! client) or shutdown ends it with a close frame naming the reason.
//!
//! The seam: the client is registered on the live stream before the history
//! reader fixes, per partition, the end of what it reads (the high
//! watermark). Live events arriving meanwhile are held; once the history is
//! sent, held and later live events below a partition's end are dropped
//! (history had them), as is any event at or below the last offset sent on its
//! partition (the consumer retrying an event). Each event thus reaches the
//! client once, in offset order per partition.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::WsState;
use super::frames::{self, Close, Outgoing};
use super::hub::Registration;
use crate::replay::reader::{ReadError, ReadPlan, ReadSummary, Record};
use crate::selector::Selector;

/// How long a new connection may take to send its subscription.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(30);
/// How long a close frame may take to leave when the client does not read.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Serves one upgraded connection until it closes.
pub(super) async fn serve(mut socket: WebSocket, state: Arc<WsState>, shutdown: CancellationToken) {
    let subscription = tokio::select! {
        _ = shutdown.cancelled() => return close(&mut socket, Close::GOING_AWAY).await,
        first = tokio::time::timeout(SUBSCRIBE_WITHIN, socket.recv()) => first,
    };
    let text = match subscription {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) => {
            return refuse(
                &mut socket,
                "the first message must be a text subscribe message".to_owned(),
            )
            .await;
        }
        Err(_) => {
            return refuse(
                &mut socket,
                format!(
                    "no subscribe message within {} s",
                    SUBSCRIBE_WITHIN.as_secs()
                ),
            )
            .await;
        }
        // The client left, or the connection failed: nothing to tell.
        Ok(None | Some(Err(_))) => return,
    };
    let subscription = match state.subscription(&text) {
        Ok(found) => found,
        Err(reason) => return refuse(&mut socket, reason).await,
    };
    // Registered before anything is read back: the seam (see the module doc).
    let registration = state.hub.register(subscription.interest.clone());
    let hello = frames::subscribed(
        registration.id,
        subscription.route.as_deref(),
        subscription.from,
        state.hub.buffer(),
    );
    let mut client = Client {
        socket,
        registration,
        last_sent: HashMap::new(),
        seam: HashMap::new(),
        last_heard: Instant::now(),
        sent: 0,
    };
    if client.send_text(hello).await.is_err() {
        return;
    }
    let end = match subscription.from {
        Some(from_ms) => match client
            .catch_up(&state, &subscription.selector, from_ms, &shutdown)
            .await
        {
            Ok(()) => client.live(&state, &shutdown).await,
            Err(close) => close,
        },
        None => client.live(&state, &shutdown).await,
    };
    if let Some(close_frame) = end {
        state
            .hub
            .metrics()
            .closed
            .with_label_values(&[&close_frame.code.to_string()])
            .inc();
        let _ =
            tokio::time::timeout(CLOSE_WITHIN, send_close(&mut client.socket, close_frame)).await;
    }
}

async fn refuse(socket: &mut WebSocket, reason: String) {
    tracing::info!(reason = %reason, "websocket subscription refused");
    let _ = socket
        .send(Message::Text(frames::error(&reason).into()))
        .await;
    close(socket, Close::refused(reason)).await;
}

async fn close(socket: &mut WebSocket, close: Close) {
    let _ = tokio::time::timeout(CLOSE_WITHIN, send_close(socket, close)).await;
}

async fn send_close(socket: &mut WebSocket, close: Close) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code: close.code,
            reason: Utf8Bytes::from(close.reason.into_owned()),
        })))
        .await
}

/// How a phase ended: `None` when the client left, else the close to send.
type End = Option<Close>;

struct Client {
    socket: WebSocket,
    registration: Registration,
    /// Last offset sent per (topic, partition).
    last_sent: HashMap<(Arc<str>, i32), i64>,
    /// End of the history read per (topic, partition): live events below it were sent from history.
    seam: HashMap<(String, i32), i64>,
    last_heard: Instant,
    sent: u64,
}

enum Outcome {
    Sent,
    Closed(End),
}

impl Client {
    /// Sends the events since `from_ms`, holding live ones meanwhile, then the held ones past the seam.
    async fn catch_up(
        &mut self,
        state: &Arc<WsState>,
        selector: &Selector,
        from_ms: i64,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let (tx, mut history) = mpsc::channel::<Record>(256);
        let (plan_tx, mut plan_rx) = tokio::sync::oneshot::channel::<ReadPlan>();
        let reader = state.reader.clone();
        let topics = state.topics_for(selector);
        let read = tokio::spawn(async move {
            let (consumer, plan) = reader.plan(topics, from_ms, None).await?;
            let _ = plan_tx.send(plan.clone());
            reader.read(consumer, &plan, tx).await
        });
        let _abort = AbortOnDrop(read.abort_handle());
        let mut held: VecDeque<Arc<Outgoing>> = VecDeque::new();
        let mut planned = false;
        let mut replayed = 0u64;
        let mut ping = state.ping_interval();
        let kick = self.registration.kick.clone();
        loop {
            tokio::select! {
                close = kick.kicked() => return Err(Some(close.clone())),
                _ = shutdown.cancelled() => return Err(Some(Close::GOING_AWAY)),
                _ = ping.tick() => {
                    if let Outcome::Closed(end) = self.ping(state).await {
                        return Err(end);
                    }
                }
                heard = self.socket.recv() => {
                    if let Some(end) = self.heard(heard) {
                        return Err(end);
                    }
                }
                Some(event) = self.registration.events.recv() => {
                    if held.len() >= state.held_max {
                        return Err(Some(Close::catch_up_overflow(held.len())));
                    }
                    held.push_back(event);
                }
                plan = &mut plan_rx, if !planned => {
                    planned = true;
                    if let Ok(plan) = plan {
                        self.seam = plan.ends;
                    }
                }
                record = history.recv() => match record {
                    Some(record) => {
                        let json = crate::event_json(&record.event);
                        if !selector.matches(record.event.event_type(), &json) {
                            continue;
                        }
                        let event = Outgoing::new(&record.event, &json, record.topic, record.partition, record.offset, true);
                        replayed += 1;
                        if let Outcome::Closed(end) = self.send_event(&event, shutdown).await {
                            return Err(end);
                        }
                    }
                    None => break,
                },
            }
        }
        let summary: Result<ReadSummary, ReadError> = match read.await {
            Ok(result) => result,
            Err(e) => Err(ReadError::Join(e)),
        };
        if let Err(e) = summary {
            tracing::warn!(error = %e, "websocket catch-up failed");
            return Err(Some(Close::failed(format!(
                "reading the history failed: {e}"
            ))));
        }
        if !planned && let Ok(plan) = plan_rx.await {
            self.seam = plan.ends;
        }
        if self.send_text(frames::caught_up(replayed)).await.is_err() {
            return Err(None);
        }
        while let Some(event) = held.pop_front() {
            if let Outcome::Closed(end) = self.deliver(&event, shutdown).await {
                return Err(end);
            }
        }
        Ok(())
    }

    /// The live stream until the client leaves or is closed.
    async fn live(&mut self, state: &Arc<WsState>, shutdown: &CancellationToken) -> End {
        let mut ping = state.ping_interval();
        let kick = self.registration.kick.clone();
        loop {
            tokio::select! {
                close = kick.kicked() => return Some(close.clone()),
                _ = shutdown.cancelled() => return Some(Close::GOING_AWAY),
                _ = ping.tick() => {
                    if let Outcome::Closed(end) = self.ping(state).await {
                        return end;
                    }
                }
                heard = self.socket.recv() => {
                    if let Some(end) = self.heard(heard) {
                        return end;
                    }
                }
                event = self.registration.events.recv() => match event {
                    Some(event) => {
                        if let Outcome::Closed(end) = self.deliver(&event, shutdown).await {
                            return end;
                        }
                    }
                    None => return Some(Close::GOING_AWAY),
                },
            }
        }
    }

    /// Sends a live event unless history or an earlier delivery already sent it.
    async fn deliver(&mut self, event: &Outgoing, shutdown: &CancellationToken) -> Outcome {
        if !event.replayed {
            let below_seam = self
                .seam
                .get(&(event.topic.to_string(), event.partition))
                .is_some_and(|end| event.offset < *end);
            let seen = self
                .last_sent
                .get(&(event.topic.clone(), event.partition))
                .is_some_and(|last| event.offset <= *last);
            if below_seam || seen {
                return Outcome::Sent;
            }
        }
        self.send_event(event, shutdown).await
    }

    async fn send_event(&mut self, event: &Outgoing, shutdown: &CancellationToken) -> Outcome {
        let kick = self.registration.kick.clone();
        // A client that does not read blocks this send: the kick (its buffer
        // filled meanwhile) or shutdown must still end it.
        let sent = tokio::select! {
            sent = self.socket.send(Message::Text(event.text.clone().into())) => sent,
            close = kick.kicked() => return Outcome::Closed(Some(close.clone())),
            _ = shutdown.cancelled() => return Outcome::Closed(Some(Close::GOING_AWAY)),
        };
        if sent.is_err() {
            return Outcome::Closed(None);
        }
        self.sent += 1;
        let last = self
            .last_sent
            .entry((event.topic.clone(), event.partition))
            .or_insert(-1);
        *last = (*last).max(event.offset);
        Outcome::Sent
    }

    async fn send_text(&mut self, text: String) -> Result<(), axum::Error> {
        self.socket.send(Message::Text(text.into())).await
    }

    /// A ping, or the close when the client has not answered the last ones.
    async fn ping(&mut self, state: &WsState) -> Outcome {
        let silent = self.last_heard.elapsed();
        if silent > state.ping * 2 {
            return Outcome::Closed(Some(Close::no_pong(silent.as_secs())));
        }
        match self.socket.send(Message::Ping(Default::default())).await {
            Ok(()) => Outcome::Sent,
            Err(_) => Outcome::Closed(None),
        }
    }

    /// Something from the client: pongs (and anything else) prove it is there.
    fn heard(&mut self, heard: Option<Result<Message, axum::Error>>) -> Option<End> {
        match heard {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Some(None),
            Some(Ok(_)) => {
                self.last_heard = Instant::now();
                None
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
