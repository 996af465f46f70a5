//! Parser for nats-server's configuration syntax (our own: no crate
//! exists). `key = value`, `key: value` and `key value`; blocks `{}` and
//! arrays `[]`; `#` and `//` comments; quoted, raw and bare strings; block
//! strings `( ... )`; integers with size suffixes; floats; booleans in
//! nats-server's spellings; `include`; `$VARIABLES` from enclosing blocks,
//! then the environment.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use thiserror::Error;

use super::value::{Item, Map, Pos, Value};

/// A configuration file that cannot be used, with where and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{pos}: {msg}")]
pub struct ConfError {
    /// Where.
    pub pos: Pos,
    /// What is wrong (names the key where there is one).
    pub msg: String,
}

/// How deep `include`s may nest (a cycle stops here).
const MAX_INCLUDE_DEPTH: usize = 10;

/// How deep blocks and arrays may nest. nats-server has no limit (Go
/// stacks grow); ours keeps the recursive parser, and everything that walks
/// the tree after it, within a thread's stack wherever a file is read (start
/// up, `-t`, SIGHUP, `$SYS` RELOAD). Real configurations nest under ten.
pub const MAX_NESTING: usize = 128;

/// The largest configuration file (or included file) read: an operator's
/// file, but a reload must not take the server's memory with it.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The result of parsing: the top-level map and the variable names that
/// values referred to (nats-server does not report those keys as unknown).
#[derive(Debug, Default)]
pub struct Parsed {
    /// Top-level entries.
    pub map: Map,
    /// Keys used as `$VARIABLES`.
    pub used_vars: HashSet<String>,
}

/// Parses a configuration file.
pub fn parse_file(path: &Path) -> Result<Parsed, ConfError> {
    let text = read_limited(path).map_err(|msg| ConfError {
        pos: Pos {
            file: Rc::new(path.to_path_buf()),
            line: 0,
            col: 0,
        },
        msg: format!("error opening config file: {msg}"),
    })?;
    let parsed = parse_str(&text, path)?;
    if parsed.map.entries.is_empty() {
        return Err(ConfError {
            pos: Pos {
                file: Rc::new(path.to_path_buf()),
                line: 0,
                col: 0,
            },
            msg: "config has no values or is empty".into(),
        });
    }
    Ok(parsed)
}

/// Reads a configuration file of at most [`MAX_FILE_BYTES`].
fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file is larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    Ok(text)
}

