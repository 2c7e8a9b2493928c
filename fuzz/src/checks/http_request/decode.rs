//! The `http_request` input format: a request and the snapshot state it is answered from.

use pg_status_core::config::{ReplicaFallback, SplitBrainPolicy};
use pg_status_core::lsn::Lsn;
use pg_status_core::observation::{Observation, Receiver, Role};
use pg_status_core::snapshot::{Health, Settings};

use super::super::text;

/// Reads fuzz input front to back; past the end every read yields zeros, so every input decodes.
pub(super) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// A number: a byte below 0xFE is its own value (small values make thresholds and positions meet);
    /// 0xFE is followed by a little-endian u16 and 0xFF by a little-endian u64.
    fn number(&mut self) -> u64 {
        match self.byte() {
            0xFE => self.little_endian(2),
            0xFF => self.little_endian(8),
            b => u64::from(b),
        }
    }

    fn little_endian(&mut self, len: usize) -> u64 {
        (0..len).fold(0, |acc, i| acc | u64::from(self.byte()) << (8 * i))
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// Data centres and regions a host or this instance may be in (index 0 of a selector is "none").
pub(super) const PLACES: [&str; 3] = ["a", "b", "c"];
pub(super) const HEALTHS: [Health; 4] = [Health::Unknown, Health::Alive, Health::PossiblyDead, Health::Dead];

/// One host of a decoded `http_request` case.
#[derive(Debug)]
pub struct CaseHost {
    /// Its name, unique in the case.
    pub name: String,
    /// Its data centre.
    pub dc: Option<&'static str>,
    /// Its region.
    pub geo: Option<&'static str>,
    /// Its health.
    pub health: Health,
    /// Its last observation.
    pub last: Option<Observation>,
    /// When that observation arrived, in milliseconds after the case's start.
    pub observed_at: Option<u64>,
    /// When and where the host's WAL stood at its recent polls as master, oldest first.
    pub wal_history: Vec<(u64, Lsn)>,
}

/// A decoded `http_request` input: a request and the snapshot state it is answered from.
#[derive(Debug)]
pub struct HttpCase {
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Accept` header, if sent.
    pub accept: Option<Vec<u8>>,
    /// Whether every host has finished its first iteration.
    pub ready: bool,
    /// Thresholds, locality switches and split-brain policy.
    pub settings: Settings,
    /// This instance's data centre.
    pub current_dc: Option<&'static str>,
    /// This instance's region.
    pub current_geo: Option<&'static str>,
    /// The round-robin cursor before the request.
    pub cursor: usize,
    /// The hosts, in configuration order.
    pub hosts: Vec<CaseHost>,
    /// The snapshot is derived with the hosts' observation times and WAL histories.
    pub timed: bool,
}

pub(super) fn place(selector: u8) -> Option<&'static str> {
    PLACES.get(usize::from(selector & 3).checked_sub(1)?).copied()
}

/// Decodes the `http_request` input, in two parts split at the first NUL byte.
///
/// 1. The request as text lines, `METHOD \n TARGET \n ACCEPT` (invalid UTF-8 in the method and target is
///    replaced by U+FFFD; the Accept header is raw bytes). An empty method is `GET`; without a second newline
///    no Accept header is sent.
/// 2. The snapshot, in bytes (missing bytes read as 0; a *number* is a byte below 0xFE, or 0xFE and a
///    little-endian u16, or 0xFF and a little-endian u64):
///    - flags: bit 0 set = not ready, bit 1 = locality by DC, bit 2 = locality by region, bit 3 = split
///      brain by timeline, bit 4 = refuse a split brain (it wins over bit 3), bit 5 = replica routes do not
///      fall back to the master by default;
///    - numbers: `sync_max_lag_ms`, `sync_max_lag_bytes`, `max_wait_ms`, the round-robin cursor;
///    - a byte: bits 0-1 this instance's DC, bits 2-3 its region (0 none, 1-3 "a", "b", "c");
///    - a byte: the number of hosts, modulo 9; then for each host:
///      - a length byte (modulo 17) and that many bytes of name; an empty name, one with `,` or surrounding
///        whitespace, or a repeated one becomes `h<index>` (with `'` appended until unique);
///      - a byte: bits 0-1 health (unknown, alive, possibly dead, dead), bit 2 an observation follows, bit
///        3 its role is master (else replica), bits 4-5 DC, bits 6-7 region;
///      - with an observation, a byte saying which optional fields follow, as numbers: bit 0 current LSN,
///        bit 1 receive LSN, bit 2 replay LSN, bit 3 replay delay, bit 4 timeline (low 32 bits), bit 5 the WAL
///        receiver's latest end LSN;
///    - a byte: bit 0 set = derive with observation times (else no times are known); then for each host a
///      byte (bit 0: an observation time follows, as a number of ms; bits 1-7 modulo 5: the number of WAL
///      samples that follow, each a number of ms after the previous sample and an LSN number). Times are
///      capped at 2^40 ms.
pub fn decode_http(data: &[u8]) -> HttpCase {
    let (request, state) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut lines = request.splitn(3, |&b| b == b'\n');
    let method = match lines.next().unwrap_or_default() {
        [] => "GET".to_owned(),
        method => text(method),
    };
    let target = text(lines.next().unwrap_or_default());
    let accept = lines.next().map(<[u8]>::to_vec);

    let mut r = Reader { data: state };
    let flags = r.byte();
    let sync_max_lag_ms = r.number();
    let sync_max_lag_bytes = r.number();
    let max_wait_ms = r.number();
    let settings = Settings {
        sync_max_lag_ms,
        sync_max_lag_bytes,
        locality_dc: flags & 2 != 0,
        locality_geo: flags & 4 != 0,
        split_brain: if flags & 16 != 0 {
            SplitBrainPolicy::Refuse
        } else if flags & 8 != 0 {
            SplitBrainPolicy::Timeline
        } else {
            SplitBrainPolicy::HostOrder
        },
        max_wait_ms,
        replica_fallback: if flags & 32 != 0 { ReplicaFallback::None } else { ReplicaFallback::Master },
    };
    // Truncation on 32-bit targets is fine: any cursor value is allowed.
    let cursor = r.number() as usize;
    let here = r.byte();
    let count = r.byte() % 9;
    let mut hosts: Vec<CaseHost> = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let len = usize::from(r.byte() % 17);
        let mut name = text(r.bytes(len));
        if name.is_empty() || name.contains(',') || name.trim() != name || hosts.iter().any(|h| h.name == name) {
            name = format!("h{i}");
            while hosts.iter().any(|h| h.name == name) {
                name.push('\'');
            }
        }
        let bits = r.byte();
        let last = (bits & 4 != 0).then(|| {
            let fields = r.byte();
            let mut field = |bit: u8| (fields & bit != 0).then(|| r.number());
            Observation {
                role: if bits & 8 != 0 { Role::Master } else { Role::Replica },
                current_lsn: field(1).map(Lsn),
                receive_lsn: field(2).map(Lsn),
                replay_lsn: field(4).map(Lsn),
                replay_delay_ms: field(8),
                timeline: field(16).map(|t| (t & 0xFFFF_FFFF) as u32),
                latest_end_lsn: field(32).map(Lsn),
                receiver: Receiver::Readable,
            }
        });
        hosts.push(CaseHost {
            name,
            dc: place(bits >> 4),
            geo: place(bits >> 6),
            health: HEALTHS[usize::from(bits & 3)],
            last,
            observed_at: None,
            wal_history: Vec::new(),
        });
    }
    let timed = r.byte() & 1 != 0;
    if timed {
        const MAX_MS: u64 = 1 << 40;
        for host in &mut hosts {
            let bits = r.byte();
            host.observed_at = (bits & 1 != 0).then(|| r.number().min(MAX_MS));
            let mut at = 0u64;
            for _ in 0..(bits >> 1) % 5 {
                at = at.saturating_add(r.number()).min(MAX_MS);
                host.wal_history.push((at, Lsn(r.number())));
            }
        }
    }
    HttpCase {
        method,
        target,
        accept,
        ready: flags & 1 == 0,
        settings,
        current_dc: place(here),
        current_geo: place(here >> 2),
        cursor,
        hosts,
        timed,
    }
}

// ---------------------------------------------------------------------------------------------------------
