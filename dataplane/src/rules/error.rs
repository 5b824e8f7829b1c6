//! What went wrong with a config, and where.

use std::fmt;
use std::io;

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
    /// The text is not a valid config. Holds every problem found, sorted by
    /// position; a TOML syntax or type error stops reading, so it comes
    /// alone.
    #[error("{}", ProblemLines(problems))]
    Invalid {
        /// One entry per problem, sorted by (line, column).
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// The problems of an invalid config, sorted by position; empty for an
    /// I/O error.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

/// One problem in a config, at a position in its text.
///
/// Displays as `FILE:LINE:COL: message`, the form editors and compilers use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigProblem {
    /// The config's origin: its path, or whatever name the caller gave.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
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

/// Line and column (both from 1, the column in characters) of a byte
/// offset into `text`. An offset past the end, or inside a character,
/// counts as far as the text goes.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: usize, column: usize, message: &str) -> ConfigProblem {
        ConfigProblem {
            file: "a.toml".into(),
            line,
            column,
            message: message.into(),
        }
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

    #[test]
    fn line_column_counts_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'é' is two bytes: the newline after it is byte 7, 'f' byte 8.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        // Inside 'é' (byte 6) counts up to its start.
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 1000), (3, 2));
    }
}
