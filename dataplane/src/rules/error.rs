//! What went wrong with a config, and where.

use std::fmt;
use std::io;

use super::provenance::Location;

/// Why a config was not loaded. Nothing of an invalid config is ever
/// returned: a config is either wholly valid or an error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: cannot read config: {error}")]
    Io {
        /// The file, as given.
        file: String,
        /// What the OS said.
        error: io::Error,
    },
    /// The config is not valid. Holds every problem found: for a file,
    /// sorted by position (a TOML syntax or type error stops reading, so it
    /// comes alone); for other sources, in model order.
    #[error("{}", ProblemLines(problems))]
    Invalid {
        /// One entry per problem (never empty).
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// The problems of an invalid config; empty for an I/O error.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

/// One problem in a config, where the part at fault came from.
///
/// Displays as `LOCATION: message`: `FILE:LINE:COL: message` for a file,
/// the form editors and compilers use. A duplicate also names its first
/// occurrence when that has a line: `... (first at line 7)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigProblem {
    /// Where the part at fault came from.
    pub location: Location,
    /// What is wrong, in one line, the same whatever the source.
    pub message: String,
    /// For a duplicate: where the first occurrence came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<Location>,
}

impl ConfigProblem {
    /// `message` at `location`.
    pub fn new(location: Location, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            location,
            message: message.into(),
            first: None,
        }
    }

    /// The message with the line of the first occurrence, if that has one:
    /// `... (first at line 7)`, or `(first at FILE:LINE:COL)` when it is in
    /// another file. Without the location of the problem itself.
    pub fn detail(&self) -> String {
        let Some(first) = &self.first else {
            return self.message.clone();
        };
        match (first.line(), first.file()) {
            (Some(line), Some(file)) if self.location.file() == Some(file) => {
                format!("{} (first at line {line})", self.message)
            }
            (Some(_), _) => format!("{} (first at {first})", self.message),
            (None, _) => self.message.clone(),
        }
    }

    /// The position to sort problems of one file by: (line, column); other
    /// locations sort first, in the order found.
    pub(super) fn position(&self) -> (usize, usize) {
        match self.location {
            Location::File { line, column, .. } => (line, column),
            _ => (0, 0),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Unrecorded => f.write_str(&self.detail()),
            location => write!(f, "{location}: {}", self.detail()),
        }
    }
}

/// Displays problems one per line.
struct ProblemLines<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: usize, column: usize, message: &str) -> ConfigProblem {
        ConfigProblem::new(
            Location::File {
                file: "a.toml".into(),
                line,
                column,
            },
            message,
        )
    }

    #[test]
    fn displays_one_problem_per_line() {
        let error = ConfigError::Invalid {
            problems: vec![problem(2, 5, "first"), problem(7, 1, "second")],
        };
        assert_eq!(error.to_string(), "a.toml:2:5: first\na.toml:7:1: second");
        assert_eq!(error.problems().len(), 2);
    }

    #[test]
    fn a_duplicate_names_the_line_of_its_first_occurrence() {
        let mut duplicate = problem(9, 8, "service \"web\" is defined twice");
        duplicate.first = Some(problem(2, 8, "").location);
        assert_eq!(
            duplicate.to_string(),
            "a.toml:9:8: service \"web\" is defined twice (first at line 2)"
        );
        duplicate.first = Some(Location::File {
            file: "b.toml".into(),
            line: 2,
            column: 8,
        });
        assert_eq!(
            duplicate.detail(),
            "service \"web\" is defined twice (first at b.toml:2:8)"
        );
        // Where the first has no line, there is nothing to add.
        duplicate.first = Some(Location::Unrecorded);
        duplicate.location = Location::Unrecorded;
        assert_eq!(duplicate.to_string(), "service \"web\" is defined twice");
    }

    #[test]
    fn io_error_names_file_and_os_error() {
        let error = ConfigError::Io {
            file: "missing.toml".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            error.to_string(),
            "missing.toml: cannot read config: entity not found"
        );
        assert!(error.problems().is_empty());
    }
}