/// Parses configuration text that came from `path` (used for positions and
/// to resolve `include`s).
pub fn parse_str(text: &str, path: &Path) -> Result<Parsed, ConfError> {
    let mut p = Parser::new(text, Rc::new(path.to_path_buf()), 0);
    let mut used = HashSet::new();
    let mut scopes: Vec<Map> = vec![Map::default()];
    p.entries(&mut scopes, &mut used, None)?;
    Ok(Parsed {
        map: scopes.pop().expect("root scope"),
        used_vars: used,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
    file: Rc<PathBuf>,
    /// How many `include`s deep this file is.
    depth: usize,
    /// How many blocks and arrays are open around the current value,
    /// counting those of including files.
    nesting: usize,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn ends_bare(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' | b'}' | b']' | b'#')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: Rc<PathBuf>, depth: usize) -> Parser<'a> {
        Parser {
            s: text.as_bytes(),
            i: 0,
            line: 1,
            col: 1,
            file,
            depth,
            nesting: 0,
        }
    }

    /// Enters a block or an array at the current position.
    fn open_nested(&mut self, key: &str) -> Result<(), ConfError> {
        if self.nesting >= MAX_NESTING {
            return self.err(format!(
                "key \"{key}\": blocks and arrays nested more than {MAX_NESTING} deep"
            ));
        }
        self.nesting += 1;
        Ok(())
    }

    fn pos(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ConfError> {
        Err(ConfError {
            pos: self.pos(),
            msg: msg.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek2(&self) -> Option<u8> {
        self.s.get(self.i + 1).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        if b == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(b)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
    }

    fn at_comment(&self) -> bool {
        self.peek() == Some(b'#') || (self.peek() == Some(b'/') && self.peek2() == Some(b'/'))
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|b| b != b'\n') {
            self.bump();
        }
    }

    /// Skips whitespace, newlines, comments and separators between entries.
    fn skip_filler(&mut self, separators: &[u8]) {
        loop {
            match self.peek() {
                Some(b) if is_space(b) || b == b'\r' || b == b'\n' || separators.contains(&b) => {
                    self.bump();
                }
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// Parses entries into the innermost scope until `close` (or EOF at top level).
    fn entries(
        &mut self,
        scopes: &mut Vec<Map>,
        used: &mut HashSet<String>,
        close: Option<u8>,
    ) -> Result<(), ConfError> {
        loop {
            self.skip_filler(b",;");
            match (self.peek(), close) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return self.err("unexpected end of file inside a block: missing '}'"),
                (Some(b), Some(c)) if b == c => {
                    self.bump();
                    return Ok(());
                }
                (Some(b'}'), None) | (Some(b']'), _) => {
                    return self.err(format!("unexpected '{}'", self.peek().unwrap() as char))
                }
                _ => {}
            }
            let key_pos = self.pos();
            let key = self.key()?;
            self.skip_spaces();
            if key == "include" && !matches!(self.peek(), Some(b'=' | b':' | b'{' | b'[')) {
                self.include(scopes, used)?;
            } else {
                if matches!(self.peek(), Some(b'=' | b':')) {
                    self.bump();
                    self.skip_spaces();
                }
                if self.peek().is_none_or(|b| b == b'\n' || b == b'\r') || self.at_comment() {
                    // A block may open on the line after its key.
                    let save = (self.i, self.line, self.col);
                    self.skip_filler(b"");
                    if self.peek() != Some(b'{') {
                        (self.i, self.line, self.col) = save;
                        return Err(ConfError {
                            pos: key_pos,
                            msg: format!("key \"{key}\" has no value"),
                        });
                    }
                }
                let item = self.value(scopes, used, &key)?;
                scopes.last_mut().expect("scope").insert(key, key_pos, item);
            }
            self.end_of_value(close)?;
        }
    }

    /// After a value: spaces, then a newline, `,`, `;`, a comment, the block's
    /// closing brace or EOF.
    fn end_of_value(&mut self, close: Option<u8>) -> Result<(), ConfError> {
        self.skip_spaces();
        match self.peek() {
            None | Some(b'\n' | b'\r' | b',' | b';') => Ok(()),
            Some(b) if Some(b) == close => Ok(()),
            Some(_) if self.at_comment() => Ok(()),
            Some(b) => self.err(format!(
                "expected the value to end with a new line, comment, ',' or ';', but got '{}'",
                b as char
            )),
        }
    }

    fn key(&mut self) -> Result<String, ConfError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.bump();
                let start = self.i;
                while self.peek().is_some_and(|b| b != q && b != b'\n') {
                    self.bump();
                }
                if self.peek() != Some(q) {
                    return self.err("unterminated quoted key");
                }
                let k = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.bump();
                Ok(k)
            }
            _ => {
                let start = self.i;
                while self.peek().is_some_and(|b| {
                    !matches!(
                        b,
                        b' ' | b'\t' | b'\r' | b'\n' | b'=' | b':' | b'{' | b'[' | b'}' | b']' | b',' | b';' | b'#'
                    )
                }) {
                    self.bump();
                }
                if self.i == start {
                    return self.err(format!(
                        "expected a key, got '{}'",
                        self.peek().map_or(' ', |b| b as char)
                    ));
                }
                Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
        }
    }

    fn include(&mut self, scopes: &mut [Map], used: &mut HashSet<String>) -> Result<(), ConfError> {
        let pos = self.pos();
        let name = match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.quoted(q)?,
            _ => self.bare(),
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(ConfError {
                pos,
                msg: format!("include \"{name}\": includes nested too deeply (a cycle?)"),
            });
        }
        let base = self.file.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = base.join(&name);
        let text = read_limited(&path).map_err(|e| ConfError {
            pos: pos.clone(),
            msg: format!("error parsing include file '{name}', {e}"),
        })?;
        let mut sub = Parser::new(&text, Rc::new(path), self.depth + 1);
        sub.nesting = self.nesting;
        // The included file's keys land in the current block.
        let mut inner: Vec<Map> = scopes.to_vec();
        sub.entries(&mut inner, used, None)?;
        let merged = inner.pop().expect("scope");
        if let Some(last) = scopes.last_mut() {
            *last = merged;
        }
        Ok(())
    }

    fn value(&mut self, scopes: &mut Vec<Map>, used: &mut HashSet<String>, key: &str) -> Result<Item, ConfError> {
        let pos = self.pos();
        let value = match self.peek() {
            Some(b'{') => {
                self.open_nested(key)?;
                self.bump();
                scopes.push(Map::default());
                let r = self.entries(scopes, used, Some(b'}'));
                let map = scopes.pop().expect("pushed above");
                self.nesting -= 1;
                r?;
                Value::Map(map)
            }
            Some(b'[') => {
                self.open_nested(key)?;
                self.bump();
                let items = self.array(scopes, used, key);
                self.nesting -= 1;
                Value::Array(items?)
            }
            Some(q @ (b'"' | b'\'')) => Value::Str(self.quoted(q)?),
            Some(b'(') => Value::Str(self.block_string()?),
            Some(b'$') if !self.bcrypt_ahead() => {
                self.bump();
                let name = self.bare();
                return self.variable(&name, pos, scopes, used);
            }
            Some(_) => {
                let text = self.bare();
                if text.is_empty() {
                    return self.err(format!("key \"{key}\": expected a value"));
                }
                classify(&text)
            }
            None => return self.err(format!("key \"{key}\": expected a value")),
        };
        Ok(Item { value, pos })
    }

    /// `$2a$...` and friends are bcrypt hashes, not variables.
    fn bcrypt_ahead(&self) -> bool {
        let rest = &self.s[self.i..];
        rest.len() > 3 && rest[1] == b'2' && rest[3] == b'$'
    }

    fn variable(&self, name: &str, pos: Pos, scopes: &[Map], used: &mut HashSet<String>) -> Result<Item, ConfError> {
        for scope in scopes.iter().rev() {
            if let Some(item) = scope.var(name) {
                used.insert(name.to_string());
                // A variable can carry a deep value into a deep place.
                if self.nesting + item.value.nesting() > MAX_NESTING {
                    return Err(ConfError {
                        pos,
                        msg: format!("variable '{name}': blocks and arrays nested more than {MAX_NESTING} deep"),
                    });
                }
                return Ok(Item {
                    value: item.value.clone(),
                    pos,
                });
            }
        }
        if let Ok(env) = std::env::var(name) {
            // An environment value is itself parsed as a value (8222 is an integer).
            let mut sub = Parser::new(&env, self.file.clone(), self.depth + 1);
            sub.nesting = self.nesting;
            let mut scratch: Vec<Map> = vec![Map::default()];
            let mut none = HashSet::new();
            let item = sub.value(&mut scratch, &mut none, name);
            return match item {
                Ok(i) => Ok(Item { value: i.value, pos }),
                Err(_) => Ok(Item {
                    value: Value::Str(env),
                    pos,
                }),
            };
        }
        Err(ConfError {
            pos,
            msg: format!("variable reference for '{name}' on line {} can not be found", self.line),
        })
    }

    fn array(&mut self, scopes: &mut Vec<Map>, used: &mut HashSet<String>, key: &str) -> Result<Vec<Item>, ConfError> {
        let mut items = Vec::new();
        loop {
            self.skip_filler(b",");
            match self.peek() {
                None => {
                    return self.err(format!(
                        "key \"{key}\": unexpected end of file inside an array: missing ']'"
                    ))
                }
                Some(b']') => {
                    self.bump();
                    return Ok(items);
                }
                _ => {}
            }
            items.push(self.value(scopes, used, key)?);
            self.skip_spaces();
            match self.peek() {
                Some(b',' | b'\n' | b'\r' | b']') => {}
                Some(_) if self.at_comment() => {}
                None => {}
                Some(b) => {
                    return self.err(format!(
                        "key \"{key}\": expected ',' or ']' after an array value, got '{}'",
                        b as char
                    ))
                }
            }
        }
    }

    fn quoted(&mut self, q: u8) -> Result<String, ConfError> {
        let start_pos = self.pos();
        self.bump();
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None | Some(b'\n') => {
                    return Err(ConfError {
                        pos: start_pos,
                        msg: "unterminated string".into(),
                    })
                }
                Some(b) if b == q => break,
                Some(b'\\') if q == b'"' => match self.bump() {
                    Some(b't') => out.push(b'\t'),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'x') => {
                        let h = [self.bump().unwrap_or(b'?'), self.bump().unwrap_or(b'?')];
                        let v = std::str::from_utf8(&h)
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok());
                        match v {
                            Some(v) => out.push(v),
                            None => return self.err("invalid \\x escape"),
                        }
                    }
                    Some(c) => return self.err(format!("invalid escape character '\\{}'", c as char)),
                    None => return self.err("unterminated string"),
                },
                Some(b) => out.push(b),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `( ... )` with the closing parenthesis alone on its line.
    fn block_string(&mut self) -> Result<String, ConfError> {
        let start_pos = self.pos();
        self.bump();
        let start = self.i;
        loop {
            let line_start = self.i;
            while self.peek().is_some_and(|b| b != b'\n') {
                self.bump();
            }
            let line = &self.s[line_start..self.i];
            if line.iter().filter(|b| !b.is_ascii_whitespace()).eq(b")".iter()) && line_start > start {
                let body = String::from_utf8_lossy(&self.s[start..line_start])
                    .trim_matches('\n')
                    .to_string();
                return Ok(body);
            }
            if self.bump().is_none() {
                return Err(ConfError {
                    pos: start_pos,
                    msg: "unterminated block string: ')' must be alone on a line".into(),
                });
            }
        }
    }

    fn bare(&mut self) -> String {
        let start = self.i;
        while let Some(b) = self.peek() {
            if ends_bare(b) || (b == b'/' && self.peek2() == Some(b'/') && self.i > start && self.s[self.i - 1] != b':')
            {
                break;
            }
            self.bump();
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
}

/// Reads a bare value: boolean, integer (with size suffix), float, or string.
pub fn classify(text: &str) -> Value {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Value::Bool(true),
        "false" | "no" | "off" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_sized_int(text) {
        return Value::Int(n);
    }
    if text.contains('.') && !text.contains(['e', 'E']) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

/// `1024`, `1k` (1000), `1kb`/`1ki`/`1kib` (1024), up to `e`.
pub fn parse_sized_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let split = body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len());
    if split == 0 {
        return None;
    }
    let n: i64 = body[..split].parse().ok()?;
    let suffix = body[split..].to_ascii_lowercase();
    let mult: i64 = match suffix.as_str() {
        "" => 1,
        "k" => 1_000,
        "kb" | "ki" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mi" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gi" | "gib" => 1 << 30,
        "t" => 1_000_000_000_000,
        "tb" | "ti" | "tib" => 1 << 40,
        "p" => 1_000_000_000_000_000,
        "pb" | "pi" | "pib" => 1 << 50,
        "e" => 1_000_000_000_000_000_000,
        "eb" | "ei" | "eib" => 1 << 60,
        _ => return None,
    };
    let v = n.checked_mul(mult)?;
    Some(if neg { -v } else { v })
}
