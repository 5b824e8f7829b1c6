//! The operator's dashboard and alerts against the product they watch:
//! configs/grafana-flowgate.json (Grafana) and
//! configs/prometheus-flowgate-rules.yml (Prometheus) name only metrics
//! that a real scrape has, with labels that those metrics carry; counters
//! are only ever read through a rate; the dashboard is well-formed (unique
//! panel ids, a data source and an instance variable, a unit on every
//! panel); `promtool check rules` accepts the rules and every dashboard
//! expression; and `promtool test rules` runs
//! configs/prometheus-flowgate-rules.test.yml, in which every alert fires
//! for a faulty gateway and stays silent for a healthy one.
//!
//! The scrape comes from a gateway in this process (a worker forwarding
//! over in-memory ports, the control state refusing a change, the metrics
//! server answering on loopback) and, as root, from the real daemon in the
//! demo's namespaces (FLOWGATE_SKIP_NETNS=1 skips that one elsewhere).
//!
//! promtool comes from Debian's `prometheus` package (scripts/install-deps.sh
//! installs it). Where it is missing the promtool checks say so and pass,
//! except under CI (`CI` set), where they fail.

mod common;
mod netns;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use common::*;
use flowgate_api::{ApplyConfig, ClientError, ControlClient, ErrorCode, Request};
use flowgate_dataplane::control::{ControlState, MemoryDataplane};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::metrics::{
    ChangeCounters, MetricsCollector, MetricsServer, RingStats, SampleSource, WorkerMetrics,
};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort, Port};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::tcp_flags;
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const DASHBOARD: &str = "configs/grafana-flowgate.json";
const RULES: &str = "configs/prometheus-flowgate-rules.yml";
const RULE_TESTS: &str = "configs/prometheus-flowgate-rules.test.yml";

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Labels whose values are a fixed set the exposition shows in full (every
/// drop reason, every source and reason of a refused change, from the
/// start): a value matched exactly must be one of them.
const ENUMERATED_LABELS: [&str; 2] = ["reason", "source"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- The exposition ------------------------------------------------------

/// What a scrape exposes: each family's type, and the label names each
/// family's series carry.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    labels: HashMap<String, BTreeSet<String>>,
    values: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    /// Reads a text exposition (format 0.0.4).
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                e.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, labels, value) = series_line(line);
                let family = e
                    .family_of(&name)
                    .unwrap_or_else(|| panic!("no TYPE: {line}"));
                e.labels
                    .entry(family)
                    .or_default()
                    .extend(labels.keys().cloned());
                e.values.push((name, labels, value));
            }
        }
        e
    }

    /// The family a name belongs to: itself, or a histogram's or summary's
    /// `_bucket`, `_sum` or `_count` series.
    fn family_of(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let kind = self.types.get(base)?;
            (kind == "histogram" || kind == "summary").then(|| base.to_owned())
        })
    }

    /// The family of `name`, if it has at least one series in the scrape.
    fn with_series(&self, name: &str) -> Option<String> {
        self.family_of(name)
            .filter(|family| self.labels.contains_key(family))
    }

    /// The values `label` takes in the series of `family`.
    fn values_of(&self, family: &str, label: &str) -> BTreeSet<&str> {
        self.values
            .iter()
            .filter(|(n, ..)| self.family_of(n).as_deref() == Some(family))
            .filter_map(|(_, l, _)| l.get(label).map(String::as_str))
            .collect()
    }

    /// The one series `name` with `labels` (among others).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .values
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0]
    }
}

/// `name{a="x",b="y"} value`, with label escapes undone.
fn series_line(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let end = line.find(['{', ' ']).expect(line);
    let name = line[..end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            let key: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .take_while(|&c| c != '=')
                .collect();
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("{line}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            }
            labels.insert(key, value);
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &body[i + 1..];
                    break;
                }
                other => panic!("{other:?} after a label: {line}"),
            }
        }
    }
    let value = rest.trim().parse().unwrap_or_else(|_| panic!("{line}"));
    (name, labels, value)
}

