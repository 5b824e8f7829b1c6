//! The reader against the `toml` crate: whatever it reads, the `toml`
//! crate reads to the same raw config, spans included; and it reads the
//! configs people write.

use std::fmt::Write as _;

use proptest::prelude::*;

use super::read;
use crate::rules::raw::RawConfig;

/// The configs shipped with the project.
const SHIPPED: [&str; 3] = [
    include_str!("../../../../configs/example.toml"),
    include_str!("../../../../configs/routing.toml"),
    include_str!("../../../../configs/demo.toml"),
];

/// Services written in several of the ways TOML allows: tables, inline
/// tables, arrays over lines, comments, CRLF, literal strings.
fn assorted(n: usize) -> String {
    let mut text = String::from(
        "# assorted\n[gateway]\nmaglev_table_size = 1021 # prime\n\n[daemon]\n\
         cores = [ 0, 1 ]\nlog_level = 'info'\n\n[ingress]\nbogons = [\n  \"198.51.100.0/24\", # doc\n\
         \t'203.0.113.0/24',\n]\n\n[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/fg/\"\n\n",
    );
    for i in 0..n {
        let _ = write!(
            text,
            "[[services]]\n  name = \"svc-{i}\"\nprotocol = \"udp\"\r\nvip = \"198.18.{}.{}\"\n\
             port = +{}\nscheduler = \"wrr\"\nbackends = [ {{ address = \"198.19.0.{}\", port = 53, weight = {} }},\n\
             {{address='198.19.1.1',port=53}} ]\n\n[services.health]\nkind = \"udp\"\nrise = -0\n\
             [ services . limits ]\nmax_connections = 100\n\n",
            i / 250,
            i % 250 + 1,
            53 + i,
            i % 250 + 1,
            i % 7,
        );
    }
    text
}

/// Both readers' results, as text (spans included).
fn both(text: &str) -> (Option<String>, Result<String, String>) {
    let fast = read(text).map(|raw| format!("{raw:?}"));
    let full = toml::from_str::<RawConfig>(text)
        .map(|raw| format!("{raw:?}"))
        .map_err(|e| e.to_string());
    (fast, full)
}

/// Checks that whatever the reader reads, the `toml` crate reads the same.
fn agrees(text: &str) -> bool {
    let (fast, full) = both(text);
    if let Some(fast) = &fast {
        assert_eq!(Ok(fast), full.as_ref(), "the readers differ on:\n{text}");
    }
    fast.is_some()
}

#[test]
fn shipped_and_generated_configs_read_as_the_toml_crate_reads_them() {
    for text in SHIPPED {
        assert!(agrees(text), "not read:\n{text}");
    }
    assert!(agrees(&assorted(30)));
    assert!(agrees(""));
    assert!(agrees("\n\n# only a comment"));
}

#[test]
fn what_it_does_not_read_is_left_to_the_toml_crate() {
    let base = "[gateway]\nmaglev_table_size = 1021\n";
    for text in [
        // Outside the subset it reads.
        "[gateway]\nmaglev_table_size = 1_021\n",
        "[gateway]\nmaglev_table_size = 0x3fd\n",
        "[gateway]\nmaglev_table_size = 1021.0\n",
        "gateway.maglev_table_size = 1021\n",
        "[\"gateway\"]\nmaglev_table_size = 1021\n",
        "[daemon]\ncontrol_socket = \"/run/a\\tb\"\n",
        "[daemon]\ncontrol_socket = \"\"\"/run/a\"\"\"\n",
        "[daemon]\ncontrol_socket = '''/run/a'''\n",
        "\u{feff}[gateway]\n",
        "[gateway]\rmaglev_table_size = 1021\n",
        // Wrong, for the toml crate to say why.
        "[gateway]\nmaglev_table_size = 1021\nmaglev_table_size = 1021\n",
        "[gateway]\n[gateway]\n",
        "[gateway]\nmaglev_table_size = \"1021\"\n",
        "[gateway]\ncolour = 1\n",
        "[gateway]\nmaglev_table_size = 01021\n",
        "[gateway]\nmaglev_table_size = 1021 1\n",
        "[gateway]\nmaglev_table_size = 99999999999999999999\n",
        "[[gateway]]\n",
        "[[services]]\nname = \"a\"\n",
        "[daemon]\ncores = [0,,1]\n",
        "[daemon]\ncores = [0 1]\n",
        "[[services]]\nname = \"a\"\nprotocol = \"tcp\"\nvip = \"198.18.0.1\"\nport = 80\n\
         backends = [{ address = \"198.19.0.1\", port = 80, }]\n",
        "[[services]]\nname = \"a\"\nprotocol = \"tcp\"\nvip = \"198.18.0.1\"\nport = 80\n\
         health = { kind = \"tcp\" }\n[services.health]\nport = 1\n",
        "[daemon]\nlog_level = \"a\u{1}b\"\n",
        "# a\u{7f}\n",
        "[gateway] x\n",
        "[[gateway]\n",
    ] {
        assert!(!agrees(text), "read, though it should not be:\n{text}");
    }
    assert!(agrees(base));
}

