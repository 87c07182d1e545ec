//! The proxy's client-certificate header (Envoy XFCC and URL-encoded PEM): never panics,
//! and what a caller writes before the last element cannot change the certificate read:
//! the answer for `EARLIER,LAST` is the answer for `LAST` alone.
#![no_main]
use flowgate::tls::forwarded::{ForwardedCertFormat, parse_forwarded_cert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [ForwardedCertFormat::Xfcc, ForwardedCertFormat::Pem] {
        let _ = parse_forwarded_cert(format, std::iter::once(data));
    }
    // Split at the first newline: an earlier element (no quotes, so it ends at its comma)
    // and the last one.
    let Some(cut) = data.iter().position(|b| *b == b'\n') else { return };
    let (earlier, last) = (&data[..cut], &data[cut + 1..]);
    if std::str::from_utf8(earlier).is_err() || earlier.contains(&b'"') || earlier.contains(&b',') {
        return;
    }
    let mut joined = earlier.to_vec();
    joined.push(b',');
    joined.extend_from_slice(last);
    let alone = parse_forwarded_cert(ForwardedCertFormat::Xfcc, std::iter::once(last)).ok().flatten();
    let after = parse_forwarded_cert(ForwardedCertFormat::Xfcc, std::iter::once(&joined[..]));
    if let Some(alone) = alone {
        assert_eq!(after.ok().flatten(), Some(alone), "an earlier element changed the certificate read");
    }
});
