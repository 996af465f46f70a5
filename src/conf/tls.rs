//! The `tls` block (client, WebSocket and route TLS share its keys), with
//! nats-server's key names and value checks.

use std::path::PathBuf;

use super::parse::ConfError;
use super::read::{boolean, string, type_err};
use super::units::{parse_go_duration, seconds};
use super::value::{Item, Value};

/// The strings of a list value (`cipher_suites`, `curve_preferences`,
/// `pinned_certs`), each with its own position for errors; an empty list is
/// refused as nats-server refuses it.
fn string_list<'a>(key: &str, item: &'a Item) -> Result<Vec<(String, &'a Item)>, ConfError> {
    let Value::Array(a) = &item.value else {
        return Err(type_err(key, item, "a list of strings"));
    };
    if a.is_empty() {
        return Err(ConfError {
            pos: item.pos.clone(),
            msg: format!("tls: '{key}' cannot be empty"),
        });
    }
    a.iter().map(|i| Ok((string(key, i)?, i))).collect()
}

/// A `tls` value error at `item`, naming the key.
fn tls_value_err(key: &str, item: &Item, e: crate::tls::TlsValueError) -> ConfError {
    ConfError {
        pos: item.pos.clone(),
        msg: format!("tls: {key}: {e}"),
    }
}

/// A client `tls` block whose certificates load, as nats-server loads them
/// while it reads the file (so `-t` refuses a missing or bad certificate).
pub fn loaded_tls(item: &Item) -> Result<crate::options::TlsOptions, ConfError> {
    let t = tls_block(item)?;
    crate::tls::ClientTls::new(&t).map_err(|msg| ConfError {
        pos: item.pos.clone(),
        msg,
    })?;
    Ok(t)
}

/// A `tls` block. Keys petrel does not act on yet are refused by name
/// rather than ignored (a TLS setting silently dropped would weaken
/// security). Values are checked here, so a bad cipher or curve name is a
/// configuration error with its line, not a start-up failure.
pub fn tls_block(item: &Item) -> Result<crate::options::TlsOptions, ConfError> {
    let t = tls_keys(item)?;
    if t.cert_file.is_none() || t.key_file.is_none() {
        return Err(ConfError {
            pos: item.pos.clone(),
            msg: "tls: cert_file and key_file are required".into(),
        });
    }
    Ok(t)
}

/// A `tls` block for a connection this server dials (a leaf remote): the
/// same keys, a certificate only when the hub asks for one.
pub fn dial_tls_block(item: &Item) -> Result<crate::options::TlsOptions, ConfError> {
    let t = tls_keys(item)?;
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err(ConfError {
            pos: item.pos.clone(),
            msg: "tls: cert_file and key_file go together".into(),
        });
    }
    crate::route_tls::dial_config(&t).map_err(|msg| ConfError {
        pos: item.pos.clone(),
        msg,
    })?;
    Ok(t)
}

fn tls_keys(item: &Item) -> Result<crate::options::TlsOptions, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(type_err("tls", item, "a map"));
    };
    let mut t = crate::options::TlsOptions::default();
    for (k, _, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "cert_file" => t.cert_file = Some(PathBuf::from(string(k, v)?)),
            "key_file" => t.key_file = Some(PathBuf::from(string(k, v)?)),
            "ca_file" => t.ca_file = Some(PathBuf::from(string(k, v)?)),
            "verify" => t.verify = boolean(k, v)?,
            "verify_and_map" => {
                if boolean(k, v)? {
                    t.verify = true;
                    t.map = true;
                }
            }
            "timeout" => t.timeout = Some(seconds(k, v)?),
            "handshake_first" | "first" | "immediate" => {
                (t.handshake_first, t.handshake_first_fallback) = match &v.value {
                    Value::Bool(b) => (*b, None),
                    // The fallback form: TLS first, or INFO in the clear when
                    // the client sends nothing within the delay.
                    Value::Str(s) if s.eq_ignore_ascii_case("auto") || s.eq_ignore_ascii_case("auto_fallback") => {
                        (true, Some(crate::tls::DEFAULT_FIRST_FALLBACK))
                    }
                    Value::Str(s) => match parse_go_duration(s) {
                        Some(d) if !d.is_zero() => (true, Some(d)),
                        Some(_) => (true, None),
                        None => return Err(type_err(k, v, "a boolean, \"auto\" or a duration")),
                    },
                    _ => return Err(type_err(k, v, "a boolean, \"auto\" or a duration")),
                }
            }
            "cipher_suites" => {
                for (name, at) in string_list(k, v)? {
                    crate::tls::cipher_suite(&name).map_err(|e| tls_value_err(k, at, e))?;
                    t.cipher_suites.push(name);
                }
            }
            "curve_preferences" => {
                for (name, at) in string_list(k, v)? {
                    crate::tls::curve(&name).map_err(|e| tls_value_err(k, at, e))?;
                    t.curve_preferences.push(name);
                }
            }
            "min_version" => {
                t.min_version = Some(crate::tls::min_version(&string(k, v)?).map_err(|e| tls_value_err(k, v, e))?)
            }
            "pinned_certs" => {
                // An empty list pins nothing, as in nats-server.
                if !matches!(&v.value, Value::Array(a) if a.is_empty()) {
                    for (entry, at) in string_list(k, v)? {
                        t.pinned_certs
                            .push(crate::tls::pin(&entry).map_err(|e| tls_value_err(k, at, e))?);
                    }
                }
            }
            "insecure" => t.insecure = boolean(k, v)?,
            // petrel offers no insecure suite, so allowing them changes nothing.
            "allow_insecure_cipher_suites" => {
                boolean(k, v)?;
            }
            other => {
                return Err(ConfError {
                    pos: v.pos.clone(),
                    msg: format!("tls: \"{other}\" is not supported by petrel yet"),
                })
            }
        }
    }
    Ok(t)
}
