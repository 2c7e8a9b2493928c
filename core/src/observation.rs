//! What one poll of a host reports, parsed from the text row of the poll query ([`PollQuery`]).

use crate::lsn::Lsn;

/// The columns both forms of the poll query share. Every catalog object is schema-qualified (functions,
/// operators, the type and the view), so objects of the same name in a schema on the role's `search_path`
/// are never used instead. Functions that fail during recovery sit behind `CASE`, so the query works on both
/// roles.
macro_rules! shared_columns {
    () => {
        "select pg_catalog.pg_is_in_recovery(), \
case when pg_catalog.pg_is_in_recovery() then null else pg_catalog.pg_current_wal_lsn() end, \
pg_catalog.pg_last_wal_receive_lsn(), \
pg_catalog.pg_last_wal_replay_lsn(), \
case when pg_catalog.pg_is_in_recovery() then pg_catalog.floor(pg_catalog.date_part('epoch', \
pg_catalog.now() operator(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp()) \
operator(pg_catalog.*) 1000)::pg_catalog.int8 end, \
case when pg_catalog.pg_is_in_recovery() then null else pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) end"
    };
}

/// The poll query with the WAL receiver's details: one round trip, simple-query protocol, one row of text
/// values ([`POLL_COLUMNS`] of them).
///
/// Columns, in order: `in_recovery`, `current_lsn` (master only), `receive_lsn`, `replay_lsn`,
/// `replay_delay_ms` (replica only: server-side `now() - pg_last_xact_replay_timestamp()`), `wal_file`
/// (master only: the current WAL file name, whose first 8 hex digits are the timeline), then from
/// `pg_stat_wal_receiver` (NULL when no receiver runs): `receiver_pid`, `received_tli` (the timeline it
/// streams) and `latest_end_lsn` (the end of WAL its sender last reported). A role without
/// `pg_read_all_stats` sees the pid but NULL details; a role without SELECT on the view gets SQLSTATE 42501
/// for the whole query, even on a master: privileges are checked when the query is planned.
pub const POLL_QUERY: &str = concat!(
    shared_columns!(),
    ", w.pid, w.received_tli, w.latest_end_lsn from (select) as one left join \
(select pid, received_tli, latest_end_lsn from pg_catalog.pg_stat_wal_receiver limit 1) as w on true"
);

/// The poll query without `pg_stat_wal_receiver`, for a session whose role may not read that view: the first
/// [`POLL_COLUMNS_WITHOUT_RECEIVER`] columns of [`POLL_QUERY`].
pub const POLL_QUERY_WITHOUT_RECEIVER: &str = shared_columns!();

/// Number of columns [`POLL_QUERY`] returns.
pub const POLL_COLUMNS: usize = 9;

/// Number of columns [`POLL_QUERY_WITHOUT_RECEIVER`] returns.
pub const POLL_COLUMNS_WITHOUT_RECEIVER: usize = 6;

/// SQLSTATE `insufficient_privilege`: what a server answers a query naming an object the role may not read.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Which form of the poll query a session runs (DESIGN 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollQuery {
    /// [`POLL_QUERY`]: everything, the WAL receiver's details included.
    Full,
    /// [`POLL_QUERY_WITHOUT_RECEIVER`]: for a session whose role was refused `pg_stat_wal_receiver`.
    WithoutReceiver,
}

impl PollQuery {
    /// The SQL text.
    pub fn sql(self) -> &'static str {
        match self {
            PollQuery::Full => POLL_QUERY,
            PollQuery::WithoutReceiver => POLL_QUERY_WITHOUT_RECEIVER,
        }
    }

    /// The form to run instead, within the same iteration, when the server refuses this one with
    /// [`INSUFFICIENT_PRIVILEGE`]; `None` when there is nothing left to leave out (the refusal is a failure).
    pub fn on_refusal(self) -> Option<PollQuery> {
        match self {
            PollQuery::Full => Some(PollQuery::WithoutReceiver),
            PollQuery::WithoutReceiver => None,
        }
    }
}

