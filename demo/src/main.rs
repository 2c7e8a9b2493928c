//! `pg-status-demo`: a primary, two streaming replicas and pg-status in front of them, on this machine.
//!
//! Without arguments it starts everything, prints what to try, and takes commands on standard input or from
//! `pg-status-demo <command>` in another terminal (through a Unix socket). Ctrl-C stops every process it
//! started. It is built on the integration-test harness, so the demo runs exactly what the tests run.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use pg_status_tests::pg::Writer;
use pg_status_tests::{Cluster, ClusterOptions, Node, PgStatus, PgStatusBuilder};

const HELP: &str = "commands:
  failover   stop the current master and promote a replica (the other replicas follow it)
  lag        pause replay on a replica while the master writes for 10 seconds
  hosts      print /hosts
  quit       stop everything (Ctrl-C does the same)";

fn socket_path() -> PathBuf {
    std::env::temp_dir().join("pg-status-demo.sock")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.as_slice() {
        [] => match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("demo: {e}");
                1
            }
        },
        [command] if command == "help" || command == "--help" || command == "-h" => {
            println!("usage: pg-status-demo [failover|lag|hosts|quit]\n{HELP}");
            0
        }
        [command] => send(command),
        _ => {
            eprintln!("usage: pg-status-demo [failover|lag|hosts|quit]");
            2
        }
    };
    std::process::exit(code);
}

/// Sends one command to a running demo and prints its answer.
fn send(command: &str) -> i32 {
    let path = socket_path();
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("no demo is running ({}: {e}); start one with scripts/demo.sh", path.display());
            return 1;
        }
    };
    if writeln!(stream, "{command}").is_err() {
        eprintln!("the demo closed the connection");
        return 1;
    }
    let mut answer = String::new();
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        answer.push_str(&line);
        answer.push('\n');
    }
    print!("{answer}");
    0
}

/// A command and where its answer goes.
struct Request {
    command: String,
    reply: mpsc::Sender<String>,
}

struct Demo {
    cluster: Cluster,
    pg_status: PgStatus,
    addr: SocketAddr,
    lagging: Arc<AtomicBool>,
}

fn run() -> Result<(), String> {
    let bins = pg_status_tests::PgBinaries::locate().map_err(|e| {
        format!("{e}\nPostgreSQL 15 is needed: scripts/demo.sh installs it, or apt-get install postgresql-15")
    })?;
    let binary = pg_status_tests::runner::binary(None).map_err(|e| e.to_string())?;
    let port: u16 = match std::env::var("PG_STATUS_DEMO_PORT") {
        Ok(p) => p.parse().map_err(|_| format!("PG_STATUS_DEMO_PORT={p:?} is not a port"))?,
        Err(_) => 8000,
    };

    println!("starting a primary and two streaming replicas...");
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).map_err(|e| e.to_string())?;
    let hosts: Vec<(String, u16)> = cluster.nodes().iter().map(|n| (n.host(), n.port())).collect();
    let pg_status = PgStatusBuilder::new(&binary)
        .map_err(|e| e.to_string())?
        .hosts(&hosts)
        .env("pg_status__http_port", port)
        .env("pg_status__sleep_ms", 1000)
        .env("pg_status__query_timeout_ms", 1000)
        .env("pg_status__max_fails", 3)
        .env("pg_status__sync_max_lag_bytes", 100_000)
        .spawn()
        .map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    pg_status_tests::wait_until(Duration::from_secs(20), "pg-status to be ready", || {
        pg_status_tests::http::get(addr, "/ready", None).ok().filter(|r| r.status == 200)
    })
    .map_err(|e| format!("{e}\n{}", pg_status.output_dump()))?;
    for (i, node) in cluster.nodes().iter().enumerate() {
        let role = if i == 0 { "primary" } else { "replica" };
        println!("  {role:<8} {}:{}", node.host(), node.port());
    }
    println!("pg-status on http://{addr}; try:");
    for path in ["/master", "/replica", "/sync_by_time", "/replica?min_lsn=0/0", "/hosts"] {
        println!("  curl 'http://{addr}{path}'");
    }
    println!("{HELP}\n(type them here, or run scripts/demo.sh <command> in another terminal)");

    let demo = Arc::new(Mutex::new(Demo { cluster, pg_status, addr, lagging: Arc::new(AtomicBool::new(false)) }));
    let (tx, rx) = mpsc::channel::<Request>();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    spawn_stdin(tx.clone());
    spawn_socket(tx)?;

    let mut printed = 0;
    while !stop.load(Ordering::Relaxed) {
        // pg-status's own lines show the transitions as they happen.
        if let Ok(d) = demo.lock() {
            let lines = d.pg_status.stdout().texts();
            for line in &lines[printed.min(lines.len())..] {
                println!("  pg-status | {line}");
            }
            printed = lines.len();
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(request) => {
                let quit = request.command == "quit";
                let answer = execute(&demo, &request.command);
                println!("{answer}");
                let _ = request.reply.send(answer);
                if quit {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    println!("stopping pg-status and PostgreSQL...");
    let _ = std::fs::remove_file(socket_path());
    // Dropping the demo stops pg-status and every server (the harness's guards).
    drop(demo);
    Ok(())
}

fn spawn_stdin(tx: mpsc::Sender<Request>) {
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let command = line.trim().to_owned();
            if command.is_empty() {
                continue;
            }
            let (reply, _answer) = mpsc::channel();
            if tx.send(Request { command, reply }).is_err() {
                break;
            }
        }
    });
}

