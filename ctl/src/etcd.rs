//! `flowgatectl --etcd ENDPOINTS`: the operator's verbs on a fleet's rules
//! in etcd rather than on one gateway's socket.
//!
//! A change is made as a gateway would make it, by the same code: the
//! rules are read from etcd at one revision and put together as the
//! gateways put them together; the verb is applied by the control API's
//! own edit path (`service add`, `backend edit`, ...) or the config file
//! is read by the gateways' own reader (`apply -f`), so a mistake gets the
//! very words it gets from a gateway's socket; the difference is the
//! control API's diff. Then the keys that change are checked as a gateway
//! checks a revision (each named by its key) and written in one
//! compare-and-swap transaction: if anyone wrote under the rules prefix
//! after the read, nothing is written and the run fails with `conflict`,
//! naming both revisions.

use std::io::Write;

use flowgate_api::{ApiError, ChangeReport, Edit, ErrorCode, Request};
use flowgate_dataplane::control::{apply_edits, diff};
use flowgate_dataplane::fleet::layout::{KeyLayout, RuleKey};
use flowgate_dataplane::fleet::mirror::{Change, Mirror, Outcome};
use flowgate_dataplane::fleet::store::{FleetStore, RulesRead, StoreError, Write as KeyWrite};
use flowgate_dataplane::fleet::value::{self, ClassEntry, Part, PathEntry};
use flowgate_dataplane::route::Prefix;
use flowgate_dataplane::rules::{self, Config};
use serde::Serialize;

use crate::cli::{Action, Format};
use crate::failure::Failure;
use crate::show;

/// Where the fleet's etcd is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTarget {
    /// Client URLs of the cluster's members.
    pub endpoints: Vec<String>,
    /// The fleet's key prefix (`[etcd] prefix` of the gateways' config).
    pub prefix: String,
}

/// Runs `action` against the fleet's etcd.
pub fn run(
    target: &EtcdTarget,
    action: Action,
    file_text: Option<(String, String)>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let layout = KeyLayout::new(&target.prefix)
        .map_err(|e| Failure::usage(format!("--etcd-prefix: {e}")))?;
    let proposal = match action {
        Action::Change(request) => Proposal::Edit(edit_of(request)?),
        Action::Apply { dry_run, .. } => {
            let (text, origin) =
                file_text.ok_or_else(|| Failure::protocol("the config file was not read"))?;
            Proposal::File {
                text,
                origin,
                dry_run,
            }
        }
        Action::Fleet => {
            let mut store = connect(target, layout)?;
            let rows = store.fleet().map_err(store_failure)?;
            return write_fleet(&rows, format, out);
        }
        _ => {
            return Err(Failure::usage(
                "with --etcd, flowgatectl changes the fleet's rules (service add|edit|del, \
                 backend add|edit|drain|del, apply -f) and lists the fleet (fleet); ask a \
                 gateway's socket for everything else",
            ))
        }
    };
    let mut store = connect(target, layout.clone())?;
    let read = store.read().map_err(store_failure)?;
    let current = rules_of(&read, &layout);
    let (next, dry_run) = match proposal {
        Proposal::Edit(edit) => (
            apply_edits(&current, std::slice::from_ref(&edit)).map_err(Failure::refused)?,
            false,
        ),
        Proposal::File {
            text,
            origin,
            dry_run,
        } => {
            let file = rules::load_str(&text, &origin).map_err(|e| {
                Failure::refused(ApiError::with_problems(
                    ErrorCode::Invalid,
                    e.problems().iter().map(ToString::to_string).collect(),
                ))
            })?;
            // The fleet's rules are the file's [gateway], services and
            // client classes; the other sections belong to each
            // gateway's own file.
            let mut next = current.clone();
            next.gateway = file.gateway;
            next.services = file.services;
            next.routing.classes = file.routing.classes;
            (next, dry_run)
        }
    };
    let writes = writes(&current, &next, &layout)?;
    let problems = FleetStore::check(&read, Config::default(), &layout, &writes);
    if !problems.is_empty() {
        return Err(Failure::refused(ApiError::with_problems(
            ErrorCode::Invalid,
            problems,
        )));
    }
    let mut report = ChangeReport {
        generation: 0,
        applied: false,
        dry_run,
        diff: diff(&current, &next),
        warnings: Vec::new(),
    };
    let mut revision = read.revision;
    if !dry_run && !writes.is_empty() {
        revision = store.commit(&read, &writes).map_err(store_failure)?;
        report.applied = true;
    }
    write_change(&report, revision, format, out)
}

/// What a run changes.
enum Proposal {
    /// One edit, as the control API makes it.
    Edit(Edit),
    /// A config file's rules (text and where it came from).
    File {
        text: String,
        origin: String,
        dry_run: bool,
    },
}