#[test]
fn spans_are_the_toml_crates() {
    let text = "[daemon]\ncores = [ 0 , 1 ]   # two\nlog_level = 'debug'\n";
    let raw = read(text).expect("read");
    let cores = raw.daemon.cores.as_ref().unwrap();
    assert_eq!(&text[cores.span()], "[ 0 , 1 ]");
    assert_eq!(&text[cores.get_ref()[1].span()], "1");
    assert_eq!(
        &text[raw.daemon.log_level.as_ref().unwrap().span()],
        "'debug'"
    );
}

/// A small config with a service of table backends.
const MINIMAL: &str = "[[interfaces]]\nname = \"eth0\"\n\n[[services]]\nname = \"web\"\n\
protocol = \"tcp\"\nvip = \"198.18.0.10\"\nport = 80\n\n[[services.backends]]\naddress = \"198.18.1.1\"\n\
port = 8080\nweight = 2\n[services.backends.health]\nport = 9000\n";

/// Pieces a mutation inserts: TOML's punctuation, and lines of the shape.
const PIECES: [&str; 32] = [
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\n",
    "\r\n",
    "\r",
    "#",
    "{",
    "}",
    ",",
    ".",
    " ",
    "\t",
    "\\",
    "1",
    "-",
    "_",
    "+",
    "true",
    "0x1",
    "1.5",
    "\"x\"",
    "'y'",
    "[[services]]\n",
    "[services.health]\n",
    "[[services.backends]]\n",
    "name = \"a\"\n",
    "port = 80\n",
];

/// A mutation of a text.
#[derive(Clone, Debug)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, p)| Mutation::Insert(at, p)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Mutation::Delete(at, n)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

/// The nearest character boundary at or before `at` (mod the length).
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Insert(at, piece) => {
            let at = boundary(text, at);
            text.insert_str(at, PIECES[piece]);
        }
        Mutation::Delete(at, n) => {
            let start = boundary(text, at);
            let end = boundary(text, start.saturating_add(n).min(text.len()));
            text.replace_range(start..end.max(start), "");
        }
        Mutation::DuplicateLine(i) | Mutation::SwapLines(i, _) if text.is_empty() => {
            let _ = i;
        }
        Mutation::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            let i = i % lines.len();
            lines.insert(i, lines[i]);
            *text = lines.concat();
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            *text = lines.concat();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn mutated_configs_read_as_the_toml_crate_reads_them(
        base in 0usize..5,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut text = match base {
            0..=2 => SHIPPED[base].to_owned(),
            3 => assorted(3),
            _ => MINIMAL.to_owned(),
        };
        for m in &mutations {
            apply(&mut text, m);
        }
        agrees(&text);
    }
}

#[test]
fn every_piece_at_every_place_of_a_small_config_reads_as_the_toml_crate_reads_it() {
    let (mut read, mut left) = (0, 0);
    for at in 0..=MINIMAL.len() {
        for piece in PIECES {
            let mut text = MINIMAL.to_owned();
            text.insert_str(at, piece);
            if agrees(&text) {
                read += 1;
            } else {
                left += 1;
            }
        }
    }
    // Both roads are taken often: the comparison is not empty.
    assert!(read > 1000 && left > 1000, "{read} read, {left} left");
}
