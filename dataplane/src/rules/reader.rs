//! A fast reader of the plain TOML a config file is made of.
//!
//! The `toml` crate builds a document that keeps every span and piece of
//! formatting before serde reads the model's raw shape out of it; for a
//! file of 100 000 services that is seconds. This reader knows only the
//! part of TOML configs are written in — `[table]` and `[[array]]`
//! headers of bare keys, `key = value` lines with a bare key, strings
//! without escapes (basic or literal, on one line), decimal integers,
//! booleans, arrays and inline tables of these, comments — and reads it
//! in one pass into a small tree of borrowed text, which the raw structs
//! are then deserialised from (`de`), with the same spans.
//!
//! It never decides anything the `toml` crate would decide differently:
//! whatever it does not know (an escape, a float, a date, a dotted or
//! quoted key, a multi-line string...) and whatever is wrong (a duplicate
//! key, a table defined twice, a key the raw shape does not have, a value
//! of the wrong type) makes it give up, and the file is read by the
//! `toml` crate, which reports what it always reported. So a file it
//! reads gives the same raw config, spans included, as the `toml` crate
//! (the tests below compare both on generated and mutated configs), and a
//! file it does not gives the same error.

mod de;

use super::raw::RawConfig;

/// `text` read into the raw config, or `None` where the `toml` crate has
/// to read it (see the module's doc).
pub(super) fn read(text: &str) -> Option<RawConfig> {
    let root = parse(text)?;
    de::raw_config(&root)
}

/// The most keys a table may have here; a larger table is left to the
/// `toml` crate, so that looking for duplicates (linear) stays cheap.
const MAX_KEYS: usize = 64;

/// A value with the span of its text.
#[derive(Debug)]
struct Node<'t> {
    start: usize,
    end: usize,
    value: Value<'t>,
}

/// A TOML value of the subset read here.
#[derive(Debug)]
enum Value<'t> {
    Str(&'t str),
    Int(i64),
    Bool(bool),
    /// `[a, b]`.
    Array(Vec<Node<'t>>),
    /// An inline table, `{ k = v }`: closed once written.
    Inline(Table<'t>),
    /// A table of headers: `[k]`, or made on the way to `[k.sub]`.
    Table(Table<'t>),
    /// `[[k]]` entries.
    Tables(Vec<Table<'t>>),
}

/// A table's keys in the order written.
#[derive(Debug, Default)]
struct Table<'t> {
    entries: Vec<(&'t str, Node<'t>)>,
    /// Defined by its own header (or the root): another header for it is
    /// an error.
    defined: bool,
}

impl<'t> Table<'t> {
    fn defined() -> Self {
        Table {
            entries: Vec::new(),
            defined: true,
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| *k == key)
    }

    /// Adds `key`; `None` if it is there already or the table is full.
    fn insert(&mut self, key: &'t str, node: Node<'t>) -> Option<&mut Node<'t>> {
        if self.entries.len() >= MAX_KEYS || self.position(key).is_some() {
            return None;
        }
        self.entries.push((key, node));
        self.entries.last_mut().map(|(_, node)| node)
    }
}

/// The root table of `text`, or `None` where it uses TOML this reader
/// does not read, or is not valid TOML.
fn parse(text: &str) -> Option<Table<'_>> {
    let mut cursor = Cursor { text, at: 0 };
    let mut root = Table::defined();
    let mut header: Option<Header<'_>> = None;
    loop {
        let table = match &header {
            None => &mut root,
            Some(header) => header.open(&mut root)?,
        };
        header = cursor.read_table_body(table)?;
        if header.is_none() {
            return Some(root);
        }
    }
}

/// A `[a.b]` or `[[a.b]]` header.
struct Header<'t> {
    keys: Vec<&'t str>,
    array: bool,
}

impl<'t> Header<'t> {
    /// The table this header opens, made as TOML says: every key but the
    /// last names a table (made if missing) or the last entry of an
    /// array of tables; the last names a table not defined yet, or an
    /// array of tables to add an entry to.
    fn open<'r>(&self, root: &'r mut Table<'t>) -> Option<&'r mut Table<'t>> {
        let (last, path) = self.keys.split_last()?;
        let mut table = root;
        for key in path {
            let index = match table.position(key) {
                Some(index) => index,
                None => {
                    let node = Node {
                        start: 0,
                        end: 0,
                        value: Value::Table(Table::default()),
                    };
                    table.insert(key, node)?;
                    table.entries.len() - 1
                }
            };
            table = match &mut table.entries[index].1.value {
                Value::Table(inner) => inner,
                Value::Tables(list) => list.last_mut()?,
                _ => return None,
            };
        }
        match (table.position(last), self.array) {
            (None, false) => {
                let node = Node {
                    start: 0,
                    end: 0,
                    value: Value::Table(Table::defined()),
                };
                match &mut table.insert(last, node)?.value {
                    Value::Table(inner) => Some(inner),
                    _ => None,
                }
            }
            (None, true) => {
                let node = Node {
                    start: 0,
                    end: 0,
                    value: Value::Tables(vec![Table::defined()]),
                };
                match &mut table.insert(last, node)?.value {
                    Value::Tables(list) => list.last_mut(),
                    _ => None,
                }
            }
            (Some(index), array) => match (&mut table.entries[index].1.value, array) {
                (Value::Table(inner), false) if !inner.defined => {
                    inner.defined = true;
                    Some(inner)
                }
                (Value::Tables(list), true) => {
                    list.push(Table::defined());
                    list.last_mut()
                }
                _ => None,
            },
        }
    }
}

