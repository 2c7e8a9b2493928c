//! Master election (DESIGN 4): the first healthy host claiming master, by host order or by the highest
//! timeline, else a possibly dead one; or nobody while two claim it under `pg_status__split_brain=refuse`.

use crate::config::SplitBrainPolicy;
use crate::host_index::HostIndex;
use crate::observation::Role;
use crate::snapshot::{Health, HostInput};

/// The elected master's index among `hosts` under `policy`, if any.
pub(crate) fn elect_master(hosts: &[HostInput<'_>], policy: SplitBrainPolicy) -> Option<HostIndex> {
    let claims = |health: Health| {
        hosts
            .iter()
            .enumerate()
            .filter(move |(_, h)| h.health == health && h.last.is_some_and(|o| o.role == Role::Master))
    };
    let pick = |health: Health| -> Option<HostIndex> {
        let index = match policy {
            SplitBrainPolicy::HostOrder | SplitBrainPolicy::Refuse => claims(health).map(|(i, _)| i).next(),
            // Highest timeline wins; `min_by_key` on the reversed key keeps the first host among equals.
            SplitBrainPolicy::Timeline => {
                claims(health).min_by_key(|(_, h)| std::cmp::Reverse(h.last.and_then(|o| o.timeline))).map(|(i, _)| i)
            }
        };
        index.map(HostIndex::new)
    };
    // Refusing, two healthy claims leave no master at all: not even a possibly dead one stands in.
    if policy == SplitBrainPolicy::Refuse && claims(Health::Alive).nth(1).is_some() {
        return None;
    }
    pick(Health::Alive).or_else(|| pick(Health::PossiblyDead))
}
