//! The typed publisher: fills the envelope, validates, encodes through the
//! registry, keys and headers each record, and resolves once the broker's
//! delivery report arrives.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::OnceCell;

use futures::channel::oneshot::Canceled;
use futures::future::join_all;
use opal_schemas::events::*;
use opal_schemas::samples::current_version;
use opal_schemas::{Codec, CodecError, Envelope, Event, EventType, validate};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::util::Timeout;
use tracing::{debug, warn};

use crate::buffers;
use crate::config::PublisherConfig;
use crate::error::PublishError;
use crate::metrics::PublishMetrics;
pub use crate::record::headers;
use crate::record::{Prepared, Route, WireRecord};

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub event_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub schema_id: u32,
}

pub type Result<T, E = PublishError> = std::result::Result<T, E>;

pub struct Publisher {
    config: PublisherConfig,
    client_config: ClientConfig,
    /// Rebuilt after a fatal error; senders clone the current one.
    producer: RwLock<FutureProducer>,
    codec: Arc<Codec>,
    metrics: PublishMetrics,
    /// Indexed by `EventType as usize`. A failed registry lookup leaves the
    /// cell empty, so the next publish asks again (as the codec does).
    routes: [OnceCell<Route>; EventType::ALL.len()],
}

macro_rules! typed_publish {
    ($( $method:ident => $ty:ident ),* $(,)?) => {
        impl Publisher {
            $(
                #[doc = concat!("Publishes a `", stringify!($ty), "` event.")]
                pub fn $method(&self, event: $ty) -> impl Future<Output = Result<Delivery>> + Send + '_ {
                    self.publish(event)
                }
            )*
        }
    };
}

typed_publish! {
    workflow_started => WorkflowStarted,
    agent_completed => AgentCompleted,
    workflow_completed => WorkflowCompleted,
    decision_generated => DecisionGenerated,
    knowledge_upserted => KnowledgeUpserted,
    decision_degraded => DecisionDegraded,
    user_preferences_updated => UserPreferencesUpdated,
    feedback_submitted => FeedbackSubmitted,
    forecast_generated => ForecastGenerated,
}

impl Publisher {
    /// Builds the producer and the registry client from `config`.
    pub fn new(config: PublisherConfig, metrics: PublishMetrics) -> Result<Self> {
        let registry = config
            .registry
            .client(std::time::Duration::from_secs(10))
            .map_err(|e| PublishError::Setup(e.to_string()))?;
        let codec = Codec::new(registry).with_auto_register(config.auto_register);
        Self::with_codec(config, Arc::new(codec), metrics)
    }

