//! The simulated PostgreSQL server against the real tokio-postgres client, inside turmoil.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use pg_status_core::observation::{Observation, Receiver, Role, POLL_QUERY, POLL_QUERY_WITHOUT_RECEIVER};
use pg_status_sim::model::{Cluster, NodeServer, StaticNode, PG_PORT};
use pg_status_sim::rng::Rng;
use tokio_postgres::{NoTls, SimpleQueryMessage};

fn login(password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.user("postgres").password(password).dbname("postgres").ssl_mode(tokio_postgres::config::SslMode::Prefer);
    config
}

#[test]
fn tokio_postgres_logs_in_polls_and_is_refused_a_wrong_password() {
    let cluster = Rc::new(RefCell::new(Cluster::new(2, &mut Rng::new(1))));
    let mut sim = turmoil::Builder::new().rng_seed(1).build();
    for i in 0..2 {
        let cluster = cluster.clone();
        sim.host(format!("db{}", i + 1), move || NodeServer::new(cluster.clone(), i).run());
    }
    sim.client("client", async {
        for (host, role) in [("db1", Role::Master), ("db2", Role::Replica)] {
            let stream = turmoil::net::TcpStream::connect((host, PG_PORT)).await?;
            let (client, connection) = login("postgres").connect_raw(stream, NoTls).await?;
            tokio::task::spawn_local(connection);
            let messages = client.simple_query(POLL_QUERY).await?;
            let row = messages
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some(row),
                    _ => None,
                })
                .expect("the poll query returns a row");
            let values: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
            let observation = Observation::from_row(&values).expect("the row is a valid observation");
            assert_eq!(observation.role, role);
            assert_eq!(observation.timeline, Some(1));
            let error = client.simple_query("SELECT 1").await.expect_err("only the poll query is known");
            assert_eq!(error.code().map(|c| c.code()), Some("42601"));
            // The session survives a failed query.
            client.simple_query(POLL_QUERY).await?;
        }
        let stream = turmoil::net::TcpStream::connect(("db1", PG_PORT)).await?;
        let error = login("wrong").connect_raw(stream, NoTls).await.err().expect("a wrong password is refused");
        assert_eq!(error.code().map(|c| c.code()), Some("28P01"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    });
    sim.run().expect("the simulation succeeds");
    let c = cluster.borrow();
    assert_eq!((c.nodes[0].connections, c.nodes[0].sessions), (2, 1));
    assert_eq!((c.nodes[1].connections, c.nodes[1].sessions), (1, 1));
}

#[test]
fn a_revoked_receiver_view_refuses_the_full_query_but_not_the_one_without_it() {
    let cluster = Rc::new(RefCell::new(Cluster::new(2, &mut Rng::new(1))));
    cluster.borrow_mut().nodes[1].receiver_view_revoked = true;
    let mut sim = turmoil::Builder::new().rng_seed(1).build();
    for i in 0..2 {
        let cluster = cluster.clone();
        sim.host(format!("db{}", i + 1), move || NodeServer::new(cluster.clone(), i).run());
    }
    sim.client("client", async {
        let stream = turmoil::net::TcpStream::connect(("db2", PG_PORT)).await?;
        let (client, connection) = login("postgres").connect_raw(stream, NoTls).await?;
        tokio::task::spawn_local(connection);
        let error = client.simple_query(POLL_QUERY).await.expect_err("the view is revoked");
        assert_eq!(error.code().map(|c| c.code()), Some("42501"));
        let messages = client.simple_query(POLL_QUERY_WITHOUT_RECEIVER).await?;
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .expect("a row");
        let values: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
        let observation = Observation::from_row(&values).expect("a valid observation");
        assert_eq!(
            (observation.role, observation.receiver, observation.timeline),
            (Role::Replica, Receiver::NotRead, None)
        );
        assert!(observation.replay_lsn.is_some());
        Ok(())
    });
    sim.run().expect("the simulation succeeds");
}

#[test]
fn the_same_server_runs_on_real_loopback_sockets() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::task::spawn_local(async move {
            let node = Rc::new(StaticNode::replica(0x1_0000_0000));
            for pid in 1.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                let node = node.clone();
                tokio::task::spawn_local(async move { pg_status_sim::pgwire::serve(stream, &*node, pid).await });
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
        let (client, connection) = login("postgres").connect_raw(stream, NoTls).await.expect("logs in");
        tokio::task::spawn_local(connection);
        let messages = client.simple_query(POLL_QUERY).await.expect("the poll query runs");
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .expect("a row");
        let values: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
        let observation = Observation::from_row(&values).expect("a valid observation");
        assert_eq!(observation.role, Role::Replica);
        assert_eq!(observation.replay_lsn.map(|l| l.to_string()).as_deref(), Some("1/0"));
    });
}
