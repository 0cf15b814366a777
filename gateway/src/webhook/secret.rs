//! A webhook signing secret (`whsec_` + base64, as the Standard Webhooks
//! specification writes them). It never reaches a log, an error or a health
//! answer: its `Debug` and `Display` show only that it is redacted.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

pub const REDACTED: &str = "whsec_<redacted>";

impl WebhookSecret {
    /// Checks the `whsec_` form and that the key decodes; the error does not
    /// repeat the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with("whsec_") {
            return Err("a webhook secret starts with 'whsec_' (Standard Webhooks)".to_owned());
        }
        standardwebhooks::Webhook::new(text)
            .map_err(|_| "a webhook secret is 'whsec_' followed by base64".to_owned())?;
        Ok(WebhookSecret(text.to_owned()))
    }

    /// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256
    /// of "id.timestamp.body">`, computed by the specification's library.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
        standardwebhooks::Webhook::new(&self.0)
            .and_then(|w| w.sign(id, timestamp, body))
            .map_err(|e| format!("cannot sign: {e}"))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for WebhookSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        WebhookSecret::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn never_shown() {
        let s = WebhookSecret::parse(SECRET).expect("valid");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
    }

    #[test]
    fn refused_without_repeating_it() {
        let e = WebhookSecret::parse("MfKQ9r8GKYqrTwjU").expect_err("no prefix");
        assert!(!e.contains("MfKQ9r8GKYqrTwjU"), "{e}");
        let e = WebhookSecret::parse("whsec_not base64!").expect_err("not base64");
        assert!(!e.contains("not base64!"), "{e}");
    }
}