/// The control API's edit a change request makes.
fn edit_of(request: Request) -> Result<Edit, Failure> {
    Ok(match request {
        Request::ServiceAdd(x) => Edit::ServiceAdd(x),
        Request::ServiceEdit(x) => Edit::ServiceEdit(x),
        Request::ServiceDel(x) => Edit::ServiceDel(x),
        Request::BackendAdd(x) => Edit::BackendAdd(x),
        Request::BackendEdit(x) => Edit::BackendEdit(x),
        Request::BackendDel(x) => Edit::BackendDel(x),
        Request::BackendDrain(x) => Edit::BackendDrain(x),
        _ => {
            return Err(Failure::usage(
                "with --etcd, flowgatectl writes services and backends (and, with apply -f, \
                 the services' distribution paths and the client classes); a single path or \
                 class is a key of its own, written with etcdctl or apply -f \
                 (docs/operations.md, Running a fleet)",
            ))
        }
    })
}

fn connect(target: &EtcdTarget, layout: KeyLayout) -> Result<FleetStore, Failure> {
    FleetStore::connect(&target.endpoints, layout).map_err(|e| {
        Failure::unreachable(format!(
            "cannot reach etcd at {}: {e}",
            target.endpoints.join(",")
        ))
    })
}

/// A failure of the store as flowgatectl reports it.
fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Invalid(problems) => {
            Failure::refused(ApiError::with_problems(ErrorCode::Invalid, problems))
        }
        StoreError::Lost { .. } => Failure::conflict(e.to_string()),
        StoreError::Etcd(_) => Failure::unreachable(e.to_string()),
    }
}

/// The rules in `read` as the gateways put them together (with no file
/// of their own): keys a gateway would hold are left out, as it runs
/// without them.
fn rules_of(read: &RulesRead, layout: &KeyLayout) -> Config {
    let mut mirror = Mirror::new(layout.clone(), Config::default());
    let entries = read
        .entries
        .iter()
        .map(|(key, stored)| Change {
            key: key.clone(),
            value: Some(stored.clone()),
        })
        .collect();
    match mirror.load(read.revision, entries) {
        Outcome::Applied(rules) => Config::clone(&rules.config),
        // A load holds bad keys and runs the rest: never refused whole.
        Outcome::Refused(_) => Config::default(),
    }
}

/// The keys that make `next` of `current`: each service added or changed
/// put, each removed deleted with its distribution paths, each path added
/// or changed put and each removed deleted (paths are keys of their own),
/// the gateway settings if they changed, and each client class added or
/// changed put and each removed deleted. A service whose value would
/// not read back as it is (a fault in the writer) is refused rather than
/// written without what it lost.
fn writes(current: &Config, next: &Config, layout: &KeyLayout) -> Result<Vec<KeyWrite>, Failure> {
    let mut writes = Vec::new();
    if next.gateway != current.gateway {
        writes.push(KeyWrite {
            key: layout.gateway_key(),
            value: Some(value::gateway_value(&next.gateway).into_bytes()),
        });
    }
    let before: std::collections::HashMap<&str, &rules::Service> = current
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let no_paths = rules::Paths::new();
    for service in &next.services {
        let old = before.get(service.name.as_str()).copied();
        if old.map(without_paths) != Some(without_paths(service)) {
            // A table size the gateway settings give is left to them.
            let sets_table_size = service.maglev_table_size != next.gateway.maglev_table_size;
            let written = value::service_value(service, sets_table_size).into_bytes();
            if !carries(service, &written) {
                return Err(Failure::refused(ApiError::new(
                    ErrorCode::Invalid,
                    format!(
                        "service {:?} does not read back from etcd's value format {} as it \
                         is: nothing was written; change its key ({}) with etcdctl",
                        service.name,
                        value::VALUE_FORMAT,
                        layout.service_key(&service.name)
                    ),
                )));
            }
            writes.push(KeyWrite {
                key: layout.service_key(&service.name),
                value: Some(written),
            });
        }
        let old_paths = old.map_or(&no_paths, |s| &s.routing.paths);
        path_writes(
            &service.name,
            old_paths,
            &service.routing.paths,
            layout,
            &mut writes,
        );
    }
    class_writes(
        &current.routing.classes,
        &next.routing.classes,
        layout,
        &mut writes,
    );
    for service in &current.services {
        if next.service(&service.name).is_none() {
            writes.push(KeyWrite {
                key: layout.service_key(&service.name),
                value: None,
            });
            path_writes(
                &service.name,
                &service.routing.paths,
                &no_paths,
                layout,
                &mut writes,
            );
        }
    }
    Ok(writes)
}

/// `service` without its distribution paths, which are keys of their own.
fn without_paths(service: &rules::Service) -> rules::Service {
    let mut service = service.clone();
    service.routing.paths.clear();
    service
}