/// `GET /metrics` on `addr` (from the current network namespace).
fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("metrics endpoint {addr}: {e}; again");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("metrics endpoint {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: flowgate\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// A gateway in this process: one worker that forwarded a connection both
/// ways and dropped a dying frame, a control state that refused a change,
/// and the metrics server over them. Its scrape, read once.
fn in_process_scrape() -> &'static Exposition {
    static SCRAPE: OnceLock<Exposition> = OnceLock::new();
    SCRAPE.get_or_init(|| Exposition::parse(&scrape_in_process_gateway()))
}

fn scrape_in_process_gateway() -> String {
    const SEC: u64 = 1_000_000_000;
    let cfg = config(GOLDEN_RULES);
    let snapshot = Arc::new(Snapshot::build(&cfg, None));
    let mut memory = MemoryFrames::new(256, 2_048);
    let pool = memory.pool();
    let flows = FlowTable::new(1_024, FlowTimeouts::from(&cfg.flows));
    let mut worker = Worker::new(flows, pool, 2, 32);
    let mut ports = vec![
        MemoryPort::new("fg-client", 64),
        MemoryPort::new("fg-backend", 64),
    ];
    let mut kernel = CountingKernelPath::default();
    // The first poll fills the ports' fill rings.
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 0);
    let mut exchange = |port: usize, frame: &[u8], worker: &mut Worker| {
        assert!(ports[port].inject(&mut memory, frame));
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, SEC);
        let mut out = [Vec::new(), Vec::new()];
        for (p, o) in ports.iter_mut().zip(out.iter_mut()) {
            p.take_transmitted(&memory, o);
        }
        out.map(|o| o.len())
    };
    let client = sa("198.18.0.2:40000");
    let syn = FrameBuilder::tcp(client, sa("198.18.100.10:80"), tcp_flags::SYN);
    assert_eq!(exchange(0, &from_client(syn).build(), &mut worker), [0, 1]);
    let reply = FrameBuilder::tcp(
        sa("198.18.1.11:8080"),
        client,
        tcp_flags::SYN | tcp_flags::ACK,
    )
    .macs(BACKEND1_MAC, GW_BACKEND_MAC);
    assert_eq!(exchange(1, &reply.build(), &mut worker), [1, 0]);
    let dying = FrameBuilder::tcp(client, sa("198.18.100.10:80"), tcp_flags::ACK);
    assert_eq!(
        exchange(0, &from_client(dying).ttl(1).build(), &mut worker),
        [0, 0]
    );
    let rings: Vec<RingStats> = ports
        .iter()
        .map(|p| RingStats {
            worker: 0,
            interface: p.name().to_owned(),
            queue: 0,
            rx_ring_full: p.rx_ring_full(),
            ..RingStats::default()
        })
        .collect();

    // The control side refuses a change: counted, and read by the scrape.
    let changes = Arc::new(ChangeCounters::default());
    let dataplane = Arc::new(MemoryDataplane::with_config(&cfg));
    let mut state = ControlState::new(cfg.clone(), "gw.toml", dataplane)
        .with_change_counters(Arc::clone(&changes));
    let refused = state.apply_text("[[services]]\nname = 1\n", "new.toml", false);
    assert_eq!(refused.unwrap_err().code, ErrorCode::Invalid);

    let collector = Mutex::new(
        MetricsCollector::new(vec![WorkerMetrics::of_worker(0, Some(0), &worker)])
            .with_changes(changes),
    );
    let source: SampleSource = Arc::new(move || {
        let sample = collector.lock().unwrap().collect(&snapshot, rings.clone());
        (sample, Arc::clone(&snapshot))
    });
    let server = MetricsServer::start(sa("127.0.0.1:0"), source).unwrap();
    scrape(server.local_addr().unwrap())
}

// ---- PromQL: the metric selectors of an expression ---------------------

