//! Monitoring query parameters decoded as nats-server's Go handlers decode
//! them (`strconv.ParseBool`, `Atoi`, `ParseUint`), with their error texts
//! word for word: a client that sends a bad value gets the same 400.

/// Go's `strconv` error for `func` parsing `v` for `why`.
fn strconv_error(func: &str, v: &str, why: &str) -> String {
    format!("strconv.{func}: parsing {v:?}: {why}")
}

/// Why Go's integer parsers refuse `v`: out of range when it is all
/// digits (after a sign, where the function takes one), else invalid.
fn integer_why(v: &str, signed: bool) -> &'static str {
    let digits = if signed {
        v.strip_prefix(['+', '-']).unwrap_or(v)
    } else {
        v
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        "value out of range"
    } else {
        "invalid syntax"
    }
}

/// `strconv.ParseBool`, as `decodeBool` reports it.
pub fn boolean(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "Error decoding boolean for '{name}': {}",
            strconv_error("ParseBool", v, "invalid syntax")
        )),
    }
}

/// `strconv.Atoi`, as `decodeInt` reports it (a sign is allowed).
pub fn int(name: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>().map_err(|_| {
        format!(
            "Error decoding int for '{name}': {}",
            strconv_error("Atoi", v, integer_why(v, true))
        )
    })
}

/// `strconv.ParseUint`, as `decodeUint64` reports it (no sign).
pub fn uint64(name: &str, v: &str) -> Result<u64, String> {
    let unsigned = !v.starts_with(['+', '-']);
    v.parse::<u64>().ok().filter(|_| unsigned).ok_or_else(|| {
        format!(
            "Error decoding uint64 for '{name}': {}",
            strconv_error("ParseUint", v, integer_why(v, false))
        )
    })
}

/// An offset as nats-server takes it: negative is 0.
pub fn offset(v: i64) -> usize {
    v.max(0) as usize
}

/// A limit as nats-server takes it: 0 or less is `default`.
pub fn limit(v: i64, default: usize) -> usize {
    if v <= 0 {
        default
    } else {
        v as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_go_writes_them() {
        assert_eq!(
            int("limit", "abc").unwrap_err(),
            "Error decoding int for 'limit': strconv.Atoi: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            int("limit", "99999999999999999999").unwrap_err(),
            "Error decoding int for 'limit': strconv.Atoi: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(int("offset", "-5"), Ok(-5));
        assert_eq!(int("offset", "+5"), Ok(5));
        assert_eq!(
            uint64("cid", "abc").unwrap_err(),
            "Error decoding uint64 for 'cid': strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            uint64("cid", "+1").unwrap_err(),
            "Error decoding uint64 for 'cid': strconv.ParseUint: parsing \"+1\": invalid syntax"
        );
        assert_eq!(uint64("cid", "7"), Ok(7));
        assert_eq!(
            boolean("subs", "x").unwrap_err(),
            "Error decoding boolean for 'subs': strconv.ParseBool: parsing \"x\": invalid syntax"
        );
        assert_eq!(boolean("subs", "T"), Ok(true));
        assert_eq!((offset(-3), limit(0, 1024), limit(5, 1024)), (0, 1024, 5));
    }
}
