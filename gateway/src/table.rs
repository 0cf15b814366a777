//! The routes in force, shared and reloadable: a `watch` channel holds the
//! current set. Readers take a snapshot (`current()`, cheap: an `Arc`);
//! the delivery supervisor and the WebSocket hub `subscribe()` to learn of a
//! reload. Only a file that parsed in full is ever published.

use std::sync::Arc;

use tokio::sync::watch;

use crate::routes::Route;

/// One consistent set of routes.
#[derive(Debug, Default)]
pub struct Routes {
    pub routes: Vec<Arc<Route>>,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        Routes {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name == name)
    }
}

#[derive(Clone)]
pub struct RouteTable {
    tx: Arc<watch::Sender<Arc<Routes>>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let (tx, _) = watch::channel(Arc::new(Routes::new(routes)));
        RouteTable { tx: Arc::new(tx) }
    }

    /// The routes in force now.
    pub fn current(&self) -> Arc<Routes> {
        self.tx.borrow().clone()
    }

    /// The route named `name`, if one is in force.
    pub fn get(&self, name: &str) -> Option<Arc<Route>> {
        self.current().get(name).cloned()
    }

    /// Notified at each replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Routes>> {
        self.tx.subscribe()
    }

    /// Puts `routes` in force.
    pub fn replace(&self, routes: Vec<Route>) {
        self.tx.send_replace(Arc::new(Routes::new(routes)));
    }
}