/// One token of a PromQL expression (or a Grafana query, whose `$`
/// variables lex as punctuation and names).
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Op(String),
    Open(char),
    Close(char),
    Other,
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let run = |i: &mut usize, accept: &dyn Fn(char) -> bool| -> String {
        let start = *i;
        while chars.get(*i).is_some_and(|&c| accept(c)) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            '#' => {
                run(&mut i, &|c| c != '\n');
            }
            '"' | '\'' | '`' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(format!("unterminated string in {expr:?}"));
                    };
                    i += 1;
                    if d == c {
                        break;
                    }
                    if d == '\\' && c != '`' {
                        match chars.get(i) {
                            Some(&e) => s.push(e),
                            None => return Err(format!("dangling escape in {expr:?}")),
                        }
                        i += 1;
                        continue;
                    }
                    s.push(d);
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let word = run(&mut i, &|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == ':'
                });
                out.push(Tok::Ident(word));
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration.
                run(&mut i, &|c| c.is_ascii_alphanumeric() || c == '.');
                out.push(Tok::Other);
            }
            '(' | '{' | '[' => {
                out.push(Tok::Open(c));
                i += 1;
            }
            ')' | '}' | ']' => {
                out.push(Tok::Close(c));
                i += 1;
            }
            '=' | '!' | '~' | '<' | '>' => {
                let op = run(&mut i, &|c| matches!(c, '=' | '!' | '~' | '<' | '>'));
                out.push(Tok::Op(op));
            }
            _ => {
                out.push(Tok::Other);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Words that are PromQL syntax, not metric names.
const KEYWORDS: [&str; 15] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// Keywords followed by a list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Functions whose argument may (and for a counter, must) be a counter's
/// range.
const RATES: [&str; 3] = ["rate", "irate", "increase"];

/// A metric selector: its name, its label matchers (label, operator,
/// value), the function whose call directly holds it, and whether a range
/// follows it.
#[derive(Clone, Debug, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
    enclosing: Option<String>,
    ranged: bool,
}

