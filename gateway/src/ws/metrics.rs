//! The WebSocket side's metrics, registered in the consumer's registry
//! (served on `/metrics`): connected clients, clients closed by the server
//! and why.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct WsMetrics {
    /// Connected clients, by route (`-`: a client's own patterns).
    pub connected: IntGaugeVec,
    /// Clients the server closed for their own doing, by route and reason (`slow`).
    pub dropped_clients: IntCounterVec,
    /// Close frames the server sent, by code.
    pub closed: IntCounterVec,
    /// Fallback webhook outcomes by route: delivered, failed, dropped.
    pub fallback: IntCounterVec,
}

impl WsMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<WsMetrics> {
        let connected = IntGaugeVec::new(
            Opts::new(
                "opal_gateway_websocket_clients",
                "Connected WebSocket clients, by route ('-': patterns of their own)",
            ),
            &["route"],
        )?;
        let dropped_clients = IntCounterVec::new(
            Opts::new(
                "opal_gateway_websocket_clients_dropped_total",
                "WebSocket clients closed because they could not keep up, by route and reason",
            ),
            &["route", "reason"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "opal_gateway_websocket_closes_total",
                "Close frames the gateway sent to WebSocket clients, by close code",
            ),
            &["code"],
        )?;
        let fallback = IntCounterVec::new(
            Opts::new(
                "opal_gateway_fallback_events_total",
                "Events of websocket routes sent to their fallback webhook while no client was connected, by route and outcome (delivered, failed, dropped)",
            ),
            &["route", "outcome"],
        )?;
        registry.register(Box::new(fallback.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(dropped_clients.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(WsMetrics {
            connected,
            dropped_clients,
            closed,
            fallback,
        })
    }
}