/// The path keys of service `name` that make `new` of `old`.
fn path_writes(
    name: &str,
    old: &rules::Paths,
    new: &rules::Paths,
    layout: &KeyLayout,
    writes: &mut Vec<KeyWrite>,
) {
    let key = |client: rules::ClientPrefix| {
        Prefix::new(client.address, client.len)
            .ok()
            .map(|prefix| (prefix, layout.path_key(name, &prefix)))
    };
    for path in new {
        if old.get(&path.client) == Some(path) {
            continue;
        }
        if let Some((prefix, key)) = key(path.client) {
            let entry = PathEntry {
                service: name.to_owned(),
                prefix,
                backends: path.backends.clone(),
            };
            writes.push(KeyWrite {
                key,
                value: Some(value::path_value(&entry).into_bytes()),
            });
        }
    }
    for path in old {
        if new.get(&path.client).is_none() {
            if let Some((_, key)) = key(path.client) {
                writes.push(KeyWrite { key, value: None });
            }
        }
    }
}

/// The class keys that make `new` of `old`, by prefix: one a class's
/// prefix keys (its order in a file is no change; the longest match does
/// not depend on it).
fn class_writes(
    old: &rules::SharedList<rules::ClientClass>,
    new: &rules::SharedList<rules::ClientClass>,
    layout: &KeyLayout,
    writes: &mut Vec<KeyWrite>,
) {
    let prefix =
        |class: &rules::ClientClass| Prefix::new(class.prefix.address, class.prefix.len).ok();
    let before: std::collections::HashMap<_, _> = old.iter().map(|c| (c.prefix, c)).collect();
    let after: std::collections::HashMap<_, _> = new.iter().map(|c| (c.prefix, c)).collect();
    for class in new {
        if before.get(&class.prefix) == Some(&class) {
            continue;
        }
        if let Some(prefix) = prefix(class) {
            let entry = ClassEntry {
                prefix,
                set: class.set.clone(),
                zone: class.zone.clone(),
            };
            writes.push(KeyWrite {
                key: layout.class_key(&prefix),
                value: Some(value::class_value(&entry).into_bytes()),
            });
        }
    }
    for class in old {
        if !after.contains_key(&class.prefix) {
            if let Some(prefix) = prefix(class) {
                writes.push(KeyWrite {
                    key: layout.class_key(&prefix),
                    value: None,
                });
            }
        }
    }
}

/// Whether `written`, read back as a gateway reads it, is `service`
/// (but its paths).
fn carries(service: &rules::Service, written: &[u8]) -> bool {
    let key = RuleKey::Service(service.name.clone());
    match value::decode(&key, written) {
        Ok(Part::Service(part)) => {
            let mut read = part.service;
            // A table size left to the gateway settings reads as a
            // placeholder until the rules are put together.
            read.maglev_table_size = service.maglev_table_size;
            read == without_paths(service)
        }
        _ => false,
    }
}

/// The change as flowgatectl prints one from a gateway, with the etcd
/// revision in place of a generation.
#[derive(Serialize)]
struct EtcdChanged<'a> {
    kind: &'static str,
    #[serde(flatten)]
    report: &'a ChangeReport,
    /// The revision written at (or, for a dry run or no change, read at).
    revision: i64,
}

fn write_change(
    report: &ChangeReport,
    revision: i64,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let text = match format {
        Format::Json => {
            let doc = EtcdChanged {
                kind: "changed",
                report,
                revision,
            };
            let mut text = serde_json::to_string(&doc)
                .map_err(|e| Failure::output(format!("cannot encode the output: {e}")))?;
            text.push('\n');
            text
        }
        Format::Text => {
            let mut text = String::new();
            for line in show::diff_lines(&report.diff) {
                text.push_str(&line);
                text.push('\n');
            }
            let n = report.diff.change_count();
            let changes = if n == 1 {
                "1 change".to_owned()
            } else {
                format!("{n} changes")
            };
            text.push_str(&if report.dry_run {
                format!("dry run: {changes} would be written; nothing changed (etcd revision {revision})\n")
            } else if report.applied {
                format!("written {changes}: etcd revision {revision}\n")
            } else {
                format!("no change (etcd revision {revision})\n")
            });
            text
        }
    };
    write_out(out, &text)
}

fn write_fleet(
    rows: &[flowgate_dataplane::fleet::status::FleetRow],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let text = match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!({ "status": r.status, "lag": r.lag, "lags": r.lags() }))
                .collect();
            format!(
                "{}\n",
                serde_json::json!({ "kind": "fleet", "gateways": rows })
            )
        }
        Format::Text => show::fleet(rows),
    };
    write_out(out, &text)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::output(format!("cannot write the output: {e}")))
}
