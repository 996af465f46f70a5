//! Feeds arbitrary bytes to the JWT decoders, the creds/decorated-file
//! readers, the nonce check and the CONNECT JSON parser: errors are fine,
//! panics are not. A JWT found in a CONNECT document is decoded too, so the
//! fuzzer can reach the decoders through the path a client takes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel::auth::jwt;
use petrel::proto::connect::ClientOpts;

fn tokens(text: &str) {
    let _ = jwt::decode_user(text);
    let _ = jwt::decode_account(text);
    let _ = jwt::decode_operator(text);
    let _ = jwt::decode_generic(text);
}

fuzz_target!(|data: &[u8]| {
    if let Some(opts) = ClientOpts::from_json(data) {
        if let Some(token) = opts.jwt.as_deref() {
            tokens(token);
        }
        if let (Some(nkey), Some(sig)) = (opts.nkey.as_deref(), opts.sig.as_deref()) {
            let _ = jwt::verify_nonce(nkey, b"nonce-from-info", sig);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    tokens(text);
    if let Some(token) = jwt::extract_jwt(text) {
        tokens(token);
    }
    if let Ok((token, seed)) = jwt::parse_creds(text) {
        tokens(&token);
        let _ = jwt::verify_nonce(&seed, text.as_bytes(), &token);
    }
});