/// A position in the text.
struct Cursor<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Past a comment, if one starts here: to its line's end, which is
    /// left for [`Cursor::end_of_line`]. Control characters other than a
    /// tab are left to the `toml` crate.
    fn skip_comment(&mut self) -> Option<()> {
        if self.peek() != Some(b'#') {
            return Some(());
        }
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        if rest[..len].iter().any(|&b| is_control(b)) {
            return None;
        }
        self.at += len;
        Some(())
    }

    /// Past the end of a line (`\n` or `\r\n`); `Some(false)` at the end
    /// of the text, `None` if the line goes on.
    fn end_of_line(&mut self) -> Option<bool> {
        match self.peek() {
            None => Some(false),
            Some(b'\n') => {
                self.at += 1;
                Some(true)
            }
            Some(b'\r') if self.text.as_bytes().get(self.at + 1) == Some(&b'\n') => {
                self.at += 2;
                Some(true)
            }
            _ => None,
        }
    }

    /// Reads `key = value` lines into `table` up to the next header,
    /// which it returns (`None` at the end of the text).
    fn read_table_body(&mut self, table: &mut Table<'t>) -> Option<Option<Header<'t>>> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Some(None),
                Some(b'#') => self.skip_comment()?,
                Some(b'[') => return self.read_header().map(Some),
                Some(b'\n' | b'\r') => {}
                Some(_) => {
                    let key = self.bare_key()?;
                    self.skip_blanks();
                    if self.peek() != Some(b'=') {
                        return None; // a dotted key, or not TOML
                    }
                    self.at += 1;
                    self.skip_blanks();
                    let value = self.value()?;
                    table.insert(key, value)?;
                    self.skip_blanks();
                    self.skip_comment()?;
                }
            }
            if self.end_of_line()? {
                continue;
            }
            return Some(None);
        }
    }

    /// A header, from its `[` to past its line's end.
    fn read_header(&mut self) -> Option<Header<'t>> {
        let bytes = self.text.as_bytes();
        let array = bytes.get(self.at + 1) == Some(&b'[');
        self.at += if array { 2 } else { 1 };
        let mut keys = Vec::with_capacity(2);
        loop {
            self.skip_blanks();
            keys.push(self.bare_key()?);
            self.skip_blanks();
            match self.peek() {
                Some(b'.') => self.at += 1,
                Some(b']') => break,
                _ => return None,
            }
        }
        self.at += 1;
        if array {
            if self.peek() != Some(b']') {
                return None;
            }
            self.at += 1;
        }
        self.skip_blanks();
        self.skip_comment()?;
        if self.end_of_line()? {
            // The next line is read by the table's body.
        }
        Some(Header { keys, array })
    }

    /// A bare key: ASCII letters, digits, `_` and `-`.
    fn bare_key(&mut self) -> Option<&'t str> {
        let start = self.at;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then(|| &self.text[start..self.at])
    }

    /// A value and its span.
    fn value(&mut self) -> Option<Node<'t>> {
        let start = self.at;
        let value = match self.peek()? {
            b'"' => Value::Str(self.string(b'"')?),
            b'\'' => Value::Str(self.string(b'\'')?),
            b'[' => Value::Array(self.array()?),
            b'{' => Value::Inline(self.inline_table()?),
            _ => self.scalar()?,
        };
        Some(Node {
            start,
            end: self.at,
            value,
        })
    }

    /// A one-line string without escapes, quoted by `quote`.
    fn string(&mut self, quote: u8) -> Option<&'t str> {
        let bytes = self.text.as_bytes();
        let start = self.at + 1;
        if bytes.get(start..start + 2) == Some(&[quote, quote]) {
            return None; // multi-line
        }
        let len = bytes[start..].iter().position(|&b| b == quote)?;
        let body = &bytes[start..start + len];
        if body.iter().any(|&b| is_control(b) || b == b'\\') {
            return None;
        }
        self.at = start + len + 1;
        Some(&self.text[start..start + len])
    }

    /// `true`, `false` or a decimal integer without `_` or leading zeros.
    fn scalar(&mut self) -> Option<Value<'t>> {
        let start = self.at;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'+' | b'.' | b':') =
            self.peek()
        {
            self.at += 1;
        }
        let token = &self.text[start..self.at];
        match token {
            "true" => return Some(Value::Bool(true)),
            "false" => return Some(Value::Bool(false)),
            _ => {}
        }
        let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
        let decimal = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !decimal {
            return None;
        }
        token.parse().ok().map(Value::Int)
    }

    /// Blanks, newlines and comments inside an array.
    fn skip_array_space(&mut self) -> Option<()> {
        loop {
            self.skip_blanks();
            self.skip_comment()?;
            match self.peek() {
                Some(b'\n' | b'\r') => {
                    self.end_of_line()?;
                }
                _ => return Some(()),
            }
        }
    }

    /// `[v, v, ...]`, a trailing comma allowed, over several lines.
    fn array(&mut self) -> Option<Vec<Node<'t>>> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_array_space()?;
            if self.peek()? == b']' {
                self.at += 1;
                return Some(items);
            }
            items.push(self.value()?);
            self.skip_array_space()?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// `{ k = v, ... }` on one line, without a trailing comma.
    fn inline_table(&mut self) -> Option<Table<'t>> {
        self.at += 1;
        let mut table = Table::defined();
        self.skip_blanks();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(table);
        }
        loop {
            self.skip_blanks();
            let key = self.bare_key()?;
            self.skip_blanks();
            if self.peek()? != b'=' {
                return None;
            }
            self.at += 1;
            self.skip_blanks();
            let value = self.value()?;
            table.insert(key, value)?;
            self.skip_blanks();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(table);
                }
                _ => return None,
            }
        }
    }
}

/// A control character TOML does not allow in strings and comments (a
/// tab is allowed).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests;
