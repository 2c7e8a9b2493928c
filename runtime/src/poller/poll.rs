//! One poll iteration of one host: connect when needed, run the poll query, all within the iteration deadline.

use std::time::Instant;

use futures_lite::future;
use pg_status_core::monitor::{PollError, PollErrorKind};
use pg_status_core::observation::{Observation, PollQuery};

use crate::poller::pg::{self, Session, Target};
use crate::poller::runtime::Runtime;

/// When an iteration gives up, as the core's poll action says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// The whole iteration's.
    pub(crate) poll: Instant,
    /// Opening a connection's, when earlier than `poll`.
    pub(crate) connect: Option<Instant>,
}

/// What an iteration produced: the result for the core, and the session when it may be reused.
pub(crate) type Outcome = (Result<Observation, PollError>, Option<Session>);

/// Runs one iteration on `session` (or a new one when it is `None`) with the poll query's form `query`,
/// finished or abandoned by its deadlines.
///
/// On any error or timeout the session is dropped, which closes the connection.
pub(crate) async fn iterate<R: Runtime>(
    rt: &R,
    target: &Target,
    session: Option<Session>,
    query: PollQuery,
    deadlines: Deadlines,
) -> Outcome {
    let work = async {
        let session = match session {
            Some(session) => session,
            // Boxed: connecting is rare and its state is large; kept inline, every iteration's task (all
            // in flight at once when many hosts are polled in step) would carry room for it.
            None => match Box::pin(connect(rt, target, deadlines.connect)).await {
                Ok(session) => session,
                Err(error) => return (Err(error), None),
            },
        };
        match pg::query(&session, query).await {
            Ok(observation) => (Ok(observation), Some(session)),
            Err(error) => (Err(error), None),
        }
    };
    let expired = async {
        rt.sleep_until(deadlines.poll).await;
        (Err(PollError::timeout()), None)
    };
    // An answer ready at the deadline is reported as it is; the core decides whether it was in time.
    future::or(work, expired).await
}

/// Opens a session, given up at `limit` when there is one (the iteration's deadline bounds it anyway).
async fn connect<R: Runtime>(rt: &R, target: &Target, limit: Option<Instant>) -> Result<Session, PollError> {
    let open = pg::open(rt, target);
    let Some(limit) = limit else { return open.await };
    let too_slow = async {
        rt.sleep_until(limit).await;
        Err(PollError::new(
            PollErrorKind::Timeout,
            format!("no connection within {} s (pg_status__connect_timeout)", target.connect_timeout.as_secs()),
        ))
    };
    future::or(open, too_slow).await
}
