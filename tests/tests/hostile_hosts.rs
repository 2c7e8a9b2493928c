//! Hosts that are not PostgreSQL servers: a listener announcing a 2 GiB message and streaming zeros, one
//! sending random bytes, and one flooding well-formed notices, listed next to a real cluster. Each of their
//! polls fails quickly with the reason, pg-status's memory stays small, and the real hosts keep being polled
//! on time, so `/master` never stops naming the real master.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{bin, builder, settle, start_ready, Checks};
use pg_status_tests::hostile::{HostileServer, Hostility};
use pg_status_tests::pg::Writer;
use pg_status_tests::{is_ci, postgres_or_skip, procfs, Cluster, ClusterOptions, PgStatusBuilder};

#[test]
fn hostile_hosts_never_blind_the_poller() {
    let Some(bins) = postgres_or_skip("hostile_hosts_never_blind_the_poller") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let servers: Vec<HostileServer> = [Hostility::HugeMessage, Hostility::RandomBytes, Hostility::NoticeFlood]
        .into_iter()
        .map(|how| HostileServer::start(how).expect("hostile server"))
        .collect();
    let mut hosts = vec![(m.host(), m.port()), (r.host(), r.port())];
    hosts.extend(servers.iter().map(|s| (s.host(), s.port())));
    // Polling every 100 ms with a 1 s deadline; debug lines show every poll and how long it took.
    let p = start_ready(builder().hosts(&hosts).env("pg_status__log_level", "debug"));
    settle(&p, "/master", &m.host());
    let _writer = Writer::start(m, 10, Duration::from_millis(20), Duration::from_secs(60)).expect("writer");

    let mut c = Checks::new();
    let mark = p.stdout().len();
    let watch = Duration::from_secs(6);
    let started = Instant::now();
    let (mut answers, mut wrong, mut peak_rss) = (0, Vec::new(), 0);
    while started.elapsed() < watch {
        match p.get("/master") {
            Ok(r) if r.status == 200 && r.text() == m.host() => {}
            other => wrong.push(format!("{:?} at {:?}", other.map(|r| r.to_string()), started.elapsed())),
        }
        answers += 1;
        peak_rss = peak_rss.max(procfs::rss_kib(p.pid()).expect("rss"));
        std::thread::sleep(Duration::from_millis(20));
    }
    c.check(wrong.is_empty(), || format!("/master named the real master in every one of {answers} answers: {wrong:?}"));
    c.check(peak_rss < 48 * 1024, || format!("resident memory stays small: peak {peak_rss} KiB"));

    let lines = p.stdout().texts();
    let watched = &lines[mark.min(lines.len())..];
    let polls_of = |host: &str, outcome: &str| -> Vec<f64> {
        let prefix = format!("{host}: poll ");
        watched
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains(outcome))
            .filter_map(|l| l.split(" in ").nth(1)?.split(" ms").next()?.parse().ok())
            .collect()
    };
    for node in [m, r] {
        let ok = polls_of(&node.host(), " ok in ");
        // Every 100 ms plus the poll itself: about 50 polls in 6 s; a stalled poller manages a handful.
        c.check(ok.len() >= 20, || {
            format!("{} was polled on time: {} successful polls in {watch:?}", node.host(), ok.len())
        });
        c.check(ok.iter().all(|ms| *ms < 900.0), || {
            format!("{}'s polls finished well within their deadline: {ok:?}", node.host())
        });
    }
    for (server, what) in servers.iter().zip(["a 2 GiB message", "random bytes", "a notice flood"]) {
        let failed = polls_of(&server.host(), " failed in ");
        c.check(failed.len() >= 10, || {
            format!("{what}: the host is polled again and again and fails each time ({} failed polls)", failed.len())
        });
        c.check(failed.iter().all(|ms| *ms < 500.0), || {
            format!("{what}: each poll fails fast, not at its deadline: {failed:?}")
        });
        let sent_per_connection = server.bytes_sent() / server.connections().max(1);
        c.check(sent_per_connection < 16 << 20, || {
            format!(
                "{what}: a connection is closed soon after the limit ({sent_per_connection} bytes sent per connection)"
            )
        });
    }
    let errors = p.stderr().texts();
    for server in &servers[..1] {
        let reason = format!("the server announced a message of {} bytes", 0x7fff_fff0u32);
        c.check(errors.iter().any(|l| l.starts_with(&server.host()) && l.contains(&reason)), || {
            format!("the failed poll names the reason ({reason}); stderr: {:?}", &errors[..errors.len().min(10)])
        });
    }
    c.check(
        errors.iter().any(|l| l.starts_with(&servers[2].host()) && l.contains("more than the 65536 bytes")),
        || format!("the notice flood's poll names the read limit; stderr: {:?}", &errors[..errors.len().min(10)]),
    );
    c.finish();
}

