//! Gathers events handed in concurrently into one POST: a batch goes when it
//! has `batch_size` events, when no event came for 2 ms, or when its first
//! event has waited `max_wait_ms`.
//! Each caller gets the outcome of the POST that carried its event, so an
//! event's offset is stored only once its own batch was answered.

use std::sync::Arc;

use opal_schemas::Event;
use tokio::sync::{mpsc, oneshot};

use super::sender::{Message, SendError, WebhookSender};

/// A batch goes once no event came for this long (or it is full, or
/// `max_wait_ms` is over).
const IDLE: std::time::Duration = std::time::Duration::from_millis(2);

type Pending = (Event, oneshot::Sender<Result<(), SendError>>);

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task. It ends when every handle is dropped, not
    /// at shutdown: the runtime's drain still sends the batch in hand through
    /// it (stopping first would fail those events and spend their attempts).
    pub fn spawn(sender: Arc<WebhookSender>) -> Self {
        let size = sender.config().batch_size;
        let (tx, rx) = mpsc::channel(size.max(16) * 2);
        tokio::spawn(run(sender, rx));
        Batcher { tx }
    }

    /// Hands `event` in and waits for the outcome of its batch's POST (one attempt).
    pub async fn submit(&self, event: Event) -> Result<(), SendError> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| SendError::Cancelled)?;
        outcome.await.unwrap_or(Err(SendError::Cancelled))
    }
}

async fn run(sender: Arc<WebhookSender>, mut rx: mpsc::Receiver<Pending>) {
    let size = sender.config().batch_size;
    let max_wait = sender.config().max_wait();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        while batch.len() < size {
            // Callers hand events in together (each partition's handler its
            // next one once the previous batch answered): a pause means no
            // more are coming soon, so the batch goes without waiting out
            // max_wait, which would cap a route at a batch per max_wait.
            let until = deadline.min(tokio::time::Instant::now() + IDLE);
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        let events: Vec<&Event> = batch.iter().map(|(e, _)| e).collect();
        let outcome = sender.send_once(&Message::of(&events)).await;
        for (_, reply) in batch {
            let _ = reply.send(outcome.clone());
        }
    }
}
