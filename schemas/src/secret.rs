//! Keeping credentials out of what is printed: a connection URL may carry a
//! password (`redis://:password@host`, `http://user:password@registry`), and
//! URLs end up in logs, errors and `Debug` output.

/// `url` with the password of its `scheme://[user]:password@host` part
/// replaced by `<redacted>`; unchanged when it has none.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme_end + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    // The last '@' ends the user info, as URL parsers read it.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}<redacted>{}",
        &url[..start + colon + 1],
        &url[start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url_password;

    #[test]
    fn the_password_is_redacted_and_nothing_else() {
        for (url, shown) in [
            (
                "redis://:s3cret@redis.internal:6379/2",
                "redis://:<redacted>@redis.internal:6379/2",
            ),
            (
                "http://sr:p@ss:w0rd@registry:8081/",
                "http://sr:<redacted>@registry:8081/",
            ),
            ("redis://user@host:6379", "redis://user@host:6379"),
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://host/path?a=b:c@d", "http://host/path?a=b:c@d"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url_password(url), shown, "{url}");
        }
    }
}