/// What an expression reads: its selectors, and the label names of its
/// `by`, `without`, `on`, `ignoring` and `group_*` lists.
#[derive(Debug, Default)]
struct Reads {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

fn reads(expr: &str) -> Result<Reads, String> {
    let toks = lex(expr)?;
    let mut out = Reads::default();
    // Open parentheses, each with the function it calls (None: grouping).
    let mut calls: Vec<Option<String>> = Vec::new();
    // An aggregation whose `by (…)` or `without (…)` comes before its `(`.
    let mut pending: Option<String> = None;
    let mut i = 0;
    while let Some(tok) = toks.get(i) {
        let next = toks.get(i + 1);
        match tok {
            Tok::Ident(word) if GROUPING.contains(&word.as_str()) => {
                i += 1;
                if next != Some(&Tok::Open('(')) {
                    continue; // `group_left` without labels
                }
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Ident(label)) => out.grouping.push(label.clone()),
                        Some(Tok::Other) => {} // the commas
                        Some(Tok::Close(')')) => break,
                        t => return Err(format!("{t:?} in a label list of {expr:?}")),
                    }
                    i += 1;
                }
                i += 1;
            }
            Tok::Ident(function) if next == Some(&Tok::Open('(')) => {
                calls.push(Some(function.clone()));
                i += 2;
            }
            Tok::Ident(aggregation) if matches!(next, Some(Tok::Ident(w)) if w == "by" || w == "without") =>
            {
                pending = Some(aggregation.clone());
                i += 1;
            }
            Tok::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Tok::Ident(name) => {
                i += 1;
                let mut matchers = Vec::new();
                if toks.get(i) == Some(&Tok::Open('{')) {
                    i += 1;
                    loop {
                        match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                            (Some(Tok::Close('}')), ..) => break,
                            (Some(Tok::Other), ..) => i += 1,
                            (Some(Tok::Ident(l)), Some(Tok::Op(op)), Some(Tok::Str(v))) => {
                                matchers.push((l.clone(), op.clone(), v.clone()));
                                i += 3;
                            }
                            t => return Err(format!("bad label matcher {t:?} in {expr:?}")),
                        }
                    }
                    i += 1;
                }
                if matchers.iter().any(|(l, ..)| l == "__name__") {
                    return Err(format!("a metric named by __name__ in {expr:?}"));
                }
                out.selectors.push(Selector {
                    name: name.clone(),
                    matchers,
                    enclosing: calls.last().cloned().flatten(),
                    ranged: toks.get(i) == Some(&Tok::Open('[')),
                });
            }
            Tok::Open('{') => return Err(format!("a selector without a name in {expr:?}")),
            Tok::Open('(') => {
                calls.push(pending.take());
                i += 1;
            }
            Tok::Open('[') => {
                // A range or subquery: durations and Grafana's `$__` variables.
                while toks.get(i).is_some_and(|t| *t != Tok::Close(']')) {
                    i += 1;
                }
                i += 1;
            }
            Tok::Close(')') => {
                calls.pop();
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// Every problem of `expr` against the scrape: names it does not have,
/// labels its series do not carry, counters read without a rate, gauges
/// read through one.
fn check_expr(expr: &str, scrape: &Exposition) -> Vec<String> {
    let reads = match reads(expr) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let mut known_labels: BTreeSet<String> = TARGET_LABELS.map(str::to_owned).into();
    let mut named = 0;
    for s in &reads.selectors {
        if s.name == "up" {
            named += 1;
        } else if !s.name.starts_with("flowgate") {
            problems.push(format!("{}: not a flowgate metric, in {expr:?}", s.name));
            continue;
        }
        let labels = match scrape.with_series(&s.name) {
            Some(family) => {
                let kind = &scrape.types[&family];
                let through_rate = s.enclosing.as_deref().is_some_and(|f| RATES.contains(&f));
                if kind == "counter" && !(through_rate && s.ranged) {
                    problems.push(format!("counter {} read without a rate: {expr:?}", s.name));
                }
                if kind == "gauge" && through_rate {
                    problems.push(format!("gauge {} read through a rate: {expr:?}", s.name));
                }
                named += 1;
                scrape.labels[&family].clone()
            }
            None if s.name == "up" => BTreeSet::new(),
            None => {
                problems.push(format!("{}: no such metric in the scrape", s.name));
                continue;
            }
        };
        for (label, op, value) in &s.matchers {
            if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!("{}: has no label {label:?}: {expr:?}", s.name));
            }
            problems.extend(check_value(scrape, &s.name, label, op, value));
        }
        known_labels.extend(labels);
    }
    for label in &reads.grouping {
        if !known_labels.contains(label) {
            problems.push(format!("no metric of {expr:?} has the label {label:?}"));
        }
    }
    if named == 0 {
        problems.push(format!("reads no metric: {expr:?}"));
    }
    problems
}

/// An exact match on an enumerated label must name one of its values.
fn check_value(
    scrape: &Exposition,
    name: &str,
    label: &str,
    op: &str,
    value: &str,
) -> Option<String> {
    let family = scrape.family_of(name)?;
    let exact = op == "=" || op == "!=";
    let values = scrape.values_of(&family, label);
    (exact && ENUMERATED_LABELS.contains(&label) && !values.contains(value))
        .then(|| format!("{name}: {label} is never {value:?} (it is one of {values:?})"))
}

/// Names in prose (titles, descriptions, annotations): every
/// `flowgate_…` word must be a metric of the scrape.
fn check_prose(text: &str, scrape: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("flowgate_") {
        let start = i + at;
        let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut end = start;
        while end < bytes.len() && word_char(bytes[end]) {
            end += 1;
        }
        let preceded = start > 0 && word_char(bytes[start - 1]);
        let word = &text[start..end];
        if !preceded && scrape.with_series(word).is_none() {
            problems.push(format!("{word}: no such metric, in {text:?}"));
        }
        i = end;
    }
    problems
}

