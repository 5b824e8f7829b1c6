//! flowgatectl end to end: the binary against a control server (over an
//! in-memory data plane) on a socket in a temporary directory.

mod ctl_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ctl_support::{flowgatectl, Daemon, RULES};
use flowgate_api::{FlowEntry, ServiceStats};
use flowgate_dataplane::control::ServerLimits;
use flowgate_dataplane::pipeline::PipelineCounters;

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn subcommands_change_and_show_the_rules() {
    let d = Daemon::start();
    let out = d
        .ctl(&[
            "service",
            "add",
            "dns",
            "--udp",
            "198.18.100.10:53",
            "-s",
            "sh",
            "-b",
            "198.18.1.11:5353",
            "-b",
            "198.18.1.12:5353@3",
        ])
        .ok();
    assert_eq!(
        out,
        "+ service dns (udp 198.18.100.10:53, sh, 2 backends)\n\
         + backend dns 198.18.1.11:5353 weight 1\n\
         + backend dns 198.18.1.12:5353 weight 3\n\
         applied 3 changes: generation 2\n"
    );
    let list = d.ctl(&["service", "list"]).ok();
    let lines: Vec<Vec<&str>> = list.lines().map(words).collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "PROTO",
            "VIP:PORT",
            "SCHEDULER",
            "TABLE",
            "BACKENDS"
        ]
    );
    assert_eq!(
        lines[1],
        ["web", "tcp", "198.18.100.10:80", "maglev", "251", "2"]
    );
    assert_eq!(
        lines[2],
        ["dns", "udp", "198.18.100.10:53", "sh", "251", "2"]
    );

    let out = d.ctl(&["service", "edit", "dns", "-s", "wrr"]).ok();
    assert!(
        out.starts_with("~ service dns: scheduler sh -> wrr\n"),
        "{out}"
    );
    let out = d
        .ctl(&[
            "backend",
            "add",
            "web",
            "198.18.1.13:8080",
            "-w",
            "4",
            "--zone",
            "a",
        ])
        .ok();
    assert!(
        out.starts_with("+ backend web 198.18.1.13:8080 weight 4\n"),
        "{out}"
    );
    let out = d
        .ctl(&["backend", "edit", "web", "198.18.1.13:8080", "--zone", ""])
        .ok();
    assert!(
        out.starts_with("~ backend web 198.18.1.13:8080 zone a -> -\n"),
        "{out}"
    );
    let out = d.ctl(&["backend", "drain", "web", "198.18.1.13:8080"]).ok();
    assert!(
        out.starts_with("~ backend web 198.18.1.13:8080 weight 4 -> 0 (drained)\n"),
        "{out}"
    );
    let backends = d.ctl(&["backend", "list", "web"]).ok();
    assert_eq!(
        backends.lines().map(words).collect::<Vec<_>>(),
        [
            vec!["BACKEND", "WEIGHT", "ZONE", "SET", "GROUP"],
            vec!["198.18.1.11:8080", "1", "-", "-", "-"],
            vec!["198.18.1.12:8080", "2", "-", "-", "-"],
            vec!["198.18.1.13:8080", "0", "(drained)", "-", "-", "-"],
        ]
    );
    let out = d.ctl(&["backend", "del", "web", "198.18.1.13:8080"]).ok();
    assert!(
        out.starts_with("- backend web 198.18.1.13:8080 weight 0 (drained)\n"),
        "{out}"
    );
    let out = d.ctl(&["service", "del", "dns"]).ok();
    assert!(
        out.starts_with("- service dns (udp 198.18.100.10:53, wrr, 2 backends)\n"),
        "{out}"
    );
    assert_eq!(d.dataplane.current().service_count(), 1);
}

