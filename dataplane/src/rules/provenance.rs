//! Where each part of a model came from.
//!
//! Every source of rules — a config file, the control API's edits, and
//! later etcd — turns what it reads into the same [`Config`](super::Config)
//! and a [`Provenance`]: a map from model positions ([`Place`]) to the
//! [`Location`] each part came from. The one validator checks the model and
//! locates each problem through the provenance, so every source gives the
//! same message for the same fault, each at its own kind of location.

use std::fmt;

use super::place::Place;

/// A map from the places of one model to where they came from.
pub trait Provenance {
    /// Where the value at `place` came from. A field the source did not
    /// set itself (a default) is located at its item; an item the source
    /// did not record at [`Location::Unrecorded`].
    fn locate(&self, place: Place) -> Location;

    /// The text as written, when the model holds a stand-in at `place`
    /// because the value could not be read (a malformed address, a number
    /// the model's type cannot hold). The source has reported that already;
    /// the validator judges nothing that depends on a stand-in.
    fn stand_in(&self, place: Place) -> Option<&str> {
        let _ = place;
        None
    }
}

/// A provenance that records nothing: for a config built in code, every
/// place is [`Location::Unrecorded`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Unrecorded;

impl Provenance for Unrecorded {
    fn locate(&self, _place: Place) -> Location {
        Location::Unrecorded
    }
}

/// Where one part of a model came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Location {
    /// A position in a config's text: displays as `FILE:LINE:COL`.
    File {
        /// The config's origin: its path, or whatever name the caller gave.
        file: String,
        /// Line, from 1.
        line: usize,
        /// Column in characters, from 1.
        column: usize,
    },
    /// An edit of a control API request.
    Request(RequestLocation),
    /// A key in etcd at a revision: rules read from etcd
    /// (`fleet::provenance::EtcdProvenance`).
    Etcd {
        /// The key.
        key: String,
        /// The etcd revision its value was read at.
        revision: i64,
    },
    /// No record: a config built in code, or a part of the running rules
    /// that an edit left as it was.
    Unrecorded,
}

impl Location {
    /// The line, for a location in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Location::File { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The file, for a location in one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Location::File { file, .. } => Some(file),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            Location::Request(request) => request.fmt(f),
            Location::Etcd { key, revision } => {
                write!(f, "etcd key {key} at revision {revision}")
            }
            Location::Unrecorded => f.write_str("(origin not recorded)"),
        }
    }
}

/// One edit of a control API request, and the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RequestLocation {
    /// Which edit of the request, from 1.
    pub edit: usize,
    /// How many edits the request holds: 1 for a single edit, more for a
    /// batch.
    pub edits: usize,
    /// The edit's operation on the wire, e.g. `backend_add`.
    pub op: &'static str,
    /// What the edit names: a service, or a service and a backend's
    /// `address:port`.
    pub target: String,
    /// The field the edit set that is at fault, if the problem is with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl fmt::Display for RequestLocation {
    /// `request backend_add web 198.18.1.13:8080, field weight`, or in a
    /// batch `edit 3 (backend_add web 198.18.1.13:8080), field weight`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.edits > 1 {
            write!(f, "edit {} ({} {})", self.edit, self.op, self.target)?;
        } else {
            write!(f, "request {} {}", self.op, self.target)?;
        }
        match self.field {
            Some(field) => write!(f, ", field {field}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(edit: usize, edits: usize, field: Option<&'static str>) -> Location {
        Location::Request(RequestLocation {
            edit,
            edits,
            op: "backend_add",
            target: "web 198.18.1.13:8080".into(),
            field,
        })
    }

    #[test]
    fn locations_display_as_their_source_names_them() {
        let file = Location::File {
            file: "gw.toml".into(),
            line: 9,
            column: 10,
        };
        assert_eq!(file.to_string(), "gw.toml:9:10");
        assert_eq!(file.line(), Some(9));
        assert_eq!(
            request(1, 1, Some("weight")).to_string(),
            "request backend_add web 198.18.1.13:8080, field weight"
        );
        assert_eq!(
            request(3, 5, None).to_string(),
            "edit 3 (backend_add web 198.18.1.13:8080)"
        );
        assert_eq!(request(3, 5, None).line(), None);
        let etcd = Location::Etcd {
            key: "/flowgate/services/web".into(),
            revision: 42,
        };
        assert_eq!(
            etcd.to_string(),
            "etcd key /flowgate/services/web at revision 42"
        );
    }

    #[test]
    fn unrecorded_locates_nothing() {
        let place = Place::service(0, "port");
        assert_eq!(Unrecorded.locate(place), Location::Unrecorded);
        assert_eq!(Unrecorded.stand_in(place), None);
    }
}