// ---- The files ---------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(p) = todo.pop() {
        if let Some(nested) = p["panels"].as_array() {
            todo.extend(nested);
        }
        out.push(p);
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets, annotation
/// queries and variable queries, with where each comes from.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target's expr");
            out.push((format!("panel {} {}", p["id"], p["title"]), expr.to_owned()));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {}", a["name"]), expr.to_owned()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if v["type"] == "query" {
            let query = v["query"]["query"].as_str().expect("a variable's query");
            // `label_values(SELECTOR, LABEL)`: the selector is PromQL.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable {}: {query}", v["name"]));
            out.push((format!("variable {}", v["name"]), inner.0.to_owned()));
        }
    }
    out
}

/// Every string of a JSON value that is not a query.
fn json_prose<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) if !["expr", "query", "definition"].contains(&key) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| json_prose(x, key, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| json_prose(x, k, out)),
        _ => {}
    }
}

/// The alerting rules: (name, the rule).
fn alerts(rules: &Yaml) -> Vec<(String, &Yaml)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            out.push((name.to_owned(), rule));
        }
    }
    out
}

/// The promtool binary, or None where it truly is not installed (and not
/// under CI, where it must be).
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed; CI needs it: scripts/install-deps.sh installs \
             Debian's prometheus package, which has it"
        );
        eprintln!(
            "SKIPPED: promtool is not installed (Debian's prometheus package; \
             scripts/install-deps.sh installs it)"
        );
    }
    found
}

fn run_promtool(promtool: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo("."))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

// ---- The tests -----------------------------------------------------------

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

