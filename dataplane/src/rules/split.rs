//! Reading a large config file on the cores the machine has.
//!
//! A file the fast reader (`rules::reader`) leaves to the `toml` crate is
//! read by it, and that is most of what checking a file of many services
//! then costs, sequential within one parser. A file whose `[[services]]`
//! come last, one after another, is cut at service headers into a few
//! parts, each read by a parser of its own on a scoped thread: the first
//! part (everything before the cut, the other sections included) as a
//! whole config, every later part as a list of services. The services are
//! then put back together in file order.
//!
//! Nothing about what a file means changes:
//! - only a file that a line scan can cut safely is cut: no multi-line
//!   string anywhere (where a header-looking line could be text), and
//!   after its first `[[services]]` nothing but services' own headers
//!   (`[[services]]`, `[[services.…]]`, `[services.…]`), so that every
//!   table of a later part belongs to a service of that part;
//! - each later part is given to its parser behind as many spaces as the
//!   text before it has bytes, so every position (every `Spanned`) is its
//!   position in the file, as the problems' locations need;
//! - a part that fails to read, for whatever reason, sends the whole file
//!   to one parser, which reports what it always reported.

use serde::Deserialize;

use super::raw::{RawConfig, RawService};

/// Below this size a file is read by one parser: starting threads and
/// copying parts would cost more than they save.
const PARALLEL_BYTES: usize = 1 << 20;

/// The services of a later part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServices {
    #[serde(default)]
    services: Vec<RawService>,
}

/// `text` read as a config, on several threads when it is large and can
/// be cut safely; the same result, and the same error, as one
/// `toml::from_str`.
pub(super) fn read(text: &str) -> Result<RawConfig, toml::de::Error> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    read_on(text, threads, PARALLEL_BYTES)
}

/// [`read`] on up to `threads` threads for a text of at least
/// `min_bytes`.
fn read_on(text: &str, threads: usize, min_bytes: usize) -> Result<RawConfig, toml::de::Error> {
    if threads >= 2 && text.len() >= min_bytes {
        if let Some(raw) = cuts(text, threads).and_then(|cuts| read_parts(text, &cuts)) {
            return Ok(raw);
        }
    }
    toml::from_str(text)
}