fn spawn_socket(tx: mpsc::Sender<Request>) -> Result<(), String> {
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(&stream);
            let mut command = String::new();
            if reader.read_line(&mut command).is_err() {
                continue;
            }
            let (reply, answer) = mpsc::channel();
            if tx.send(Request { command: command.trim().to_owned(), reply }).is_err() {
                break;
            }
            if let Ok(text) = answer.recv_timeout(Duration::from_secs(60)) {
                let _ = (&stream).write_all(text.as_bytes());
                let _ = (&stream).write_all(b"\n");
            }
        }
    });
    Ok(())
}

fn execute(demo: &Arc<Mutex<Demo>>, command: &str) -> String {
    let Ok(d) = demo.lock() else { return "the demo is in a broken state".into() };
    match command {
        "failover" => failover(&d).unwrap_or_else(|e| format!("failover failed: {e}")),
        "lag" => lag(demo, &d),
        "hosts" => match pg_status_tests::http::get(d.addr, "/hosts", None) {
            Ok(r) => r.text(),
            Err(e) => format!("GET /hosts failed: {e}"),
        },
        "quit" => "bye".into(),
        "help" => HELP.into(),
        other => format!("unknown command {other:?}\n{HELP}"),
    }
}

/// The running node that is not in recovery.
fn current_master(cluster: &Cluster) -> Option<&Node> {
    cluster.nodes().iter().find(|n| n.is_running() && n.is_in_recovery().ok() == Some(false))
}

fn failover(d: &Demo) -> Result<String, String> {
    let master = current_master(&d.cluster).ok_or("no running master")?;
    let Some(next) = d.cluster.nodes().iter().find(|n| n.is_running() && n.name() != master.name()) else {
        return Err("no running replica left to promote".into());
    };
    master.stop().map_err(|e| e.to_string())?;
    next.promote().map_err(|e| e.to_string())?;
    // The remaining replicas follow the new master on its new timeline.
    for other in d.cluster.nodes().iter().filter(|n| n.is_running() && n.name() != next.name()) {
        let conninfo = format!("host={} port={} user=postgres password=postgres", next.host(), next.port());
        other
            .execute(&format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"))
            .and_then(|()| other.execute("SELECT pg_reload_conf()"))
            .map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "stopped the master {} and promoted {}; watch /master switch within about a second",
        master.host(),
        next.host()
    ))
}

fn lag(demo: &Arc<Mutex<Demo>>, d: &Demo) -> String {
    if d.lagging.swap(true, Ordering::SeqCst) {
        return "a lag is already running".into();
    }
    let Some(master) = current_master(&d.cluster) else {
        d.lagging.store(false, Ordering::SeqCst);
        return "no running master".into();
    };
    let replica = d.cluster.nodes().iter().enumerate().find(|(_, n)| n.is_running() && n.name() != master.name());
    let Some((index, replica)) = replica else {
        d.lagging.store(false, Ordering::SeqCst);
        return "no running replica".into();
    };
    let result = pg_status_tests::pg::create_load_table(master)
        .and_then(|()| replica.pause_replay())
        .and_then(|()| Writer::start(master, 200, Duration::from_millis(50), Duration::from_secs(10)));
    match result {
        Ok(writer) => {
            let lagging = Arc::clone(&d.lagging);
            let demo = Arc::clone(demo);
            let name = replica.host();
            thread::spawn(move || {
                thread::sleep(Duration::from_secs(10));
                writer.stop();
                if let Ok(d) = demo.lock() {
                    match d.cluster.nodes()[index].resume_replay() {
                        Ok(()) => println!(
                            "replay resumed on {}; it catches up within a poll or two",
                            d.cluster.nodes()[index].host()
                        ),
                        Err(e) => println!("could not resume replay: {e}"),
                    }
                }
                lagging.store(false, Ordering::SeqCst);
            });
            format!("replay paused on {name} while the master writes for 10 s: watch its lag_bytes in /hosts and /sync_by_bytes fall back")
        }
        Err(e) => {
            d.lagging.store(false, Ordering::SeqCst);
            format!("lag failed: {e}")
        }
    }
}
