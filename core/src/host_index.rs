//! The key of every per-host table: a host's place in `pg_status__hosts`.

use std::fmt;
use std::ops::{Index, IndexMut};

/// A host, named by its position in `pg_status__hosts` order. Every per-host table in the core (snapshot
/// hosts, poll state, counters) is indexed by it, so a count or a cursor cannot be passed where a host is
/// meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostIndex(usize);

impl HostIndex {
    /// The host at `index` in `pg_status__hosts` order.
    pub const fn new(index: usize) -> HostIndex {
        HostIndex(index)
    }

    /// Its position in `pg_status__hosts` order, for indexing a table of hosts.
    pub const fn get(self) -> usize {
        self.0
    }

    /// Every host of a list of `count` hosts, in order.
    pub fn all(count: usize) -> impl DoubleEndedIterator<Item = HostIndex> + ExactSizeIterator + Clone {
        (0..count).map(HostIndex)
    }
}

impl fmt::Display for HostIndex {
    /// The position, as log lines and assertion messages show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<HostIndex> for usize {
    fn from(id: HostIndex) -> usize {
        id.0
    }
}

// Tables of hosts are plain vectors and slices in `pg_status__hosts` order; indexing them by `HostIndex`
// keeps the conversion in one place.
impl<T> Index<HostIndex> for [T] {
    type Output = T;
    fn index(&self, host: HostIndex) -> &T {
        &self[host.0]
    }
}

impl<T> IndexMut<HostIndex> for [T] {
    fn index_mut(&mut self, host: HostIndex) -> &mut T {
        &mut self[host.0]
    }
}

impl<T> Index<HostIndex> for Vec<T> {
    type Output = T;
    fn index(&self, host: HostIndex) -> &T {
        &self.as_slice()[host]
    }
}

impl<T> IndexMut<HostIndex> for Vec<T> {
    fn index_mut(&mut self, host: HostIndex) -> &mut T {
        &mut self.as_mut_slice()[host]
    }
}
