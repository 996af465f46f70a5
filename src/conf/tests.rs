use std::path::Path;

use super::*;

/// The first error applying `text` as a configuration file gives.
pub(super) fn refusal(text: &str) -> String {
    let parsed = super::parse::parse_str(text, Path::new("t.conf")).unwrap();
    let mut o = crate::options::Options::default();
    super::options::apply(&mut o, &parsed).unwrap_err()[0].to_string()
}

fn parse(text: &str) -> Map {
    parse_str(text, Path::new("test.conf"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map
}

fn err(text: &str) -> ConfError {
    parse_str(text, Path::new("test.conf")).expect_err("should fail")
}

fn v<'a>(m: &'a Map, k: &str) -> &'a Value {
    &m.get(k).unwrap_or_else(|| panic!("no {k}")).value
}

#[test]
fn separators_and_scalars() {
    let m = parse(
        "a = 1\nb: 2\nc 3\nKEY : \"v\"\nd: true\ne: Off\nf: 1.5\ng: 1MB\nh: 1M\ni: 64kb\nj: 2GiB\nk: -5\n\
         l: 127.0.0.1:4222\nm: /path/to/file.conf\nn: nats://h:4222\no: 2006-01-02T15:04:05Z\np: 10s\nq: \"2m\"\n",
    );
    assert_eq!(v(&m, "a"), &Value::Int(1));
    assert_eq!(v(&m, "b"), &Value::Int(2));
    assert_eq!(v(&m, "c"), &Value::Int(3));
    assert_eq!(v(&m, "key"), &Value::Str("v".into()));
    assert_eq!(v(&m, "d"), &Value::Bool(true));
    assert_eq!(v(&m, "e"), &Value::Bool(false));
    assert_eq!(v(&m, "f"), &Value::Float(1.5));
    assert_eq!(v(&m, "g"), &Value::Int(1 << 20));
    assert_eq!(v(&m, "h"), &Value::Int(1_000_000));
    assert_eq!(v(&m, "i"), &Value::Int(64 * 1024));
    assert_eq!(v(&m, "j"), &Value::Int(2 << 30));
    assert_eq!(v(&m, "k"), &Value::Int(-5));
    assert_eq!(v(&m, "l"), &Value::Str("127.0.0.1:4222".into()));
    assert_eq!(v(&m, "m"), &Value::Str("/path/to/file.conf".into()));
    assert_eq!(v(&m, "n"), &Value::Str("nats://h:4222".into()));
    assert_eq!(v(&m, "o"), &Value::Str("2006-01-02T15:04:05Z".into()));
    assert_eq!(v(&m, "p"), &Value::Str("10s".into()));
    assert_eq!(v(&m, "q"), &Value::Str("2m".into()));
}

#[test]
fn strings_comments_blocks_arrays() {
    let m = parse(
        "# comment\n// another\ns1: \"tab\\there \\x41 \\\"q\\\"\" # trailing\ns2: 'raw\\n'\n\
         blk (\n  line one\n  line two\n)\n\
         auth {\n  user: a, pass: 'b'; timeout: 2\n  nested { deep: [1, \"two\", {x: 3}]\n }\n}\n\
         next_line_block\n{\n  k: v\n}\n\
         arr: [\n  a\n  b, c\n]\n",
    );
    assert_eq!(v(&m, "s1"), &Value::Str("tab\there A \"q\"".into()));
    assert_eq!(v(&m, "s2"), &Value::Str("raw\\n".into()));
    assert_eq!(v(&m, "blk"), &Value::Str("  line one\n  line two".into()));
    let Value::Map(auth) = v(&m, "auth") else { panic!() };
    assert_eq!(v(auth, "user"), &Value::Str("a".into()));
    assert_eq!(v(auth, "pass"), &Value::Str("b".into()));
    assert_eq!(v(auth, "timeout"), &Value::Int(2));
    let Value::Map(nested) = v(auth, "nested") else {
        panic!()
    };
    let Value::Array(deep) = v(nested, "deep") else {
        panic!()
    };
    assert_eq!(deep.len(), 3);
    assert!(matches!(&deep[2].value, Value::Map(x) if x.get("x").unwrap().value == Value::Int(3)));
    let Value::Map(nb) = v(&m, "next_line_block") else {
        panic!()
    };
    assert_eq!(v(nb, "k"), &Value::Str("v".into()));
    let Value::Array(arr) = v(&m, "arr") else { panic!() };
    assert_eq!(
        arr.iter().map(|i| i.value.clone()).collect::<Vec<_>>(),
        vec![Value::Str("a".into()), Value::Str("b".into()), Value::Str("c".into())]
    );
}