/// What both files read, checked against `scrape`.
fn check_files_against(scrape: &Exposition) {
    let d = dashboard();
    let mut problems = Vec::new();
    for (at, expr) in dashboard_exprs(&d) {
        problems.extend(
            check_expr(&expr, scrape)
                .into_iter()
                .map(|p| format!("{at}: {p}")),
        );
    }
    let mut prose = Vec::new();
    json_prose(&d, "", &mut prose);
    for text in prose {
        problems.extend(check_prose(text, scrape));
    }
    let rules = yaml(RULES);
    for (name, rule) in alerts(&rules) {
        let expr = rule["expr"].as_str().expect("an expr");
        problems.extend(
            check_expr(expr, scrape)
                .into_iter()
                .map(|p| format!("{name}: {p}")),
        );
        for (_, text) in rule["annotations"].as_hash().expect("annotations") {
            problems.extend(check_prose(text.as_str().expect("text"), scrape));
        }
    }
    assert_no_problems("the dashboard and the rules against the scrape", problems);
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_read_is_in_a_real_scrape() {
    let scrape = in_process_scrape();
    // The scrape is what the gateway did.
    assert_eq!(scrape.value("flowgate_forwarded_packets_total", &[]), 2.0);
    let ttl = [("reason", "ttl_expired")];
    assert_eq!(scrape.value("flowgate_dropped_packets_total", &ttl), 1.0);
    let refused = [("source", "apply"), ("reason", "invalid")];
    assert_eq!(
        scrape.value("flowgate_config_changes_refused_total", &refused),
        1.0
    );
    assert_eq!(scrape.value("flowgate_polls_total", &[]), 4.0);
    check_files_against(scrape);
}

#[test]
fn the_rule_tests_feed_series_that_the_scrape_has_with_its_labels() {
    let scrape = in_process_scrape();
    let tests = yaml(RULE_TESTS);
    let mut problems = Vec::new();
    let mut fed = BTreeSet::new();
    for test in tests["tests"].as_vec().expect("tests") {
        for input in test["input_series"].as_vec().expect("input_series") {
            let series = input["series"].as_str().expect("series");
            let reads = reads(series).unwrap_or_else(|e| panic!("{e}"));
            let [s] = reads.selectors.as_slice() else {
                panic!("one series: {series}");
            };
            let Some(family) = scrape.with_series(&s.name) else {
                if s.name != "up" {
                    problems.push(format!("{series}: no such metric"));
                }
                continue;
            };
            let given: BTreeSet<String> = s
                .matchers
                .iter()
                .map(|(l, ..)| l.clone())
                .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
                .collect();
            if given != scrape.labels[&family] {
                problems.push(format!(
                    "{series}: labels {given:?}, but the scrape's are {:?}",
                    scrape.labels[&family]
                ));
            }
            for (label, op, value) in &s.matchers {
                problems.extend(check_value(scrape, &s.name, label, op, value));
            }
            fed.insert(family);
        }
    }
    assert_no_problems("the rule tests' input series", problems);
    // Every metric an alert reads is fed to some test.
    for (name, rule) in alerts(&yaml(RULES)) {
        for s in reads(rule["expr"].as_str().unwrap()).unwrap().selectors {
            if s.name != "up" {
                assert!(fed.contains(&s.name), "{name}: no test feeds {}", s.name);
            }
        }
    }
}

#[test]
fn the_dashboard_is_well_formed_for_grafana() {
    let d = dashboard();
    assert_eq!(d["title"], "flowgate");
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "Grafana 9.1 or later's"
    );
    let vars = d["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    assert_eq!(var("instance")["datasource"]["uid"], "${datasource}");
    assert_eq!(var("instance")["multi"], true);

    let all = panels(&d);
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in &all {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without an id: {p}"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = p["title"].as_str().expect("a title");
        assert!(!title.is_empty(), "panel {id} has no title");
        let g = &p["gridPos"];
        let [h, w, x, _y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("panel {id}: gridPos.{k}"))
        });
        assert!(h > 0 && w > 0 && x + w <= 24, "panel {id}: {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        assert!(!unit.is_empty(), "panel {id} ({title}) has no unit");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} queries nothing");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "panel {id}"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
            let expr = t["expr"].as_str().unwrap();
            // Every selector is narrowed to the chosen gateways.
            for s in reads(expr).unwrap().selectors {
                let narrowed = s
                    .matchers
                    .iter()
                    .any(|(l, op, v)| l == "instance" && op == "=~" && v == "$instance");
                assert!(narrowed, "panel {id}: {} ignores $instance", s.name);
            }
            // Rates of packets and bytes in their units.
            if expr.contains("rate(") && expr.contains("_bytes_total") {
                assert!(
                    unit == "bps" && expr.starts_with("8 * "),
                    "panel {id}: bits/s"
                );
            } else if expr.contains("rate(") && expr.contains("_packets_total") {
                assert!(unit == "pps" || unit == "percentunit", "panel {id}: {unit}");
            }
            queries += 1;
        }
    }
    assert!(queries >= 30, "{queries} queries");
    let titles: Vec<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Packets per service",
        "Packets per backend",
        "Drops by reason",
        "New connections per service",
        "Connection-table fill",
        "Snapshot generation",
        "Refused changes",
        "Idle share per worker",
        "Receive ring full",
        "Fill ring empty",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}");
    }
}