/// Names whose DNS server never answers hold a look-up thread each for the resolver's whole timeout (20 s
/// here). They must not starve the names that resolve: a master written as a name stays the master.
#[test]
fn names_whose_dns_server_hangs_do_not_starve_the_other_hosts() {
    let test = "names_whose_dns_server_hangs_do_not_starve_the_other_hosts";
    let Some(bins) = postgres_or_skip(test) else { return };
    if !private_mounts_work() {
        assert!(!is_ci(), "{test}: needs root and mount namespaces (unshare -m) under CI");
        eprintln!("!!! SKIPPING {test}: needs root and mount namespaces (unshare -m)");
        return;
    }
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(0)).expect("cluster");
    let m = cluster.node(0);
    // A DNS server that takes every query and never answers.
    let dns = std::net::UdpSocket::bind("127.77.0.53:53").expect("bind the silent DNS server");
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.77.0.53\noptions timeout:5 attempts:2\n").expect("resolv.conf");
    // Names go to /etc/hosts, then to DNS, whatever this machine's own resolver set-up (nss-resolve, mdns).
    let nsswitch = dir.path().join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").expect("nsswitch.conf");
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, format!("127.0.0.1 localhost\n{} master.pg-status.test\n", m.host())).expect("hosts");
    // pg-status in a mount namespace of its own that sees these two files; exec keeps its process id.
    let wrapper = dir.path().join("pg-status-with-slow-dns");
    let script = format!(
        "#!/bin/sh\nexec unshare -m sh -c 'mount --bind {} /etc/resolv.conf && mount --bind {} /etc/hosts && \
         mount --bind {} /etc/nsswitch.conf && exec {}'\n",
        resolv.display(),
        hosts_file.display(),
        nsswitch.display(),
        bin().display()
    );
    std::fs::write(&wrapper, script).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // More slow names than the pool's four threads, listed before the master.
    let mut hosts: Vec<(String, u16)> = (0..6).map(|i| (format!("slow{i}.pg-status.test"), m.port())).collect();
    hosts.push(("master.pg-status.test".to_owned(), m.port()));
    let builder = PgStatusBuilder::new(&wrapper).expect("builder").timing(200, 1000, 3).hosts(&hosts);
    let p = start_ready(builder);
    settle(&p, "/master", "master.pg-status.test");
    let started = Instant::now();
    let mut wrong = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        match p.get("/master") {
            Ok(r) if r.status == 200 && r.text() == "master.pg-status.test" => {}
            other => wrong.push(format!("{:?} at {:?}", other.map(|r| r.to_string()), started.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wrong.is_empty(), "/master named the master throughout: {wrong:?}\n{}", p.output_dump());
    let threads = procfs::threads(p.pid()).expect("threads");
    assert!(threads <= 16, "a thread per hanging name at most, and a few more: {threads}");
    let lines = p.stderr().texts();
    // The slow names did hang: their polls ran out of time rather than failing to resolve.
    let resolved_fast: Vec<&String> =
        lines.iter().filter(|l| l.starts_with("slow") && !l.contains("(timeout)")).collect();
    assert!(resolved_fast.is_empty(), "the slow names' look-ups hang: {resolved_fast:?}");
    assert!(lines.iter().any(|l| l.starts_with("slow0.pg-status.test")), "{}", p.output_dump());
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("master.pg-status.test: poll failed")).collect();
    // Its first polls may wait behind the hanging look-ups until they count as hanging (STUCK, 0.5 s).
    assert!(failed.len() <= 2, "the master's polls succeed once its name is known: {failed:?}");
    drop(dns);
}

/// Whether this process may create a mount namespace and bind-mount in it (root, and a kernel that allows it).
fn private_mounts_work() -> bool {
    std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