/// How much of the WAL receiver's state a poll could read (what the role's privileges allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Receiver {
    /// Read in full, or there is no WAL receiver to read (a master, a replica not streaming).
    Readable,
    /// A WAL receiver runs, but the role sees none of its details: it lacks `pg_read_all_stats`.
    DetailsHidden,
    /// Not read: the role may not select from `pg_stat_wal_receiver`, so the poll left it out.
    NotRead,
}

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
    /// A replica's WAL receiver: the end of WAL its sender last reported (`latest_end_lsn`), when readable.
    pub latest_end_lsn: Option<Lsn>,
    /// How much of the WAL receiver's state the role could read.
    pub receiver: Receiver,
}

/// Why a reply row is not a valid observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObservationError {
    /// The row has the wrong number of columns.
    #[error("the poll query returned {0} columns, expected {POLL_COLUMNS} ({POLL_COLUMNS_WITHOUT_RECEIVER} without the WAL receiver)")]
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
    /// Parses one row of [`POLL_QUERY`] ([`POLL_COLUMNS`] values) or of [`POLL_QUERY_WITHOUT_RECEIVER`]
    /// ([`POLL_COLUMNS_WITHOUT_RECEIVER`] values, read as [`Receiver::NotRead`]); `None` is SQL NULL.
    pub fn from_row(row: &[Option<&str>]) -> Result<Observation, ObservationError> {
        let (shared, receiver_columns) = match row.len() {
            POLL_COLUMNS => row.split_at(POLL_COLUMNS_WITHOUT_RECEIVER),
            POLL_COLUMNS_WITHOUT_RECEIVER => (row, &[][..]),
            n => return Err(ObservationError::Columns(n)),
        };
        let &[in_recovery, current, receive, replay, delay, wal_file] = shared else {
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
        // A master has no WAL receiver: its columns are not looked at.
        let (receiver, received_tli, latest_end_lsn) = match (role, receiver_columns) {
            (Role::Master, [_, _, _]) => (Receiver::Readable, None, None),
            (Role::Replica, &[pid, tli, latest_end]) => {
                let tli = tli.map(|v| v.parse::<u32>().map_err(|_| bad("received_tli", v))).transpose()?;
                let latest_end = lsn("latest_end_lsn", latest_end)?;
                let hidden = pid.is_some() && tli.is_none() && latest_end.is_none();
                (if hidden { Receiver::DetailsHidden } else { Receiver::Readable }, tli, latest_end)
            }
            _ => (Receiver::NotRead, None, None),
        };
        let timeline = match role {
            Role::Master => wal_file
                .map(|name| {
                    let tli = name.get(..8).filter(|_| name.len() == 24).ok_or_else(|| bad("wal_file", name))?;
                    u32::from_str_radix(tli, 16).map_err(|_| bad("wal_file", name))
                })
                .transpose()?,
            Role::Replica => received_tli,
        };
        if role == Role::Master && current_lsn.is_none() {
            return Err(ObservationError::MasterWithoutLsn);
        }
        Ok(Observation {
            role,
            current_lsn,
            receive_lsn,
            replay_lsn,
            replay_delay_ms,
            timeline,
            latest_end_lsn,
            receiver,
        })
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
        let row = [Some("f"), Some("0/3000060"), None, None, None, Some("000000020000000000000003"), None, None, None];
        let obs = Observation::from_row(&row).unwrap();
        assert_eq!(obs.role, Role::Master);
        assert_eq!(obs.lsn(), Some(Lsn(0x300_0060)));
        assert_eq!(obs.timeline, Some(2));
        assert_eq!(obs.receiver, Receiver::Readable);
    }

    #[test]
    fn replica_row_with_clock_skew() {
        let row = [
            Some("t"),
            None,
            Some("0/3000100"),
            Some("0/3000060"),
            Some("-5"),
            None,
            Some("77"),
            Some("3"),
            Some("0/3000200"),
        ];
        let obs = Observation::from_row(&row).unwrap();
        assert_eq!(obs.role, Role::Replica);
        assert_eq!(obs.replay_delay_ms, Some(0));
        assert_eq!(obs.lsn(), Some(Lsn(0x300_0060)));
        assert_eq!(obs.timeline, Some(3));
        assert_eq!(obs.latest_end_lsn, Some(Lsn(0x300_0200)));
        assert_eq!(obs.receiver, Receiver::Readable);
    }

    #[test]
    fn what_the_role_could_not_read_is_told_apart_from_no_receiver() {
        let hidden = [Some("t"), None, Some("0/10"), Some("0/10"), Some("0"), None, Some("77"), None, None];
        let obs = Observation::from_row(&hidden).unwrap();
        assert_eq!((obs.receiver, obs.timeline, obs.latest_end_lsn), (Receiver::DetailsHidden, None, None));
        let not_streaming = [Some("t"), None, Some("0/10"), Some("0/10"), Some("0"), None, None, None, None];
        assert_eq!(Observation::from_row(&not_streaming).unwrap().receiver, Receiver::Readable);
        let without = [Some("t"), None, Some("0/10"), Some("0/8"), Some("0"), None];
        let obs = Observation::from_row(&without).unwrap();
        assert_eq!((obs.receiver, obs.timeline, obs.receive_lsn), (Receiver::NotRead, None, Some(Lsn(0x10))));
        let master = [Some("f"), Some("0/1"), None, None, None, Some("000000010000000000000000")];
        let obs = Observation::from_row(&master).unwrap();
        assert_eq!((obs.receiver, obs.timeline), (Receiver::NotRead, Some(1)));
    }

    #[test]
    fn the_query_forms_share_their_first_columns_and_only_the_full_one_reads_the_view() {
        assert!(POLL_QUERY.starts_with(POLL_QUERY_WITHOUT_RECEIVER));
        assert!(POLL_QUERY.contains("pg_catalog.pg_stat_wal_receiver"));
        assert!(!POLL_QUERY_WITHOUT_RECEIVER.contains("wal_receiver"));
        assert_eq!(PollQuery::Full.on_refusal(), Some(PollQuery::WithoutReceiver));
        assert_eq!(PollQuery::WithoutReceiver.on_refusal(), None);
        // Every function call names its schema.
        for call in POLL_QUERY.match_indices('(').map(|(i, _)| &POLL_QUERY[..i]) {
            let word = call.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).next().unwrap_or("");
            let keyword = ["", "select", "operator", "join", "from"].contains(&word);
            assert!(keyword || word.starts_with("pg_catalog."), "{word:?} is not schema-qualified");
        }
    }

    #[test]
    fn malformed_rows_are_errors() {
        assert_eq!(Observation::from_row(&[Some("t")]), Err(ObservationError::Columns(1)));
        assert_eq!(Observation::from_row(&[None; 7]), Err(ObservationError::Columns(7)));
        let mut row = [Some("t"), None, None, None, None, None, None, None, None];
        assert!(Observation::from_row(&row).is_ok());
        row[0] = Some("yes");
        assert!(Observation::from_row(&row).is_err());
        row[0] = Some("t");
        row[3] = Some("zz/1");
        assert!(Observation::from_row(&row).is_err());
        row[3] = None;
        row[4] = Some("1.5");
        assert!(Observation::from_row(&row).is_err());
        row[4] = None;
        row[8] = Some("x");
        assert!(Observation::from_row(&row).is_err());
        let master = [Some("f"), None, None, None, None, None, None, None, None];
        assert_eq!(Observation::from_row(&master), Err(ObservationError::MasterWithoutLsn));
        let short_wal = [Some("f"), Some("0/1"), None, None, None, Some("0000"), None, None, None];
        assert!(Observation::from_row(&short_wal).is_err());
    }
}
