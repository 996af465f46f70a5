// The `route` fuzz target's property, shared with the corpus replay in
// tests/fuzz_corpus.rs (both `include!` this file): route protocol bytes
// are parsed in both route forms (with and without the account) and as a
// leaf node connection's protocol, every
// operation parsed consumes input, and interest and messages written back
// with petrel's encoders parse to the same operation. Errors are fine;
// panics are not.

use petrel::proto::encode::{self, ServerMsgForm};
use petrel::proto::route::{self as route_proto, RouteOp, RouteParsed};

fn route_check(data: &[u8]) {
    for with_account in [true, false] {
        let mut used = 0;
        while let Ok(RouteParsed::Op(op, n)) = route_proto::parse(&data[used..], with_account, 256, 4096) {
            assert!(n > 0, "an operation consumes input");
            used += n;
            let mut out = Vec::new();
            match &op {
                RouteOp::Sub { account, subject, queue, .. } => {
                    encode::route_sub(&mut out, *account, subject, *queue);
                }
                RouteOp::Unsub { account, subject, queue, .. } => {
                    encode::route_unsub(&mut out, *account, subject, *queue);
                }
                RouteOp::Msg(m) => {
                    let form = ServerMsgForm::Route(m.account);
                    encode::server_msg(&mut out, form, m.subject, m.reply, &m.queues, m.header_len, m.message);
                }
                _ => continue,
            }
            // A leaf form re-encodes as a route form: compare what routes carry.
            let again = route_proto::parse(&out, with_account, usize::MAX, usize::MAX);
            match (&op, again) {
                (RouteOp::Sub { account, subject, queue, .. }, Ok(RouteParsed::Op(RouteOp::Sub { account: a, subject: s, queue: q, .. }, _))) => {
                    assert_eq!((account, subject, queue), (&a, &s, &q));
                }
                (RouteOp::Unsub { account, subject, queue, .. }, Ok(RouteParsed::Op(RouteOp::Unsub { account: a, subject: s, queue: q, .. }, _))) => {
                    assert_eq!((account, subject, queue), (&a, &s, &q));
                }
                (RouteOp::Msg(m), Ok(RouteParsed::Op(RouteOp::Msg(m2), _))) => {
                    assert_eq!((m.account, m.subject, m.reply, &m.queues, m.header_len, m.message),
                               (m2.account, m2.subject, m2.reply, &m2.queues, m2.header_len, m2.message));
                }
                (op, again) => panic!("{op:?} re-encoded as {:?} parsed as {again:?}", String::from_utf8_lossy(&out)),
            }
        }
    }
    leaf_check(data);
}

/// The same bytes as a leaf connection's protocol: what parses re-encodes
/// with the leaf encoders to the same operation.
fn leaf_check(data: &[u8]) {
    let mut used = 0;
    while let Ok(RouteParsed::Op(op, n)) = route_proto::parse_leaf(&data[used..], 256, 4096) {
        assert!(n > 0, "an operation consumes input");
        used += n;
        let mut out = Vec::new();
        match &op {
            RouteOp::Sub { subject, queue, .. } => encode::leaf_sub(&mut out, subject, *queue),
            RouteOp::Unsub { subject, queue, .. } => encode::leaf_unsub(&mut out, subject, *queue),
            RouteOp::Msg(m) => {
                encode::server_msg(&mut out, ServerMsgForm::Leaf, m.subject, m.reply, &m.queues, m.header_len, m.message)
            }
            _ => continue,
        }
        let again = route_proto::parse_leaf(&out, usize::MAX, usize::MAX);
        match (&op, again) {
            (RouteOp::Sub { subject, queue, .. }, Ok(RouteParsed::Op(RouteOp::Sub { subject: s, queue: q, .. }, _))) => {
                assert_eq!((subject, queue), (&s, &q));
            }
            (RouteOp::Unsub { subject, queue, .. }, Ok(RouteParsed::Op(RouteOp::Unsub { subject: s, queue: q, .. }, _))) => {
                assert_eq!((subject, queue), (&s, &q));
            }
            (RouteOp::Msg(m), Ok(RouteParsed::Op(RouteOp::Msg(m2), _))) => {
                assert_eq!((m.subject, m.reply, &m.queues, m.header_len, m.message),
                           (m2.subject, m2.reply, &m2.queues, m2.header_len, m2.message));
            }
            (op, again) => panic!("leaf {op:?} re-encoded as {:?} parsed as {again:?}", String::from_utf8_lossy(&out)),
        }
    }
}
