//! nats-server configuration files: the syntax ([`parse`]), the value
//! tree ([`value`]) and the mapping onto [`Options`](crate::options::Options)
//! ([`options`]).

pub mod cluster;
pub mod digest;
pub mod leaf;
pub mod options;
pub mod parse;
pub mod read;
pub mod tls;
pub mod units;
pub mod value;

pub use parse::{parse_file, parse_str, ConfError, Parsed};
pub use value::{Item, Map, Pos, Value};

#[cfg(test)]
mod tests;
