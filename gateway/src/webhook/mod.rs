//! The webhook sink: settings ([`config`]), the signing secret ([`secret`]),
//! signing and POSTing a batch ([`sender`]), a per-receiver rate limit
//! ([`rate`]) and gathering events into batches ([`batcher`]).

pub mod batcher;
pub mod config;
pub mod rate;
pub mod secret;
pub mod sender;

pub use batcher::Batcher;
pub use config::WebhookConfig;
pub use secret::WebhookSecret;
pub use sender::{SendError, WebhookSender};