#[test]
fn read_commands_print_json_on_request() {
    let d = Daemon::start();
    let counters = Arc::new(PipelineCounters::default());
    counters.rx_packets.add(10);
    d.dataplane.add_worker(Some(3), counters);
    d.dataplane.set_flows(vec![FlowEntry {
        worker: 0,
        service: Some("web".into()),
        protocol: "tcp".into(),
        client: "198.18.0.2:40000".parse().unwrap(),
        vip: "198.18.100.10:80".parse().unwrap(),
        backend: "198.18.1.12:8080".parse().unwrap(),
        state: "established".into(),
        idle_ms: 1500,
    }]);
    for args in [
        vec!["status"],
        vec!["service", "list"],
        vec!["backend", "list", "web"],
        vec!["stats"],
        vec!["flows"],
        vec!["-L", "-n"],
    ] {
        let mut with_json = args.clone();
        with_json.extend(["-o", "json"]);
        let out = d.ctl(&with_json).ok();
        assert_eq!(out.lines().count(), 1, "{args:?}: one JSON object per line");
        let _: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    }
    let status: serde_json::Value =
        serde_json::from_str(&d.ctl(&["-o", "json", "status"]).ok()).unwrap();
    assert_eq!(status["kind"], "status");
    assert_eq!(status["dataplane"]["workers"][0]["core"], 3);
    assert_eq!(status["services"], 1);

    let text = d.ctl(&["status"]).ok();
    assert!(
        text.starts_with(&format!(
            "flowgate {}\ngeneration  1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("rules       gw.toml, 1 service, 2 backends"),
        "{text}"
    );
    let flows = d.ctl(&["flows", "--service", "web"]).ok();
    assert!(flows.contains("198.18.0.2:40000"), "{flows}");
    assert!(
        flows.contains("198.18.1.12:8080  established  1.5s"),
        "{flows}"
    );
    assert!(flows.ends_with("1 flow\n"));
}

#[test]
fn stats_watch_prints_rates_between_samples() {
    let d = Daemon::start();
    let counters = Arc::new(PipelineCounters::default());
    d.dataplane.add_worker(Some(1), Arc::clone(&counters));
    d.dataplane.set_service_stats(vec![ServiceStats {
        name: "web".into(),
        ..ServiceStats::default()
    }]);
    // Traffic while it watches.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                counters.rx_packets.add(100);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = d
        .ctl(&["stats", "--watch", "--interval", "0.2", "--count", "2"])
        .ok();
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    assert_eq!(out.matches("rates over").count(), 2, "{out}");
    let all: Vec<&str> = out.lines().filter(|l| l.starts_with("all")).collect();
    assert_eq!(all.len(), 2);
    let rx: f64 = words(all[0])[2].parse().unwrap();
    assert!(rx > 1000.0, "about 20 000 packets/s were added: {out}");
    let json = d
        .ctl(&[
            "stats",
            "--watch",
            "--interval",
            "0.05",
            "--count",
            "2",
            "-o",
            "json",
        ])
        .ok();
    assert_eq!(json.lines().count(), 3, "the first sample and two more");
}

#[test]
fn stats_watch_outlasts_the_daemons_idle_timeout() {
    let d = Daemon::start_with(ServerLimits {
        idle_timeout: std::time::Duration::from_millis(150),
        ..ServerLimits::default()
    });
    let out = d
        .ctl(&["stats", "--watch", "--interval", "0.4", "--count", "2"])
        .ok();
    assert_eq!(out.matches("rates over").count(), 2, "{out}");
}

#[test]
fn apply_prints_the_diff_and_dry_run_changes_nothing() {
    let d = Daemon::start();
    let file = d.dir.join("gw.toml");
    std::fs::write(&file, RULES.replace("weight = 2", "weight = 5")).unwrap();
    let path = file.to_str().unwrap();
    let out = d.ctl(&["apply", "-f", path, "--dry-run"]).ok();
    assert_eq!(
        out,
        "~ backend web 198.18.1.12:8080 weight 2 -> 5\n\
         dry run: 1 change would apply; nothing changed (generation 1 runs)\n"
    );
    assert_eq!(d.dataplane.current().generation(), 1);
    let out = d.ctl(&["apply", "-f", path]).ok();
    assert!(out.ends_with("applied 1 change: generation 2\n"), "{out}");
    let out = d.ctl(&["apply", "-f", path]).ok();
    assert_eq!(out, "no change (generation 2 runs)\n");

    std::fs::write(&file, RULES.replace("port = 8080", "port = 0")).unwrap();
    let err = d.ctl(&["apply", "-f", path]).failed(1);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("flowgatectl: rejected: 2 problems; the first: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("  {path}:12:8: port 0 of backend 198.18.1.11")),
        "{err}"
    );
    assert_eq!(lines.len(), 3);
    assert_eq!(d.dataplane.current().generation(), 2);

    let err = d.ctl(&["apply", "-f", "/nonexistent/gw.toml"]).failed(1);
    assert!(
        err.starts_with("flowgatectl: cannot read /nonexistent/gw.toml: "),
        "{err}"
    );
}

#[test]
fn the_ipvsadm_shorthand_works_like_ipvsadm() {
    let d = Daemon::start();
    let out = d
        .ctl(&[
            "-A",
            "-t",
            "198.18.100.11:80",
            "-s",
            "mh",
            "-r",
            "198.18.1.21:8080",
            "-r",
            "198.18.1.22:8080@2",
        ])
        .ok();
    assert!(
        out.starts_with(
            "+ service tcp-198.18.100.11-80 (tcp 198.18.100.11:80, maglev, 2 backends)\n"
        ),
        "{out}"
    );
    d.ctl(&[
        "-a",
        "-t",
        "198.18.100.11:80",
        "-r",
        "198.18.1.23:8080",
        "-w",
        "3",
        "-m",
    ])
    .ok();
    d.ctl(&[
        "-e",
        "-t",
        "198.18.100.11:80",
        "-r",
        "198.18.1.21:8080",
        "-w",
        "0",
    ])
    .ok();
    d.ctl(&["-d", "-t", "198.18.100.11:80", "-r", "198.18.1.22:8080"])
        .ok();
    d.ctl(&["-E", "-t", "198.18.100.11:80", "-s", "sh"]).ok();
    let list = d.ctl(&["-L", "-n", "-t", "198.18.100.11:80"]).ok();
    assert_eq!(
        list.lines().map(words).collect::<Vec<_>>(),
        [
            vec!["Prot", "LocalAddress:Port", "Scheduler", "Name"],
            vec!["->", "RemoteAddress:Port", "Weight"],
            vec!["TCP", "198.18.100.11:80", "sh", "tcp-198.18.100.11-80"],
            vec!["->", "198.18.1.21:8080", "0"],
            vec!["->", "198.18.1.23:8080", "3"],
        ]
    );
    d.ctl(&["-D", "-t", "198.18.100.11:80"]).ok();
    let all = d.ctl(&["-Ln"]).ok();
    assert!(!all.contains("198.18.100.11"), "{all}");
    assert!(all.contains("TCP  198.18.100.10:80"), "{all}");

    let err = d
        .ctl(&["-d", "-u", "198.18.100.11:53", "-r", "198.18.1.21:8080"])
        .failed(1);
    assert_eq!(
        err,
        "flowgatectl: rejected: no udp 198.18.100.11:53 service\n"
    );
    let err = d
        .ctl(&[
            "-A",
            "-t",
            "198.18.100.12:80",
            "-s",
            "rr",
            "-r",
            "198.18.1.21:8080",
        ])
        .failed(2);
    assert!(err.contains("use wrr"), "{err}");
}

#[test]
fn failures_exit_non_zero_with_one_line_of_reason() {
    let d = Daemon::start();
    let err = d
        .ctl(&["backend", "drain", "nope", "198.18.1.11:8080"])
        .failed(1);
    assert_eq!(err, "flowgatectl: rejected: unknown service \"nope\"\n");
    let err = d
        .ctl(&["backend", "add", "web", "198.18.1.300:8080"])
        .failed(1);
    assert_eq!(
        err,
        "flowgatectl: rejected: backend \"198.18.1.300\" of service \"web\" is not an IP address\n"
    );
    let err = d
        .ctl(&["backend", "add", "web", "198.18.1.11:8080"])
        .failed(1);
    assert_eq!(
        err,
        "flowgatectl: rejected: service \"web\" already has backend 198.18.1.11:8080\n"
    );
    let err = d
        .ctl(&["backend", "edit", "web", "198.18.1.11:8080", "-w", "10001"])
        .failed(1);
    assert_eq!(
        err,
        "flowgatectl: rejected: weight 10001 of backend 198.18.1.11:8080 in service \"web\" is out of range 0..=10000\n"
    );
    assert_eq!(d.dataplane.current().generation(), 1, "nothing changed");

    // Removing a service's last backend that takes new flows is refused;
    // the refusal says how to remove the service.
    d.ctl(&["backend", "del", "web", "198.18.1.11:8080"]).ok();
    let err = d
        .ctl(&["backend", "del", "web", "198.18.1.12:8080"])
        .failed(1);
    assert!(
        err.ends_with(
            "\n  hint: it is the last backend of \"web\" with weight > 0; \
             to remove the service, use flowgatectl service del web\n"
        ),
        "{err}"
    );
    d.ctl(&[
        "-a",
        "-t",
        "198.18.100.10:80",
        "-r",
        "198.18.1.11:8080",
        "-w",
        "0",
    ])
    .ok();
    let err = d
        .ctl(&["-d", "-t", "198.18.100.10:80", "-r", "198.18.1.12:8080"])
        .failed(1);
    assert!(
        err.ends_with("to remove the service, use -D -t 198.18.100.10:80\n"),
        "{err}"
    );
    // A refusal of another kind gets no hint.
    let err = d
        .ctl(&["-d", "-t", "198.18.100.10:80", "-r", "198.18.1.99:8080"])
        .failed(1);
    assert!(!err.contains("hint"), "{err}");

    // Usage errors: status 2, from the command line alone.
    d.ctl(&["backend", "edit", "web", "198.18.1.11:8080"])
        .failed(2);
    d.ctl(&["backend", "add", "web", "198.18.1.11"]).failed(2);
    d.ctl(&["frobnicate"]).failed(2);

    // No daemon: no answer, status 3.
    let err = flowgatectl(&["--socket", "/nonexistent/control.sock", "status"], None).failed(3);
    assert_eq!(
        err,
        "flowgatectl: cannot connect to /nonexistent/control.sock: is flowgate running?\n"
    );
    // $FLOWGATE_SOCKET stands in for --socket.
    let out = flowgatectl(&["service", "list"], Some(&d.socket)).ok();
    assert!(out.contains("web"));
    let err = flowgatectl(&["status"], Some(Path::new("/nonexistent/env.sock"))).failed(3);
    assert!(err.contains("/nonexistent/env.sock"), "{err}");
}
