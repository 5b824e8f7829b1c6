//! `explain`: where a new flow from a client to a service goes, and why,
//! stage by stage, from the rules that run (or, offline, from a config
//! file).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `explain`: a flow to explain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// The client: `ADDR` or `ADDR:PORT` (`[ADDR]:PORT` for IPv6). Without
    /// a port, port 0 stands in: the scheduler's pick and the canary draw
    /// depend on the whole 5-tuple (not `sh`'s pick, by the address alone).
    pub from: String,
    /// The service's `VIP:PORT`.
    pub to: String,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `explain`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainReply {
    /// The snapshot generation the decision was read from (0 offline).
    pub generation: u64,
    /// The service.
    pub service: String,
    /// Its scheduler.
    pub scheduler: String,
    /// The client, as the decision saw it (`ADDR:PORT`).
    pub client: String,
    /// The client's class: the longest client-class prefix holding it;
    /// absent when none does (no SET, no zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ExplainClass>,
    /// The client's distribution path, if it has one (only where the
    /// paths are at hand: `flowgate explain --config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<ExplainPath>,
    /// Whether the service routes by client (a backend has a SET or zone,
    /// or it has a canary); if not, its scheduler alone decides.
    pub routed: bool,
    /// The SET stage: `none` (no SET applies), `own`, `area`, `unset`
    /// (backends of no SET) or `closed` (nothing the client may use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The canary stage, for a service with a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<ExplainCanary>,
    /// The steps tried, in order, up to the one that placed the flow.
    #[serde(default)]
    pub steps: Vec<ExplainStep>,
    /// `placed`, `closed` (a SET client with nothing alive: dropped),
    /// `fallback` (nothing alive, the service's `when_all_down` decided),
    /// or `none` (no backend at all).
    pub outcome: String,
    /// The backend the flow goes to, `ADDR:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// What to bear in mind, one line each (e.g. that `wrr` takes the next
    /// of a worker's cycle outside a routed subset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A client class, as `explain` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainClass {
    /// The prefix that matched.
    pub prefix: String,
    /// Its SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Its zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The distribution path stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainPath {
    /// The backends the path names, by name.
    pub backends: Vec<String>,
    /// The backend it gave, `ADDR:PORT`; absent when none of them takes
    /// new flows (down, draining, gone) and the flow falls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
}

/// The canary stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainCanary {
    /// The canary group.
    pub group: String,
    /// The share, in basis points.
    pub share_bp: u32,
    /// The flow's draw, 0..10000: drawn when below the share.
    pub draw: u32,
    /// `client` (its prefix always goes), `share` (drawn), or `no`.
    pub drawn: String,
}

/// One step of a plan, tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainStep {
    /// `stable` or `canary`.
    pub side: String,
    /// `all` (no zone preference), `local` (the client's zone), `next:ZONE`
    /// (the priority list's), `no_zone`, or `any`.
    pub zone: String,
    /// Its members, `ADDR:PORT`.
    pub members: Vec<String>,
    /// The scheduler's pick in it; absent when none of it took new flows
    /// at the last rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<String>,
    /// The backend the step gave (the pick, or the skip rule's when the
    /// pick is down); absent when nothing in it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
}

impl fmt::Display for ExplainReply {
    /// The decision, stage by stage, one line each: what `flowgatectl
    /// explain` and `flowgate explain` print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self;
        writeln!(
            f,
            "service   {} ({}), generation {}",
            e.service, e.scheduler, e.generation
        )?;
        writeln!(f, "client    {}", e.client)?;
        let class = match &e.class {
            Some(c) => format!(
                "{} (set {}, zone {})",
                c.prefix,
                c.set.as_deref().unwrap_or("-"),
                c.zone.as_deref().unwrap_or("-")
            ),
            None => "none (no SET, no zone)".into(),
        };
        writeln!(f, "class     {class}")?;
        if let Some(p) = &e.path {
            writeln!(
                f,
                "path      [{}] -> {}",
                p.backends.join(", "),
                p.chosen.as_deref().unwrap_or("none alive: falls back")
            )?;
        }
        if !e.routed {
            writeln!(f, "routing   none: the scheduler over every backend")?;
        }
        if let Some(set) = &e.set {
            writeln!(f, "set       {set}")?;
        }
        if let Some(c) = &e.canary {
            writeln!(
                f,
                "canary    group {}, share {} bp, draw {}: {}",
                c.group,
                c.share_bp,
                c.draw,
                match c.drawn.as_str() {
                    "client" => "to the canary (client prefix)",
                    "share" => "to the canary (drawn)",
                    _ => "not drawn",
                }
            )?;
        }
        for (i, step) in e.steps.iter().enumerate() {
            writeln!(
                f,
                "step {}    {} {}: [{}] pick {} -> {}",
                i + 1,
                step.side,
                step.zone,
                step.members.join(", "),
                step.pick.as_deref().unwrap_or("none"),
                step.chosen.as_deref().unwrap_or("none alive")
            )?;
        }
        writeln!(
            f,
            "backend   {} ({})",
            e.backend.as_deref().unwrap_or("none"),
            e.outcome
        )?;
        for note in &e.notes {
            writeln!(f, "note      {note}")?;
        }
        Ok(())
    }
}
