//! The route runtimes' own metrics on the gateway's `/metrics`: each route
//! runtime has its registry; this collector gathers them at each scrape.
//! Only per-consumer families (those with a `consumer` label: consumed,
//! processing time, lag, dead letters) are taken: the rest (dependency up,
//! round trips) describe the process and the gateway's own runtime already
//! reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

#[derive(Clone, Default)]
pub struct RouteRegistries(Arc<Mutex<BTreeMap<String, Registry>>>);

impl RouteRegistries {
    pub fn insert(&self, route: &str, registry: Registry) {
        self.lock().insert(route.to_owned(), registry);
    }

    pub fn remove(&self, route: &str) {
        self.lock().remove(route);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Collector for RouteRegistries {
    fn desc(&self) -> Vec<&Desc> {
        // Families vary with the routes: an unchecked collector.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.lock()
            .values()
            .flat_map(|r| r.gather())
            .filter(|family| {
                family
                    .get_metric()
                    .iter()
                    .all(|m| m.get_label().iter().any(|l| l.name() == "consumer"))
            })
            .collect()
    }
}
