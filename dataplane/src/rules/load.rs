//! Reading a config: file → text → TOML → model and provenance → the one
//! validator.

use std::path::Path;

use super::decode::decode;
use super::error::{ConfigError, ConfigProblem};
use super::file::{FileProvenance, LineIndex};
use super::provenance::{Location, Provenance};
use super::raw::RawConfig;
use super::validate;
use super::Config;

/// Loads and validates the config file at `path`. Problems are reported
/// against the path as given.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &file),
        Err(error) => Err(ConfigError::Io { file, error }),
    }
}

/// Loads and validates a config from its text; `origin` names it in
/// problems (a path, or e.g. `<api>`).
///
/// A TOML syntax or type error (including an unknown key) stops reading
/// and is reported alone; otherwise every problem is reported, sorted by
/// position.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    load_str_with_provenance(text, origin).map(|(config, _)| config)
}

/// [`load_str`], also returning where each part of the config is in
/// `text`.
pub fn load_str_with_provenance<'t>(
    text: &'t str,
    origin: &str,
) -> Result<(Config, FileProvenance<'t>), ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Invalid {
        problems: vec![toml_problem(&error, text, origin)],
    })?;
    let decoded = decode(&raw);
    let provenance = FileProvenance::new(text, origin, raw, decoded.stand_ins);
    let mut problems: Vec<ConfigProblem> = decoded
        .problems
        .into_iter()
        .map(|(place, message)| ConfigProblem::new(provenance.locate(place), message))
        .collect();
    problems.extend(validate::problems(&decoded.config, &provenance));
    if problems.is_empty() {
        return Ok((decoded.config, provenance));
    }
    // Stable: problems at one position keep the order they were found.
    problems.sort_by_key(ConfigProblem::position);
    Err(ConfigError::Invalid { problems })
}

/// A TOML error as a problem: its bare message (on one line) at the start
/// of its span, or at the top of the file when it has none.
fn toml_problem(error: &toml::de::Error, text: &str, origin: &str) -> ConfigProblem {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| LineIndex::new(text).position(span.start));
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let location = Location::File {
        file: origin.to_owned(),
        line,
        column,
    };
    ConfigProblem::new(location, message)
}