#[test]
fn every_alert_says_what_to_do_and_its_tests_show_it_firing_and_silent() {
    let rules = yaml(RULES);
    let tests = yaml(RULE_TESTS);
    let mut cases: HashMap<String, (usize, usize)> = HashMap::new();
    for test in tests["tests"].as_vec().expect("tests") {
        for case in test["alert_rule_test"].as_vec().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_vec().map_or(0, Vec::len);
            let (firing, silent) = cases.entry(name).or_default();
            if expected > 0 {
                *firing += 1;
            } else {
                *silent += 1;
            }
        }
    }
    let all = alerts(&rules);
    assert!(all.len() >= 8, "{} alerts", all.len());
    for (name, rule) in &all {
        assert!(name.starts_with("Flowgate"), "{name}");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for field in ["summary", "description"] {
            let text = rule["annotations"][field].as_str().unwrap_or("");
            assert!(text.len() > 20, "{name}: no {field}");
        }
        let (firing, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(firing > 0, "{name}: no test shows it firing");
        assert!(silent > 0, "{name}: no test shows it silent");
    }
    // No test of an alert that does not exist.
    for name in cases.keys() {
        assert!(
            all.iter().any(|(n, _)| n == name),
            "a test of unknown {name}"
        );
    }
    let wanted = [
        "FlowgateTargetDown",
        "FlowgateConnectionTableNearFull",
        "FlowgateReloadRefused",
        "FlowgateApplyRefused",
        "FlowgateDropsRising",
        "FlowgateWorkerStalled",
        "FlowgateWorkerBehindRules",
        "FlowgateReceiveRingFull",
    ];
    for w in wanted {
        assert!(all.iter().any(|(n, _)| n == w), "no alert {w}");
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_tests_pass() {
    let Some(promtool) = promtool() else {
        return;
    };
    let checked = run_promtool(&promtool, &["check", "rules", RULES]);
    let count = alerts(&yaml(RULES)).len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let tested = run_promtool(&promtool, &["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn promtool_accepts_every_dashboard_query() {
    let Some(promtool) = promtool() else {
        return;
    };
    // Each query as a recording rule, Grafana's variables given values.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let exprs = dashboard_exprs(&dashboard());
    for (n, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$service", ".*");
        assert!(!expr.contains('$'), "a variable left in {expr}");
        let quoted = serde_json::to_string(&expr).unwrap();
        file += &format!("      - record: dashboard:query_{n}\n        expr: {quoted}\n");
    }
    let dir = std::env::temp_dir().join(format!("fg-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard-queries.yml");
    std::fs::write(&path, file).unwrap();
    let result = std::panic::catch_unwind(|| {
        run_promtool(&promtool, &["check", "rules", path.to_str().unwrap()])
    });
    std::fs::remove_dir_all(&dir).unwrap();
    let checked = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}

/// The real daemon's scrape has every name too, and counts what the new
/// metrics count: a refused change, polls that move, workers on the
/// published generation.
#[test]
fn the_running_daemon_has_every_metric_the_dashboard_and_the_alerts_read() {
    if !netns::privileged() {
        return;
    }
    let _one = netns::one_gateway_at_a_time();
    let topo = netns::Topology::new(2);
    let config = topo.config(&[0, 1]).replacen(
        "[daemon]\n",
        "[daemon]\nmetrics_address = \"127.0.0.1:9464\"\n",
        1,
    );
    let mut gw = topo.start_gateway(&config);
    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    let restart = config.replacen("udp_timeout = 60", "udp_timeout = 61", 1);
    assert_ne!(restart, config);
    let refused = client.call(Request::Apply(ApplyConfig {
        config: restart,
        origin: Some("new.toml".into()),
        dry_run: false,
    }));
    match refused {
        Err(ClientError::Rejected(e)) => {
            assert_eq!(e.code, ErrorCode::RestartRequired, "{e:?}")
        }
        other => panic!("not refused: {other:?}"),
    }
    let scrape_gw = || {
        let text = topo.gateway.enter(|| scrape(sa("127.0.0.1:9464"))).unwrap();
        Exposition::parse(&text)
    };
    let first = scrape_gw();
    std::thread::sleep(Duration::from_millis(200));
    let second = scrape_gw();
    gw.assert_running();

    let refused = [("source", "apply"), ("reason", "restart_required")];
    assert_eq!(
        second.value("flowgate_config_changes_refused_total", &refused),
        1.0
    );
    let published = second.value("flowgate_snapshot_generation", &[]);
    for worker in ["0", "1"] {
        let w = [("worker", worker)];
        assert!(
            second.value("flowgate_polls_total", &w) > first.value("flowgate_polls_total", &w),
            "worker {worker} polls"
        );
        assert_eq!(
            second.value("flowgate_worker_snapshot_generation", &w),
            published
        );
    }
    check_files_against(&second);
    gw.stop();
}

// ---- The scanner's own tests -------------------------------------------

#[test]
fn the_scanner_finds_names_labels_and_rates_and_nothing_in_strings() {
    let r = reads(
        r#"sum by (instance, reason) (rate(flowgate_dropped_packets_total{instance=~"$instance", reason!="flowgate_x_total"}[$__rate_interval])) > on (job) group_left 0.01 * max(flowgate_connections)"#,
    )
    .unwrap();
    let names: Vec<&str> = r.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["flowgate_dropped_packets_total", "flowgate_connections"]
    );
    let drops = &r.selectors[0];
    assert_eq!(
        (drops.enclosing.as_deref(), drops.ranged),
        (Some("rate"), true)
    );
    assert_eq!(
        drops.matchers[1],
        ("reason".into(), "!=".into(), "flowgate_x_total".into())
    );
    assert_eq!(r.selectors[1].enclosing.as_deref(), Some("max"));
    let aggregated = reads("sum without (worker) (flowgate_g) / count(flowgate_g)").unwrap();
    let enclosing: Vec<_> = aggregated
        .selectors
        .iter()
        .map(|s| s.enclosing.as_deref())
        .collect();
    assert_eq!(enclosing, [Some("sum"), Some("count")]);
    assert_eq!(r.grouping, ["instance", "reason", "job"]);
    assert!(reads(r#"{__name__=~"flowgate_.*"}"#).is_err());
    assert!(reads(r#"x{__name__="flowgate_polls_total"}"#).is_err());
    assert!(reads(r#"rate(x{a="b)[5m])"#).is_err());
}

#[test]
fn the_checks_catch_what_they_must() {
    let scrape = Exposition::parse(
        "# TYPE flowgate_a_total counter\nflowgate_a_total{worker=\"0\"} 1\n\
         # TYPE flowgate_g gauge\nflowgate_g{worker=\"0\"} 2\n\
         # TYPE flowgate_h histogram\nflowgate_h_bucket{le=\"+Inf\"} 1\nflowgate_h_sum 1\nflowgate_h_count 1\n\
         # TYPE flowgate_empty gauge\n",
    );
    let ok = |e: &str| assert_eq!(check_expr(e, &scrape), Vec::<String>::new(), "{e}");
    let bad = |e: &str, why: &str| {
        let problems = check_expr(e, &scrape);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{e}: {problems:?}"
        );
    };
    ok("sum by (worker) (rate(flowgate_a_total[5m]))");
    ok("flowgate_g{worker=\"0\"} / on (instance) group_left up");
    ok("histogram_quantile(0.9, rate(flowgate_h_bucket[5m]))");
    ok("rate(flowgate_h_sum[5m]) / rate(flowgate_h_count[5m])");
    bad("flowgate_b", "no such metric");
    bad("flowgate_empty", "no such metric");
    bad("flowgate_a_total", "without a rate");
    bad("rate(flowgate_g[5m])", "through a rate");
    bad("flowgate_g{service=\"web\"}", "no label \"service\"");
    bad("sum by (service) (flowgate_g)", "the label \"service\"");
    let reasons = Exposition::parse(
        "# TYPE flowgate_d_total counter\nflowgate_d_total{reason=\"no_backend\"} 1\n",
    );
    let d = |e: &str| check_expr(e, &reasons);
    assert!(d(r#"rate(flowgate_d_total{reason="no_backend"}[5m])"#).is_empty());
    assert!(d(r#"rate(flowgate_d_total{reason=~"no_.*"}[5m])"#).is_empty());
    assert!(d(r#"rate(flowgate_d_total{reason!="no_backnd"}[5m])"#)[0].contains("never"));
    bad("node_load1", "not a flowgate metric");
    bad("vector(1)", "reads no metric");
    assert!(
        check_prose("see flowgate_g and flowgate_gone here", &scrape)
            .iter()
            .any(|p| p.starts_with("flowgate_gone"))
    );
    assert!(check_prose("my_flowgate_x is not a name", &scrape).is_empty());
}
