//! The value tree a configuration file parses into, with positions.

use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

/// Where something is in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The file (the one that was included, for included keys).
    pub file: Rc<PathBuf>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A configuration value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted or bare string (also datetimes and values like `127.0.0.1:4222`).
    Str(String),
    /// An integer, size suffixes applied.
    Int(i64),
    /// A float.
    Float(f64),
    /// `true|false|yes|no|on|off`.
    Bool(bool),
    /// A block `{ ... }`.
    Map(Map),
    /// An array `[ ... ]`.
    Array(Vec<Item>),
}

impl Value {
    /// A short name of the value's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Map(_) => "map",
            Value::Array(_) => "array",
        }
    }

    /// How many blocks and arrays this value nests (0 for a scalar).
    pub fn nesting(&self) -> usize {
        match self {
            Value::Map(m) => 1 + m.entries.iter().map(|(_, _, i)| i.value.nesting()).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(|i| i.value.nesting()).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value.
    pub value: Value,
    /// Its position.
    pub pos: Pos,
}

/// A block's entries in file order. Keys keep their spelling; lookups by
/// the server ignore case as nats-server's do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    /// `(key, key position, value)` in order; a later duplicate wins on lookup.
    pub entries: Vec<(String, Pos, Item)>,
}

impl Map {
    /// The last value for `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, _, v)| v)
    }

    /// Sets `key`, replacing an earlier entry with the same spelling.
    pub fn insert(&mut self, key: String, key_pos: Pos, item: Item) {
        self.entries.retain(|(k, _, _)| *k != key);
        self.entries.push((key, key_pos, item));
    }

    /// The exact-spelling value of `key`, as variables are looked up.
    pub fn var(&self, key: &str) -> Option<&Item> {
        self.entries.iter().rev().find(|(k, _, _)| k == key).map(|(_, _, v)| v)
    }
}