/// Reads the parts between `cuts` (`0`, the cuts, `text.len()`); `None`
/// if any part fails.
fn read_parts(text: &str, cuts: &[usize]) -> Option<RawConfig> {
    // Part i runs from cuts[i] to the next cut (or the end).
    let ends: Vec<usize> = cuts.iter().skip(1).copied().chain([text.len()]).collect();
    let first_text = text.get(..*ends.first()?)?;
    std::thread::scope(|scope| {
        let handles: Vec<_> = cuts
            .iter()
            .zip(&ends)
            .skip(1)
            .map(|(&start, &end)| scope.spawn(move || read_later(text, start, end)))
            .collect();
        // The calling thread reads the first part.
        let first: Option<RawConfig> = toml::from_str(first_text).ok();
        let mut later = Vec::with_capacity(handles.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => later.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let mut raw = first?;
        for part in later {
            raw.services.extend(part?.services);
        }
        Some(raw)
    })
}

/// The services of `text[start..end]`, positions counted in `text`.
fn read_later(text: &str, start: usize, end: usize) -> Option<RawServices> {
    let part = text.get(start..end)?;
    let mut padded = String::with_capacity(end);
    padded.extend(std::iter::repeat_n(' ', start));
    padded.push_str(part);
    toml::from_str(&padded).ok()
}

/// Where to cut `text` into at most `parts` parts of about equal size:
/// `0` then the cuts, each the start of a `[[services]]` line after the
/// first; `None` when the file cannot be cut safely (see the module's
/// doc) or has no place to cut.
fn cuts(text: &str, parts: usize) -> Option<Vec<usize>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut service_lines = Vec::new();
    let mut in_services = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_start_matches([' ', '\t']);
        if !content.starts_with('[') {
            continue;
        }
        if content.trim_end() == "[[services]]" {
            if in_services {
                service_lines.push(start);
            }
            in_services = true;
        } else if in_services
            && !(content.starts_with("[[services]]")
                || content.starts_with("[[services.")
                || content.starts_with("[services."))
        {
            return None;
        }
    }
    let mut cuts = vec![0];
    for k in 1..parts {
        let target = text.len() * k / parts;
        let at = service_lines.partition_point(|&s| s < target);
        if let Some(&cut) = service_lines.get(at) {
            if cut > *cuts.last()? {
                cuts.push(cut);
            }
        }
    }
    (cuts.len() > 1).then_some(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn services(n: usize) -> String {
        let mut text = String::from("[gateway]\nmaglev_table_size = 1021\n\n");
        for i in 0..n {
            let _ = write!(
                text,
                "[[services]]\nname = \"svc-{i}\"\nprotocol = \"tcp\"\nvip = \"198.18.{}.{}\"\n\
                 port = 80\n\n[services.health]\nkind = \"tcp\"\n\n\
                 [[services.backends]]\naddress = \"198.19.{}.{}\"\nport = 8080\n\n",
                i / 250,
                i % 250 + 1,
                i / 250,
                i % 250 + 1,
            );
        }
        text
    }

    /// Every service's name and address with their positions.
    fn shape(raw: &RawConfig) -> Vec<(String, std::ops::Range<usize>, String, usize)> {
        raw.services
            .iter()
            .map(|s| {
                (
                    s.name.get_ref().clone(),
                    s.name.span(),
                    s.backends[0].address.get_ref().clone(),
                    s.health
                        .as_ref()
                        .and_then(|h| h.kind.as_ref())
                        .map_or(0, |k| k.span().start),
                )
            })
            .collect()
    }

    #[test]
    fn parts_read_what_one_parser_reads_with_the_same_positions() {
        let text = services(2_000);
        for parts in [2, 3, 7] {
            let cuts = cuts(&text, parts).expect("a file of services can be cut");
            assert_eq!(cuts.len(), parts);
            for &cut in &cuts[1..] {
                assert!(text[cut..].starts_with("[[services]]\n"));
            }
            let split = read_parts(&text, &cuts).expect("every part reads");
            let whole: RawConfig = toml::from_str(&text).unwrap();
            assert_eq!(shape(&split), shape(&whole), "{parts} parts");
            assert_eq!(
                split.gateway.maglev_table_size,
                whole.gateway.maglev_table_size
            );
        }
    }

    #[test]
    fn a_file_that_cannot_be_cut_safely_is_read_whole() {
        let text = services(10);
        // A section after the services would belong to the last part.
        assert!(cuts(&format!("{text}[flows]\ncapacity = 4096\n"), 2).is_none());
        // A multi-line string could hold a header-looking line.
        let quoted = text.replacen(
            "port = 80",
            "port = 80\nx = \"\"\"\n[[services]]\n\"\"\"",
            1,
        );
        assert!(cuts(&quoted, 2).is_none());
        // One service: nowhere to cut.
        assert!(cuts(&services(1), 2).is_none());
        assert!(cuts(&services(3), 2).is_some());
    }

    #[test]
    fn a_part_that_fails_gives_the_whole_files_error() {
        let good = services(300);
        assert_eq!(
            shape(&read_on(&good, 3, 0).unwrap()),
            shape(&toml::from_str(&good).unwrap())
        );
        // An unknown key in a late service, and in the first part.
        let late = good.rfind("[[services]]").unwrap() + "[[services]]\n".len();
        let early = good.find("[[services]]").unwrap() + "[[services]]\n".len();
        for at in [late, early] {
            let mut text = good.clone();
            text.insert_str(at, "colour = \"blue\"\n");
            assert!(read_parts(&text, &cuts(&text, 3).unwrap()).is_none());
            let whole = toml::from_str::<RawConfig>(&text).unwrap_err();
            let split = read_on(&text, 3, 0).unwrap_err();
            assert_eq!(split.to_string(), whole.to_string());
            assert_eq!(split.span(), whole.span());
        }
    }
}