    /// Builds the producer sharing an existing codec (and its caches).
    pub fn with_codec(
        config: PublisherConfig,
        codec: Arc<Codec>,
        metrics: PublishMetrics,
    ) -> Result<Self> {
        let mut client_config = config
            .kafka
            .client_config()
            .map_err(|e| PublishError::Setup(e.to_string()))?;
        client_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string());
        let producer = client_config
            .create()
            .map_err(|e: KafkaError| PublishError::Setup(e.to_string()))?;
        Ok(Publisher {
            config,
            client_config,
            producer: RwLock::new(producer),
            codec,
            metrics,
            routes: Default::default(),
        })
    }

    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The topic events of `event_type` go to (prefix applied).
    pub fn topic(&self, event_type: EventType) -> String {
        format!("{}{}", self.config.topic_prefix, event_type.topic())
    }

    /// An envelope with a fresh event id, for callers building events by hand.
    pub fn new_envelope(&self, correlation_id: Option<&str>) -> Envelope {
        Envelope {
            event_id: new_id(),
            correlation_id: correlation_id.map_or_else(new_id, str::to_owned),
            schema_version: 1,
            timestamp: opal_schemas::now_millis(),
            source_system: self.config.source_system.clone(),
            environment: self.config.environment,
        }
    }

    /// Fills what the caller left empty: event id, correlation id, time, source,
    /// and stamps our environment and schema version.
    pub fn fill_envelope(&self, event: &mut Event) {
        let event_type = event.event_type();
        let source_system = &self.config.source_system;
        let envelope = event.envelope_mut();
        if envelope.event_id.is_empty() {
            envelope.event_id = new_id();
        }
        if envelope.correlation_id.is_empty() {
            envelope.correlation_id = new_id();
        }
        if envelope.timestamp == 0 {
            envelope.timestamp = opal_schemas::now_millis();
        }
        if envelope.source_system.is_empty() {
            envelope.source_system = source_system.clone();
        }
        envelope.environment = self.config.environment;
        envelope.schema_version = current_version(event_type);
    }

    /// The route of `event_type`, asking the registry for our schema's id on
    /// first use.
    async fn route(&self, event_type: EventType) -> Result<&Route, CodecError> {
        let cell = &self.routes[event_type as usize];
        if let Some(route) = cell.get() {
            return Ok(route);
        }
        // The registry lookup's future is large (an HTTP request): boxed, it
        // does not make every publish future that size (2 KB moved per event).
        Box::pin(cell.get_or_try_init(|| async {
            let topic = self.topic(event_type);
            let schema_id = self.codec.schema_id(event_type, &topic).await?;
            let labels = [topic.as_str()];
            Ok(Route {
                schema_id,
                schema_id_header: schema_id.to_string(),
                published: self.metrics.published.with_label_values(&labels),
                latency: self.metrics.latency.with_label_values(&labels),
                topic,
            })
        }))
        .await
    }

    /// Fills, validates and encodes without sending: what `publish` does before
    /// Kafka sees anything. Invalid events fail here.
    async fn prepare(&self, mut event: Event) -> Result<Prepared<'_>> {
        self.check_filled(&mut event)?;
        let route = self.route_or_count(event.event_type()).await?;
        Ok(Prepared::encoded(route, event))
    }

    /// Fills the envelope and validates: an invalid event fails here, before
    /// the registry is asked for anything.
    fn check_filled(&self, event: &mut Event) -> Result<()> {
        self.fill_envelope(event);
        validate(event).map_err(|source| {
            let event_type = event.event_type();
            self.count_failure(event_type, PublishError::Invalid { event_type, source })
        })
    }

    /// `route`, a failure counted under the type's topic.
    async fn route_or_count(&self, event_type: EventType) -> Result<&Route> {
        self.route(event_type)
            .await
            .map_err(|e| self.count_failure(event_type, PublishError::Registry(e)))
    }

    /// Counts a failure to publish an event of `event_type` before it was
    /// sent. Failures are rare: the topic label is built only for them.
    fn count_failure(&self, event_type: EventType, error: PublishError) -> PublishError {
        self.metrics
            .errors
            .with_label_values(&[&self.topic(event_type), error.reason()])
            .inc();
        error
    }

    /// The payload and headers `publish` would send for `event` (its envelope
    /// filled), without sending it: what a raw baseline sends to compare.
    pub async fn sample_record(&self, event: Event) -> Result<WireRecord> {
        let mut prepared = self.prepare(event).await?;
        let headers = prepared
            .headers()
            .map(|(key, value)| (key, value.to_owned()))
            .to_vec();
        Ok(WireRecord {
            payload: std::mem::take(&mut prepared.bytes),
            headers,
        })
    }

    /// Checks an event as `publish` would, without sending it.
    pub async fn check(&self, event: Event) -> Result<()> {
        let prepared = self.prepare(event).await?;
        buffers::give_back(prepared.bytes);
        Ok(())
    }

    /// Publishes one event and waits for its delivery report.
    ///
    /// Written as an `async` block rather than an `async fn`: an `async fn`
    /// keeps its argument twice in its future (the 232-byte event as
    /// argument and as local), and every publish in flight is one such
    /// future, moved into and within the caller's `FuturesUnordered` or
    /// `join_all`. For the same reason `prepare` is not awaited here.
    pub fn publish(
        &self,
        event: impl Into<Event>,
    ) -> impl Future<Output = Result<Delivery>> + Send + '_ {
        let mut event = event.into();
        async move {
            self.check_filled(&mut event)?;
            let route = self.route_or_count(event.event_type()).await?;
            let mut prepared = Prepared::encoded(route, event);
            let started = Instant::now();
            let future = self.enqueue(&mut prepared).await?;
            self.settled(prepared, future.await, started)
        }
    }

    /// Publishes many events without awaiting them one by one: all are encoded,
    /// then all are enqueued (in order, so per-key order holds), then the
    /// delivery reports are awaited together. One result per event, in order.
    pub async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<Delivery>> {
        let prepared = join_all(events.into_iter().map(|e| self.prepare(e))).await;
        let mut pending = Vec::with_capacity(prepared.len());
        for p in prepared {
            pending.push(match p {
                Ok(mut p) => {
                    let started = Instant::now();
                    match self.enqueue(&mut p).await {
                        Ok(future) => Ok((p, future, started)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            });
        }
        join_all(pending.into_iter().map(|p| async move {
            let (prepared, future, started) = p?;
            self.settled(prepared, future.await, started)
        }))
        .await
    }

    /// Hands the record to librdkafka, waiting briefly while its queue is full.
    async fn enqueue(&self, p: &mut Prepared<'_>) -> Result<DeliveryFuture> {
        let producer = self.current_producer();
        // The refused record (160 bytes with the result) is dropped here
        // rather than kept across the wait below.
        let sent = producer.send_result(p.record()).map_err(|(e, _)| e);
        let future = match sent {
            Ok(future) => future,
            // Rare: boxed, so that the wait's state does not make every
            // publish future larger.
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                Box::pin(self.enqueue_when_room(&producer, p)).await?
            }
            Err(e) => return Err(self.delivery_failed(&p.route.topic, e)),
        };
        // librdkafka copied the payload: the buffer can serve the next event.
        buffers::give_back(std::mem::take(&mut p.bytes));
        Ok(future)
    }

    /// Sends again while librdkafka's queue is full, up to the delivery timeout.
    async fn enqueue_when_room(
        &self,
        producer: &FutureProducer,
        p: &Prepared<'_>,
    ) -> Result<DeliveryFuture> {
        let deadline = Instant::now() + self.config.delivery_timeout();
        loop {
            producer.poll(Timeout::After(std::time::Duration::from_millis(10)));
            tokio::task::yield_now().await;
            match producer.send_result(p.record()) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline => {}
                Err((e, _)) => return Err(self.delivery_failed(&p.route.topic, e)),
            }
        }
    }

    /// The outcome of a publish once its delivery report came.
    fn settled(
        &self,
        p: Prepared<'_>,
        report: std::result::Result<OwnedDeliveryResult, Canceled>,
        started: Instant,
    ) -> Result<Delivery> {
        let route = p.route;
        match report {
            Ok(Ok(delivery)) => {
                route.published.inc();
                route.latency.observe(started.elapsed().as_secs_f64());
                debug!(event_id = %p.event_id, correlation_id = %p.correlation_id, topic = %route.topic, partition = delivery.partition, offset = delivery.offset, "published");
                Ok(Delivery {
                    event_id: p.event_id,
                    topic: route.topic.clone(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                    schema_id: route.schema_id,
                })
            }
            Ok(Err((e, _))) => Err(self.delivery_failed(&route.topic, e)),
            Err(_canceled) => Err(self.delivery_failed(&route.topic, KafkaError::Canceled)),
        }
    }

    /// Classifies a send failure, counts it, and rebuilds the producer if it is fatal.
    fn delivery_failed(&self, topic: &str, error: KafkaError) -> PublishError {
        let fatal = self.current_producer().client().fatal_error();
        if let Some((code, reason)) = &fatal {
            warn!(
                ?code,
                reason, "producer fatal error; rebuilding the producer"
            );
            match self.client_config.create::<FutureProducer>() {
                Ok(fresh) => *self.producer.write().unwrap_or_else(|p| p.into_inner()) = fresh,
                Err(e) => warn!(error = %e, "could not rebuild the producer"),
            }
        }
        let error = PublishError::from_kafka(error, fatal.is_some());
        self.metrics
            .errors
            .with_label_values(&[topic, error.reason()])
            .inc();
        error
    }

    fn current_producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for every outstanding delivery report (shutdown).
    pub fn flush(&self, timeout: std::time::Duration) -> Result<()> {
        self.current_producer()
            .flush(timeout)
            .map_err(PublishError::BrokerRetriable)
    }
}

/// A fresh event id: a v4 UUID, hyphenated and lower case (written through
/// a stack buffer rather than `Display`'s formatter).
fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use opal_schemas::samples::default_example;

    use super::*;

    /// Every in-flight publish is one such future, moved when an application
    /// pushes it into a `FuturesUnordered` or a `join_all`: the registry
    /// lookup of a type's first publish is boxed so that its HTTP request's
    /// state is not part of it (unboxed it was 2 608 bytes), and the event
    /// is held once (as an `async fn` with its steps awaited, 1 136 bytes;
    /// now 504).
    #[test]
    fn a_publish_future_holds_neither_the_registry_lookup_nor_the_event_twice() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let metrics = PublishMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let config = PublisherConfig::local("127.0.0.1:1", "http://127.0.0.1:1");
        let publisher = Publisher::new(config, metrics).expect("publisher");
        let future = publisher.publish(default_example(EventType::AgentCompleted));
        let size = std::mem::size_of_val(&future);
        assert!(size < 640, "a publish future is {size} bytes");
    }
}
