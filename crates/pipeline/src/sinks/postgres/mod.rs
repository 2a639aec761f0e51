//! The PostgreSQL sink: readings and anomalies in the `readings` and `anomalies` tables that
//! reference 003 keeps for its dashboard, written with binary COPY.

mod sink;

pub use sink::{MIGRATIONS, PostgresTarget};

use super::Batching;
use serde::Deserialize;
use std::str::FromStr;
use std::time::Duration;

/// `[sinks.postgres]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresSink {
    /// `postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE` (or key=value form).
    pub url: String,
    pub batch_rows: Option<usize>,
    pub batch_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
}

/// `[sinks.postgres]`, validated.
#[derive(Debug, Clone)]
pub struct PostgresSinkConfig {
    pub connection: tokio_postgres::Config,
    /// The server and database, for logs (never the password).
    pub describe: String,
    pub batching: Batching,
}

impl PostgresSinkConfig {
    pub fn validate(raw: RawPostgresSink, errors: &mut Vec<String>) -> Option<PostgresSinkConfig> {
        let batching =
            super::batching("sinks.postgres", raw.batch_rows, super::DEFAULT_BATCH_ROWS, raw.batch_ms, errors);
        let mut connection = match tokio_postgres::Config::from_str(&raw.url) {
            Ok(connection) => connection,
            Err(e) => {
                errors.push(format!(
                    "sinks.postgres.url {:?}: {e} (expected postgresql://USER@HOST:PORT/DATABASE)",
                    redact(&raw.url)
                ));
                return None;
            }
        };
        if connection.get_hosts().is_empty() {
            errors.push(format!("sinks.postgres.url {:?} names no host", redact(&raw.url)));
            return None;
        }
        if connection.get_dbname().is_none() {
            errors.push(format!("sinks.postgres.url {:?} names no database (add /DATABASE)", redact(&raw.url)));
            return None;
        }
        connection.connect_timeout(Duration::from_millis(raw.connect_timeout_ms.unwrap_or(5000).max(1)));
        connection.application_name("teleguard");
        let describe = describe(&connection);
        Some(PostgresSinkConfig { connection, describe, batching })
    }
}

/// `host:port/database` of a connection config.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// The URL with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            match user_info.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(url: &str) -> Result<PostgresSinkConfig, Vec<String>> {
        let mut errors = Vec::new();
        let raw = RawPostgresSink { url: url.into(), batch_rows: None, batch_ms: None, connect_timeout_ms: None };
        match PostgresSinkConfig::validate(raw, &mut errors) {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(errors),
        }
    }

    #[test]
    fn a_good_url_is_described_without_its_password() {
        let config = validate("postgresql://postgres:secret@127.0.0.1:5433/teleguard").unwrap();
        assert_eq!(config.describe, "127.0.0.1:5433/teleguard");
        assert_eq!(config.batching.rows.get(), 5000);
    }

    #[test]
    fn a_bad_url_says_which_key_and_hides_the_password() {
        let errors = validate("postgresql://postgres:secret@127.0.0.1:notaport/teleguard").unwrap_err();
        assert!(errors[0].contains("sinks.postgres.url"), "{errors:?}");
        assert!(!errors[0].contains("secret"), "{errors:?}");
        let errors = validate("postgresql://postgres@127.0.0.1:5432").unwrap_err();
        assert!(errors[0].contains("no database"), "{errors:?}");
    }
}
