//! The response scrubber, streamed in arbitrary chunk splits: however the stream is cut, an
//! injected value present in the input never survives in the output (raw, percent-encoded
//! or JSON-escaped), and a stream without values passes through byte for byte.
#![no_main]
use bytes::Bytes;
use flowgate::secrets::{Scrubber, SecretValue};
use http_body::Frame;
use http_body_util::BodyExt as _;
use http_body_util::StreamBody;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "s3cr3t/Val+ue";

fn scrub(scrubber: &Scrubber, chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let frames = chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
    let body = scrubber.wrap(StreamBody::new(futures_util::stream::iter(frames)));
    futures_executor::block_on(body.collect()).unwrap().to_bytes().to_vec()
}

fuzz_target!(|data: &[u8]| {
    // First byte: where to put the secret; the rest: cut points and filler.
    let Some((&at, rest)) = data.split_first() else { return };
    let mut input = rest.to_vec();
    let spot = usize::from(at) % (input.len() + 1);
    let form: &[u8] = match at % 3 {
        0 => SECRET.as_bytes(),
        1 => b"s3cr3t%2FVal%2Bue",
        _ => b"s3cr3t\\/Val+ue",
    };
    input.splice(spot..spot, form.iter().copied());
    // Cut the stream where the filler bytes say.
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, b) in rest.iter().enumerate() {
        let cut = (start + usize::from(*b) % 7 + 1).min(input.len());
        if cut > start && i % 2 == 0 {
            chunks.push(input[start..cut].to_vec());
            start = cut;
        }
    }
    chunks.push(input[start..].to_vec());

    let scrubber = Scrubber::new([SecretValue::new(SECRET.to_owned())]);
    let out = scrub(&scrubber, chunks.clone());
    assert!(!out.windows(form.len()).any(|w| w == form), "a {form:?} survived");

    let none = Scrubber::new(std::iter::empty());
    assert_eq!(scrub(&none, chunks), input);
});