#[test]
fn variables_blocks_then_environment() {
    std::env::set_var("PETREL_CONF_TEST_PORT", "8222");
    let m = parse(
        "PERM = { publish: \"a.>\" }\nauthorization {\n  INNER: 5\n  users: [ {user: u, permission: $PERM, n: $INNER} ]\n}\n\
         port: $PETREL_CONF_TEST_PORT\nhash: $2a$11$abcdefghijklmnopqrstuv\n",
    );
    assert_eq!(v(&m, "port"), &Value::Int(8222), "env values are parsed as values");
    assert_eq!(v(&m, "hash"), &Value::Str("$2a$11$abcdefghijklmnopqrstuv".into()));
    let Value::Map(a) = v(&m, "authorization") else {
        panic!()
    };
    let Value::Array(users) = v(a, "users") else { panic!() };
    let Value::Map(u) = &users[0].value else { panic!() };
    assert!(matches!(v(u, "permission"), Value::Map(p) if p.get("publish").is_some()));
    assert_eq!(v(u, "n"), &Value::Int(5));
    let parsed = parse_str("X = 1\ny: $X\n", Path::new("t.conf")).unwrap();
    assert!(parsed.used_vars.contains("X"));
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let dir = std::env::temp_dir().join(format!("petrel-conf-inc-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("main.conf"),
        "port: 1\ninclude sub/a.conf\nblock { include \"sub/b.conf\" }\n",
    )
    .unwrap();
    std::fs::write(dir.join("sub/a.conf"), "max_payload: 2KB\n").unwrap();
    std::fs::write(dir.join("sub/b.conf"), "inner: yes\n").unwrap();
    let m = parse_file(&dir.join("main.conf")).unwrap().map;
    assert_eq!(v(&m, "max_payload"), &Value::Int(2048));
    let Value::Map(b) = v(&m, "block") else { panic!() };
    assert_eq!(v(b, "inner"), &Value::Bool(true));
    std::fs::write(dir.join("loop.conf"), "include loop.conf\n").unwrap();
    let e = parse_file(&dir.join("loop.conf")).unwrap_err();
    assert!(e.msg.contains("nested too deeply"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_have_line_and_column() {
    let e = err("port: 4222\nserver_name: my server\n");
    assert_eq!((e.pos.line, e.pos.col), (2, 17));
    assert!(e.msg.contains("got 's'"), "{e}");
    let e = err("a {\n  b: 1\n");
    assert!(e.msg.contains("missing '}'"), "{e}");
    let e = err("port: $NOPE_NOT_SET_ANYWHERE\n");
    assert_eq!(
        e.msg,
        "variable reference for 'NOPE_NOT_SET_ANYWHERE' on line 1 can not be found"
    );
    let e = err("x: \"open\n");
    assert_eq!((e.pos.line, e.pos.col), (1, 4));
    let e = err("x: [1, 2\n");
    assert!(e.msg.contains("missing ']'"), "{e}");
    let e = err("lonely\n");
    assert!(e.msg.contains("\"lonely\" has no value"), "{e}");
    assert!(e.to_string().starts_with("test.conf:1:1: "), "{e}");
}

/// A parse error as text with its line (errors hold `Rc`s: not `Send`).
#[derive(Debug, PartialEq)]
struct SentError {
    msg: String,
    line: u32,
    text: String,
}

/// Parses `text` on a thread with a 1 MiB stack (half a Rust thread's
/// default, where `$SYS` RELOAD runs).
fn parse_on_small_stack(text: String) -> Result<usize, SentError> {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            parse_str(&text, Path::new("deep.conf"))
                .map(|p| p.map.entries.len())
                .map_err(|e| SentError {
                    msg: e.msg.clone(),
                    line: e.pos.line,
                    text: e.to_string(),
                })
        })
        .unwrap()
        .join()
        .expect("the parser must not overflow its stack")
}

#[test]
fn nesting_is_limited_with_an_error_naming_the_key() {
    for (open, close) in [("[", "]"), ("{x: ", "}"), ("[{y: ", "}]")] {
        let deep = format!("a = {}1{}\n", open.repeat(20_000), close.repeat(20_000));
        let e = parse_on_small_stack(deep).expect_err("20,000 levels are refused");
        assert!(e.msg.contains("nested more than 128 deep"), "{e:?}");
        assert!(e.text.starts_with("deep.conf:1:"), "{e:?}");
        assert!(e.msg.contains("key \""), "{e:?}");
    }
    // Unclosed, as a fuzzer or a truncated file would leave it.
    let e = parse_on_small_stack(format!("a = {}", "[".repeat(1_000_000))).unwrap_err();
    assert!(e.msg.contains("nested more than"), "{e:?}");
    // At the limit it parses.
    let ok = format!("a = {}1{}\n", "[".repeat(128), "]".repeat(128));
    assert_eq!(parse_on_small_stack(ok), Ok(1));
}

#[test]
fn variables_and_includes_cannot_stack_nesting_past_the_limit() {
    let d = 100;
    let text = format!(
        "A = {}1{}\nB = {}$A{}\n",
        "[".repeat(d),
        "]".repeat(d),
        "[".repeat(d),
        "]".repeat(d)
    );
    let e = parse_on_small_stack(text).unwrap_err();
    assert!(e.msg.starts_with("variable 'A': blocks and arrays nested"), "{e:?}");
    assert_eq!(e.line, 2);

    let dir = std::env::temp_dir().join(format!("petrel-conf-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inner.conf"),
        format!("x = {}1{}\n", "[".repeat(d), "]".repeat(d)),
    )
    .unwrap();
    let outer = format!("{}include inner.conf{}\n", "b {".repeat(d), "}".repeat(d));
    std::fs::write(dir.join("outer.conf"), outer).unwrap();
    let e = parse_file(&dir.join("outer.conf")).unwrap_err();
    assert!(e.pos.file.ends_with("inner.conf"), "{e}");
    assert!(
        e.msg.contains("key \"x\": blocks and arrays nested more than 128 deep"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Applies `text`: the options and the notices.
fn applied(text: &str) -> (crate::options::Options, super::read::Notices) {
    let parsed = super::parse::parse_str(text, Path::new("t.conf")).unwrap();
    let mut o = crate::options::Options::default();
    let notices = super::options::apply(&mut o, &parsed).unwrap();
    (o, notices)
}

#[test]
fn connect_error_reports_decide_which_dial_errors_are_errors() {
    let (o, _) = applied("");
    assert!(o.report_connect_error(false, 1));
    assert!(!o.report_connect_error(false, 2));
    assert!(o.report_connect_error(false, 3600));
    assert!(o.report_connect_error(true, 2), "every reconnect error by default");
    let (o, _) = applied("connect_error_reports: 5\nreconnect_error_reports: 3\n");
    assert!(o.report_connect_error(false, 10) && !o.report_connect_error(false, 11));
    assert!(o.report_connect_error(true, 6) && !o.report_connect_error(true, 7));
    // 0 is the default once the baseline applies, as at start-up.
    let (mut o, _) = applied("connect_error_reports: 0\nreconnect_error_reports: 0\nmax_closed_clients: 0\n");
    o.apply_baseline();
    assert_eq!(o.connect_error_reports, 3600, "0 is the default");
    assert_eq!(o.reconnect_error_reports, 1, "0 is the default");
    assert_eq!(o.max_closed_clients, 10_000, "0 is the default");
}

#[test]
fn keys_without_effect_are_named_in_a_warning() {
    let (o, n) = applied("store_dir: \"/tmp/x\"\nlogtime_utc: true\nmax_closed_clients: 7\n");
    assert!(o.logtime_utc);
    assert_eq!(o.max_closed_clients, 7);
    assert_eq!(n.without_effect.len(), 1, "{:?}", n.without_effect);
    assert_eq!(
        n.without_effect[0].to_string(),
        "t.conf:1:1: \"store_dir\" has no effect in petrel: JetStream is not supported"
    );
    assert!(n.warnings.is_empty(), "not an error under -t");
}
