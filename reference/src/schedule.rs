//! Decision 2, as far as a reference can state it without a clock: how many connections a host may cost.

/// The most connections pg-status may open to one host after `elapsed_ms`: the first, one more each time the
/// connection grew older than `conn_max_age_ms`, one after each failed iteration (it closes the connection),
/// and one after each time the server closed it (`closes`).
pub fn max_connections(elapsed_ms: u64, conn_max_age_ms: u64, failures: u64, closes: u64) -> u64 {
    1 + elapsed_ms / conn_max_age_ms.max(1) + failures + closes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connection_plus_one_per_age_failure_and_close() {
        assert_eq!(max_connections(0, 1000, 0, 0), 1);
        assert_eq!(max_connections(999, 1000, 0, 0), 1);
        assert_eq!(max_connections(2500, 1000, 0, 0), 3);
        assert_eq!(max_connections(2500, 1000, 4, 1), 8);
    }
}
