//! Target `observation`: one reply row of the poll query.

use pg_status_core::observation::{
    Observation, ObservationError, Receiver, Role, POLL_COLUMNS, POLL_COLUMNS_WITHOUT_RECEIVER,
};
use pg_status_reference::lsn;

use super::text;

/// The poll query's columns, in order.
const COLUMNS: [&str; POLL_COLUMNS] = [
    "in_recovery",
    "current_lsn",
    "receive_lsn",
    "replay_lsn",
    "replay_delay_ms",
    "wal_file",
    "receiver_pid",
    "received_tli",
    "latest_end_lsn",
];

/// Decodes the `observation` input: the row's values separated by NUL bytes (PostgreSQL text never holds
/// NUL); a value that is the single byte 0xFF (never in UTF-8) is SQL NULL; other values are UTF-8 with
/// invalid sequences replaced by U+FFFD. The empty input is a row of no columns.
pub fn decode_row(data: &[u8]) -> Vec<Option<String>> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0).map(|v| if v == [0xFF] { None } else { Some(text(v)) }).collect()
}

/// What the poll row should parse to, from the column documentation of `POLL_QUERY` (and of the form
/// without the WAL receiver, its first columns): the observation, or the indexes of the columns at fault
/// (empty for a wrong number of columns).
fn reference_observation(row: &[Option<&str>]) -> Result<Observation, Vec<usize>> {
    let full = row.len() == POLL_COLUMNS;
    if !full && row.len() != POLL_COLUMNS_WITHOUT_RECEIVER {
        return Err(Vec::new());
    }
    let mut faults = Vec::new();
    let role = match row[0] {
        Some("t") => Some(Role::Replica),
        Some("f") => Some(Role::Master),
        _ => {
            faults.push(0);
            None
        }
    };
    let mut lsn = |i: usize| match row[i] {
        None => None,
        Some(v) => {
            let parsed = lsn::parse(v.as_bytes());
            if parsed.is_none() {
                faults.push(i);
            }
            parsed
        }
    };
    let (current_lsn, receive_lsn, replay_lsn) = (lsn(1), lsn(2), lsn(3));
    // A delay is a bigint; a negative one (the replica's clock behind the master's) counts as none.
    let replay_delay_ms = row[4].and_then(|v| match v.parse::<i64>() {
        Ok(ms) => Some(u64::try_from(ms).unwrap_or(0)),
        Err(_) => {
            faults.push(4);
            None
        }
    });
    // A replica's WAL receiver, when the row has its columns: the pid alone means its details are hidden.
    // A master's receiver columns are not looked at.
    let replica_receiver = full && role == Some(Role::Replica);
    let latest_end_lsn = row.get(8).copied().flatten().filter(|_| replica_receiver).and_then(|v| {
        let parsed = lsn::parse(v.as_bytes());
        if parsed.is_none() {
            faults.push(8);
        }
        parsed
    });
    let received_tli = if replica_receiver {
        row[7].and_then(|v| {
            let parsed = v.parse::<u32>().ok();
            if parsed.is_none() {
                faults.push(7);
            }
            parsed
        })
    } else {
        None
    };
    let receiver = if !full {
        Receiver::NotRead
    } else if replica_receiver && row[6].is_some() && row[7].is_none() && row[8].is_none() {
        Receiver::DetailsHidden
    } else {
        Receiver::Readable
    };
    // A master's timeline is the first 8 hex digits of its 24-character WAL file name; a replica's is the
    // streamed timeline number. The other role's column is not looked at.
    let timeline = match role {
        Some(Role::Master) => row[5].and_then(|name| {
            let tli = (name.len() == 24).then(|| name.get(..8)).flatten();
            let parsed = tli.and_then(|t| u32::from_str_radix(t, 16).ok());
            if parsed.is_none() {
                faults.push(5);
            }
            parsed
        }),
        Some(Role::Replica) => received_tli,
        None => None,
    };
    if role == Some(Role::Master) && row[1].is_none() {
        faults.push(1);
    }
    match role {
        // Fields by where they come from: the role, the WAL positions, the delay, the receiver and timeline.
        Some(role) if faults.is_empty() => Ok(Observation {
            role,
            current_lsn,
            replay_lsn,
            receive_lsn,
            latest_end_lsn,
            replay_delay_ms,
            receiver,
            timeline,
        }),
        _ => Err(faults),
    }
}

/// Target `observation`. Input: one reply row, see [`decode_row`].
///
/// Checks: [`Observation::from_row`] never panics; it accepts exactly the rows the column documentation
/// allows, with the values they hold; an error names a column at fault with its text, or the row's true
/// number of columns, or a master without a WAL position.
pub fn check_observation(data: &[u8]) {
    let values = decode_row(data);
    let row: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
    let result = Observation::from_row(&row);
    match (&result, reference_observation(&row)) {
        (Ok(observation), Ok(expected)) => assert_eq!(observation, &expected, "row {row:?}"),
        (Err(error), Err(faults)) => {
            let _ = error.to_string();
            match error {
                ObservationError::Columns(n) => {
                    assert_eq!(*n, row.len(), "row {row:?}");
                    assert!(![POLL_COLUMNS, POLL_COLUMNS_WITHOUT_RECEIVER].contains(n), "row {row:?}");
                }
                ObservationError::Value { column, value } => {
                    let i = COLUMNS.iter().position(|c| c == column).expect("an unknown column name");
                    assert!(faults.contains(&i), "{column} blamed, but it holds a valid value: {row:?}");
                    assert_eq!(value.as_str(), row[i].unwrap_or("NULL"), "{column} blamed for the wrong text");
                }
                ObservationError::MasterWithoutLsn => {
                    assert_eq!((row[0], row[1]), (Some("f"), None), "MasterWithoutLsn for {row:?}");
                }
            }
        }
        (result, expected) => panic!("row {row:?}: parsed as {result:?}, expected {expected:?}"),
    }
}
