//! What one poll of a host reports, parsed from the text row of [`POLL_QUERY`].

use crate::lsn::Lsn;

/// The single query of every poll iteration: one round trip, simple-query protocol, one row of text values.
///
/// Columns, in order: `in_recovery`, `current_lsn` (master only), `receive_lsn`, `replay_lsn`,
/// `replay_delay_ms` (replica only: server-side `now() - pg_last_xact_replay_timestamp()`), `wal_file`
/// (master only: the current WAL file name, whose first 8 hex digits are the timeline) and `received_tli`
/// (replica only: the timeline its WAL receiver streams). Functions that fail during recovery sit behind
/// `CASE`, so the query works on both roles.
pub const POLL_QUERY: &str = "SELECT pg_is_in_recovery(), \
CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END, \
pg_last_wal_receive_lsn(), \
pg_last_wal_replay_lsn(), \
CASE WHEN pg_is_in_recovery() THEN floor(extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END, \
CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1) END";

/// Number of columns [`POLL_QUERY`] returns.
pub const POLL_COLUMNS: usize = 7;

/// A host's role as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not in recovery: accepts writes.
    Master,
    /// In recovery: a streaming or archive replica.
    Replica,
}

/// One successful poll of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Master or replica.
    pub role: Role,
    /// `pg_current_wal_lsn()` on a master.
    pub current_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` on a replica (null when it streams nothing).
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a replica.
    pub replay_lsn: Option<Lsn>,
    /// Milliseconds since the last replayed transaction committed on the master, as the replica's clock sees it.
    pub replay_delay_ms: Option<u64>,
    /// The timeline the host is on, when it could be read.
    pub timeline: Option<u32>,
}

/// Why a reply row is not a valid observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObservationError {
    /// The row has the wrong number of columns.
    #[error("the poll query returned {0} columns, expected {POLL_COLUMNS}")]
    Columns(usize),
    /// A column holds text that is not of its type.
    #[error("the poll query returned {value:?} for {column}")]
    Value {
        /// The column's name.
        column: &'static str,
        /// The text the server sent.
        value: String,
    },
    /// A master did not report its WAL position.
    #[error("the host is not in recovery but reported no current WAL position")]
    MasterWithoutLsn,
}

fn bad(column: &'static str, value: &str) -> ObservationError {
    ObservationError::Value { column, value: value.to_owned() }
}

fn lsn(column: &'static str, value: Option<&str>) -> Result<Option<Lsn>, ObservationError> {
    value.map(|v| Lsn::parse_bytes(v.as_bytes()).ok_or_else(|| bad(column, v))).transpose()
}

impl Observation {
    /// Parses one row of [`POLL_QUERY`]; `None` is SQL NULL.
    pub fn from_row(row: &[Option<&str>]) -> Result<Observation, ObservationError> {
        let &[in_recovery, current, receive, replay, delay, wal_file, received_tli] = row else {
            return Err(ObservationError::Columns(row.len()));
        };
        let role = match in_recovery {
            Some("t") => Role::Replica,
            Some("f") => Role::Master,
            other => return Err(bad("in_recovery", other.unwrap_or("NULL"))),
        };
        let current_lsn = lsn("current_lsn", current)?;
        let receive_lsn = lsn("receive_lsn", receive)?;
        let replay_lsn = lsn("replay_lsn", replay)?;
        let replay_delay_ms = delay
            .map(|v| {
                // The delay is negative when the replica's clock is behind the master's: count it as none.
                v.parse::<i64>().map(|ms| ms.max(0).unsigned_abs()).map_err(|_| bad("replay_delay_ms", v))
            })
            .transpose()?;
        let timeline = match role {
            Role::Master => wal_file
                .map(|name| {
                    let tli = name.get(..8).filter(|_| name.len() == 24).ok_or_else(|| bad("wal_file", name))?;
                    u32::from_str_radix(tli, 16).map_err(|_| bad("wal_file", name))
                })
                .transpose()?,
            Role::Replica => received_tli.map(|v| v.parse::<u32>().map_err(|_| bad("received_tli", v))).transpose()?,
        };
        if role == Role::Master && current_lsn.is_none() {
            return Err(ObservationError::MasterWithoutLsn);
        }
        Ok(Observation { role, current_lsn, receive_lsn, replay_lsn, replay_delay_ms, timeline })
    }

    /// The host's own latest WAL position: written on a master, replayed on a replica.
    pub fn lsn(&self) -> Option<Lsn> {
        match self.role {
            Role::Master => self.current_lsn,
            Role::Replica => self.replay_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_row() {
        let row = [Some("f"), Some("0/3000060"), None, None, None, Some("000000020000000000000003"), None];
        let obs = Observation::from_row(&row).unwrap();
        assert_eq!(obs.role, Role::Master);
        assert_eq!(obs.lsn(), Some(Lsn(0x300_0060)));
        assert_eq!(obs.timeline, Some(2));
    }

    #[test]
    fn replica_row_with_clock_skew() {
        let row = [Some("t"), None, Some("0/3000100"), Some("0/3000060"), Some("-5"), None, Some("3")];
        let obs = Observation::from_row(&row).unwrap();
        assert_eq!(obs.role, Role::Replica);
        assert_eq!(obs.replay_delay_ms, Some(0));
        assert_eq!(obs.lsn(), Some(Lsn(0x300_0060)));
        assert_eq!(obs.timeline, Some(3));
    }

    #[test]
    fn malformed_rows_are_errors() {
        assert_eq!(Observation::from_row(&[Some("t")]), Err(ObservationError::Columns(1)));
        let mut row = [Some("t"), None, None, None, None, None, None];
        assert!(Observation::from_row(&row).is_ok());
        row[0] = Some("yes");
        assert!(Observation::from_row(&row).is_err());
        row[0] = Some("t");
        row[3] = Some("zz/1");
        assert!(Observation::from_row(&row).is_err());
        row[3] = None;
        row[4] = Some("1.5");
        assert!(Observation::from_row(&row).is_err());
        let master = [Some("f"), None, None, None, None, None, None];
        assert_eq!(Observation::from_row(&master), Err(ObservationError::MasterWithoutLsn));
        let short_wal = [Some("f"), Some("0/1"), None, None, None, Some("0000"), None];
        assert!(Observation::from_row(&short_wal).is_err());
    }
}
