//! Target `config`: an environment read into a configuration.

use std::collections::BTreeMap;

use pg_status_core::config::{Config, ConfigError, KNOWN_VARIABLES};

use super::text;

/// Names that a one-byte variable name stands for, after [`KNOWN_VARIABLES`]: libpq's TLS variables and two
/// variables for `pg_status__current_*_env` to point at.
const EXTRA_VARIABLES: [&str; 7] =
    ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "MY_DC", "MY_GEO"];

fn variable_name(b: u8) -> &'static str {
    let i = usize::from(b) % (KNOWN_VARIABLES.len() + EXTRA_VARIABLES.len());
    KNOWN_VARIABLES.get(i).copied().unwrap_or_else(|| EXTRA_VARIABLES[i - KNOWN_VARIABLES.len()])
}

/// Decodes the `config` input: `NAME=VALUE` entries separated by NUL bytes, as in `/proc/self/environ`.
/// A name of exactly one byte `b` stands for a real variable: the `b % N`-th of [`KNOWN_VARIABLES`] followed
/// by `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLCRL`, `MY_DC`, `MY_GEO` (N names in all).
/// An entry without `=` has an empty value; empty names are skipped; a later entry replaces an earlier one;
/// invalid UTF-8 is replaced by U+FFFD.
pub fn decode_env(data: &[u8]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for entry in data.split(|&b| b == 0) {
        let (name, value) = match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (&entry[..eq], &entry[eq + 1..]),
            None => (entry, &entry[entry.len()..]),
        };
        let name = match name {
            [] => continue,
            [b] => variable_name(*b).to_owned(),
            _ => text(name),
        };
        env.insert(name, text(value));
    }
    env
}

const PASSWORD_VAR: &str = "pg_status__pg_password";
const SENTINEL_PASSWORD: &str = "pw\u{1}sentinel\u{2}";

/// Target `config`. Input: an environment, see [`decode_env`].
///
/// Checks: [`Config::from_map`] never panics; an error names a variable that is set (or
/// `pg_status__hosts`, when that is missing) and its message contains the name; an accepted configuration
/// holds the hosts as written (split on `,`, trimmed, non-empty, no duplicate), non-zero ports, periods and
/// `max_fails`, and the numbers as given; the password decides nothing and appears in no error or warning.
pub fn check_config(data: &[u8]) {
    let env = decode_env(data);
    let result = Config::from_map(&env);
    match &result {
        Ok(config) => check_accepted_config(&env, config),
        Err(error) => check_config_error(&env, error),
    }

    // The same environment with a recognisable password: it must not change the outcome or be shown.
    let mut other = env.clone();
    other.insert(PASSWORD_VAR.to_owned(), SENTINEL_PASSWORD.to_owned());
    let leak_visible =
        !env.iter().any(|(k, v)| k != PASSWORD_VAR && (k.contains(SENTINEL_PASSWORD) || v.contains(SENTINEL_PASSWORD)));
    match (&result, Config::from_map(&other)) {
        (Ok(_), Ok(config)) => {
            assert_eq!(config.password, SENTINEL_PASSWORD);
            for warning in &config.warnings {
                assert!(
                    !leak_visible || !warning.contains(SENTINEL_PASSWORD),
                    "a warning shows the password: {warning}"
                );
            }
        }
        (Err(error), Err(other_error)) => {
            let message = other_error.to_string();
            assert!(!leak_visible || !message.contains(SENTINEL_PASSWORD), "an error shows the password: {message}");
            assert_eq!(error.to_string(), message, "the password changed the error");
        }
        (first, second) => panic!("the password decided validity: {first:?} but {second:?}"),
    }
}

fn check_config_error(env: &BTreeMap<String, String>, error: &ConfigError) {
    let message = error.to_string();
    let var = match error {
        ConfigError::MissingHosts => {
            assert!(!env.contains_key("pg_status__hosts"), "MissingHosts although pg_status__hosts is set");
            "pg_status__hosts"
        }
        ConfigError::Invalid { var, .. } | ConfigError::NotUnicode { var } => {
            assert!(env.contains_key(var.as_str()), "the error names {var}, which is not set: {message}");
            var.as_str()
        }
    };
    assert!(message.contains(var), "the message does not name {var}: {message}");
}

fn check_accepted_config(env: &BTreeMap<String, String>, config: &Config) {
    let hosts = env.get("pg_status__hosts").expect("accepted without pg_status__hosts");
    let names: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    let written: Vec<&str> = hosts.split(',').map(str::trim).collect();
    assert_eq!(names, written, "hosts differ from pg_status__hosts={hosts:?}");
    for (i, host) in config.hosts.iter().enumerate() {
        assert!(!host.name.is_empty(), "an empty host entry was accepted: {hosts:?}");
        assert_ne!(host.port, 0, "port 0 for {:?}", host.name);
        assert!(!names[..i].contains(&host.name.as_str()), "{:?} is listed twice", host.name);
    }
    assert!(config.max_fails >= 1, "max_fails 0 accepted");
    for (what, period) in
        [("sleep", config.sleep), ("query_timeout", config.query_timeout), ("age", config.conn_max_age)]
    {
        assert!(!period.is_zero(), "a zero {what} was accepted");
    }
    let numbers = [
        ("pg_status__max_fails", u64::from(config.max_fails)),
        ("pg_status__sync_max_lag_ms", config.sync_max_lag_ms),
        ("pg_status__sync_max_lag_bytes", config.sync_max_lag_bytes),
        ("pg_status__http_port", u64::from(config.http_port)),
    ];
    for (var, value) in numbers {
        if let Some(raw) = env.get(var) {
            assert_eq!(raw.trim().parse::<u64>().ok(), Some(value), "{var}={raw:?} was read as {value}");
        }
    }
    for (var, value) in [("pg_status__pg_user", &config.user), ("pg_status__pg_database", &config.database)] {
        assert_eq!(env.get(var).map_or("postgres", String::as_str), value.as_str(), "{var}");
    }
}
