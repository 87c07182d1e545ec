use super::*;
use http::HeaderValue;
use ipnet::IpNet;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(list: &[&str]) -> TrustedProxies {
    TrustedProxies(IpSet::parse(list.iter().copied()).unwrap())
}

const XFF: TrustedHeader = TrustedHeader::XForwardedFor;
const FWD: TrustedHeader = TrustedHeader::Forwarded;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn client_of(peer: &str, pairs: &[(&'static str, &str)], proxies: &[&str], header: TrustedHeader) -> Option<IpAddr> {
    client_address(ip(peer), &headers(pairs), &trusted(proxies), header).ok().map(|a| a.client.ip())
}

#[test]
fn untrusted_peer_cannot_spoof_its_address() {
    let h = headers(&[("x-forwarded-for", "127.0.0.2")]);
    let got = client_address(ip("198.51.100.9"), &h, &trusted(&["10.0.0.0/8"]), XFF).unwrap();
    assert_eq!(got.client, ip("198.51.100.9"));
    assert_eq!(got.note, None);
}

#[test]
fn without_trusted_proxies_headers_are_ignored() {
    let h = headers(&[("x-forwarded-for", "127.0.0.2")]);
    let got = client_address(ip("10.0.0.1"), &h, &TrustedProxies::default(), XFF).unwrap();
    assert_eq!(got.client, ip("10.0.0.1"));
}

#[test]
fn walks_right_to_left_through_two_trusted_hops() {
    let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5"), ("x-forwarded-for", "10.0.0.7")]);
    let got = client_address(ip("10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), XFF).unwrap();
    assert_eq!(got.client, ip("203.0.113.5"));
    assert_eq!(got.peer, ip("10.0.0.1"));
    assert_eq!(got.note, None);
}

#[test]
fn all_trusted_hops_give_the_leftmost() {
    assert_eq!(
        client_of("10.0.0.1", &[("x-forwarded-for", "10.0.0.9, 10.0.0.8")], &["10.0.0.0/8"], XFF),
        Some(ip("10.0.0.9"))
    );
}

#[test]
fn forwarded_with_quoted_ipv6_and_port() {
    let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3")]);
    let got = client_address(ip("::ffff:10.0.0.1"), &h, &trusted(&["10.0.0.0/8"]), FWD).unwrap();
    assert_eq!(got.client, ip("2001:db8::1"));
    assert_eq!(got.peer, ip("10.0.0.1"));
}

#[test]
fn an_unreadable_hop_where_the_client_should_be_refuses_the_call() {
    let proxies = &["10.0.0.0/8"];
    for (header, value, problem) in [
        (FWD, "for=_hidden, for=unknown", HopProblem::Opaque),
        (FWD, "for=unknown:4711", HopProblem::Opaque),
        (FWD, "for", HopProblem::Unparsable),
        (FWD, "proto=https", HopProblem::NoFor),
        (FWD, "for=\"10.0.0.2", HopProblem::Unparsable),
        (XFF, "203.0.113.5, not-an-ip", HopProblem::Unparsable),
        (XFF, "203.0.113.5, unknown", HopProblem::Opaque),
    ] {
        let name = if header == FWD { "forwarded" } else { "x-forwarded-for" };
        let got = client_address(ip("10.0.0.1"), &headers(&[(name, value)]), &trusted(proxies), header);
        assert_eq!(got.map_err(|e| e.problem), Err(problem), "{value}");
    }
}

/// The examples the review found: junk left of the address the proxy appended made the
/// whole header unparsable and the proxy's own address was used.
#[test]
fn junk_left_of_the_appended_hop_changes_nothing() {
    let proxy = &["127.0.0.1"];
    assert_eq!(client_of("127.0.0.1", &[("x-forwarded-for", "x, 198.51.100.7")], proxy, XFF), Some(ip("198.51.100.7")));
    assert_eq!(
        client_of("127.0.0.1", &[("x-forwarded-for", "unknown-junk, 203.0.113.9")], proxy, XFF),
        Some(ip("203.0.113.9"))
    );
    assert_eq!(
        client_of("127.0.0.1", &[("forwarded", "for=junk, for=198.51.100.7")], proxy, FWD),
        Some(ip("198.51.100.7"))
    );
    // Non-ASCII text left of the appended hop is never read either.
    let mut h = HeaderMap::new();
    h.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").unwrap());
    assert_eq!(client_address(ip("127.0.0.1"), &h, &trusted(proxy), XFF).unwrap().client, ip("198.51.100.7"));
}

#[test]
fn xff_with_ports_and_brackets() {
    let h = &[("x-forwarded-for", "[2001:db8::7]:80, 192.0.2.1:5000")];
    assert_eq!(client_of("10.0.0.1", h, &["10.0.0.0/8", "192.0.2.1"], XFF), Some(ip("2001:db8::7")));
}

#[test]
fn only_the_trusted_header_is_read() {
    // The load balancer appended to X-Forwarded-For; the caller wrote its own Forwarded.
    let h = &[("forwarded", "for=198.51.100.2"), ("x-forwarded-for", "203.0.113.7")];
    let lb = &["10.0.0.0/8"];
    assert_eq!(client_of("10.0.0.1", h, lb, XFF), Some(ip("203.0.113.7")));
    assert_eq!(client_of("10.0.0.1", h, lb, FWD), Some(ip("198.51.100.2")));
    // The trusted header missing: the peer, whatever the other one says.
    let got = client_address(ip("10.0.0.1"), &headers(&[("forwarded", "for=junk")]), &trusted(lb), XFF).unwrap();
    assert_eq!(got.client, ip("10.0.0.1"));
    assert!(got.note.unwrap().contains("Forwarded ignored"));
}

#[test]
fn ipv6_accounting_counts_a_network_and_leaves_ipv4_alone() {
    let a = ClientIp::new(ip("2001:db8:1:2:aaaa::1"));
    let b = ClientIp::new(ip("2001:db8:1:2:bbbb::9"));
    let c = ClientIp::new(ip("2001:db8:1:3::1"));
    assert_eq!(a.accounting_unit(64), b.accounting_unit(64));
    assert_ne!(a.accounting_unit(64), c.accounting_unit(64));
    assert_eq!(a.accounting_unit(64).ip(), ip("2001:db8:1:2::"));
    assert_ne!(a.accounting_unit(128), b.accounting_unit(128));
    assert_eq!(a.accounting_unit(0).ip(), ip("::"));
    let v4 = ClientIp::new(ip("::ffff:192.0.2.7"));
    assert_eq!(v4.accounting_unit(64).ip(), ip("192.0.2.7"));
}

// ---- The property: the answer equals a small reference model's, or the call is refused.

/// What a generated element means, for the model.
#[derive(Debug, Clone)]
enum Meaning {
    /// List noise: nothing between two commas.
    Empty,
    Addr(IpAddr),
    /// Something that must be refused if it has to be read.
    Unreadable,
}

/// The reference model, written from the rule and not from the implementation: walk
/// from the right, skip empties and trusted addresses, stop at the first untrusted
/// address; an unreadable element on the way refuses; all trusted gives the leftmost
/// trusted; nothing gives the peer.
fn model(peer: IpAddr, proxies: &[IpNet], elements: &[Meaning]) -> Option<IpAddr> {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    let is_trusted = |ip: IpAddr| proxies.iter().any(|net| net.contains(&canon(ip)));
    if !is_trusted(peer) {
        return Some(canon(peer));
    }
    let mut leftmost = None;
    for meaning in elements.iter().rev() {
        match meaning {
            Meaning::Empty => {}
            Meaning::Addr(ip) if is_trusted(*ip) => leftmost = Some(canon(*ip)),
            Meaning::Addr(ip) => return Some(canon(*ip)),
            Meaning::Unreadable => return None,
        }
    }
    Some(leftmost.unwrap_or(canon(peer)))
}

/// Addresses from a small pool, so that generated proxies and hops overlap often.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([10, 0, a, b])),
        (0u8..4).prop_map(|b| IpAddr::from([198, 51, 100, b])),
        (0u8..4).prop_map(|b| IpAddr::from([127, 0, 0, b])),
        (0u16..4, 0u16..4).prop_map(|(a, b)| IpAddr::from([0x2001, 0xdb8, 0, a, 0, 0, 0, b])),
        (0u8..4).prop_map(|b| IpAddr::V6(std::net::Ipv4Addr::from([10, 0, 0, b]).to_ipv6_mapped())),
    ]
}

fn proxies() -> impl Strategy<Value = Vec<IpNet>> {
    let net = prop_oneof![
        Just("10.0.0.0/8".parse::<IpNet>().unwrap()),
        Just("10.0.1.0/24".parse().unwrap()),
        Just("127.0.0.1/32".parse().unwrap()),
        Just("198.51.100.0/30".parse().unwrap()),
        Just("2001:db8::/48".parse().unwrap()),
        Just("2001:db8:0:1::/64".parse().unwrap()),
    ];
    proptest::collection::vec(net, 0..3)
}

/// How an address is written: with or without port, brackets, quotes, case of hex.
fn spelled(ip: IpAddr, style: u8, header: TrustedHeader) -> String {
    let node = match (ip, style % 4) {
        (IpAddr::V4(v4), 0 | 1) => v4.to_string(),
        (IpAddr::V4(v4), _) => format!("{v4}:{}", 1000 + u16::from(style)),
        (IpAddr::V6(v6), 0) if header == TrustedHeader::XForwardedFor => v6.to_string().to_uppercase(),
        (IpAddr::V6(v6), 0 | 1) => format!("[{v6}]"),
        (IpAddr::V6(v6), _) => format!("[{}]:{}", v6.to_string().to_uppercase(), 2000 + u16::from(style)),
    };
    match header {
        TrustedHeader::XForwardedFor => node,
        TrustedHeader::Forwarded => {
            let quoted = node.contains([':', '[']) || style >= 4;
            let value = if quoted { format!("\"{node}\"") } else { node };
            let key = if style % 2 == 0 { "for" } else { "FOR" };
            match style % 3 {
                0 => format!("{key}={value}"),
                1 => format!("proto=https;{key}={value}"),
                _ => format!("{key}={value};by=_lb;host=\"a.example\""),
            }
        }
    }
}

/// Text that must be refused where it matters, for either header.
fn unreadable(header: TrustedHeader) -> impl Strategy<Value = String> {
    let common = prop_oneof![
        Just("unknown".to_owned()),
        Just("UNKNOWN".to_owned()),
        Just("unknown-junk".to_owned()),
        Just("x".to_owned()),
        Just("1.2.3".to_owned()),
        Just("999.1.1.1".to_owned()),
        Just("1.2.3.4:99999".to_owned()),
        Just("[::1".to_owned()),
        Just("fe80::1%eth0".to_owned()),
        Just("_hidden".to_owned()),
        Just("_hidden:_port".to_owned()),
        // No digits, no hex letters, no `=` or `:`: never an address or a `for=` pair.
        "[g-z_\";. \\[\\]]{1,12}".prop_filter("not empty", |s| !s.trim().is_empty()),
    ];
    common.prop_map(move |text| match header {
        TrustedHeader::XForwardedFor => text,
        // In `Forwarded`, junk appears as the `for` value, as a bare word, or as an
        // element that names no client.
        TrustedHeader::Forwarded => match text.len() % 3 {
            0 => format!("for={text}"),
            1 => format!("proto=https;by={text}"),
            _ => text,
        },
    })
}

fn element(header: TrustedHeader) -> impl Strategy<Value = (Meaning, String)> {
    prop_oneof![
        1 => Just((Meaning::Empty, String::new())),
        6 => (address(), 0u8..8).prop_map(move |(ip, style)| (Meaning::Addr(ip), spelled(ip, style, header))),
        2 => unreadable(header).prop_map(|text| (Meaning::Unreadable, text)),
    ]
}

/// One generated situation: which header is trusted, the peer, the trusted proxies, the
/// elements (meaning and text), where the lines are cut, and the spacing after commas.
#[derive(Debug, Clone)]
struct Case {
    header: TrustedHeader,
    peer: IpAddr,
    proxies: Vec<IpNet>,
    elements: Vec<(Meaning, String)>,
    cuts: Vec<usize>,
    spacing: u8,
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![Just(XFF), Just(FWD)].prop_flat_map(|header| {
        (
            address(),
            proxies(),
            proptest::collection::vec(element(header), 0..6),
            proptest::collection::vec(0usize..6, 0..3),
            0u8..4,
        )
            .prop_map(move |(peer, proxies, elements, cuts, spacing)| Case {
                header,
                peer,
                proxies,
                elements,
                cuts,
                spacing,
            })
    })
}

/// Renders elements into header lines: split into several lines at `cuts`, elements
/// joined by commas with random spacing.
fn render(elements: &[(Meaning, String)], cuts: &[usize], spacing: u8) -> Vec<String> {
    let sep = match spacing {
        0 => ",",
        1 => ", ",
        2 => " ,\t",
        _ => " , ",
    };
    let mut lines = vec![Vec::new()];
    for (index, (_, text)) in elements.iter().enumerate() {
        if cuts.contains(&index) && !lines.last().is_some_and(Vec::is_empty) {
            lines.push(Vec::new());
        }
        lines.last_mut().expect("one line at least").push(text.as_str());
    }
    lines.into_iter().map(|parts| parts.join(sep)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_client_is_the_models_answer_or_the_call_is_refused(
        case in case(),
        other in proptest::collection::vec(element(XFF), 0..3),
    ) {
        let Case { header, peer, proxies: nets, elements, cuts, spacing } = case;
        let lines = render(&elements, &cuts, spacing);
        let mut map = HeaderMap::new();
        for line in &lines {
            map.append(header.name(), HeaderValue::from_str(line).unwrap());
        }
        // The other header says something else; it must never matter.
        let other_name = if header == XFF { "forwarded" } else { "x-forwarded-for" };
        let other_text = render(&other, &[], 1).concat();
        if !other_text.is_empty() {
            map.append(other_name, HeaderValue::from_str(&other_text).unwrap());
        }
        let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
        let set = TrustedProxies(IpSet::parse(texts.iter().map(String::as_str)).unwrap());
        let meanings: Vec<Meaning> = elements.iter().map(|(m, _)| m.clone()).collect();
        let expected = model(peer, &nets, &meanings);
        let got = client_address(peer, &map, &set, header).ok().map(|a| a.client.ip());
        prop_assert_eq!(got, expected, "lines {:?}, proxies {:?}, peer {}", lines, nets, peer);
    }

    /// Nothing a caller writes left of the first untrusted hop changes the answer.
    #[test]
    fn text_left_of_the_client_never_matters(
        junk in "[ -~]{0,24}",
        client in address().prop_filter("untrusted", |ip| !normalize(*ip).to_string().starts_with("10.")),
        style in 0u8..8,
        header in prop_oneof![Just(XFF), Just(FWD)],
    ) {
        let set = TrustedProxies(IpSet::parse(["10.0.0.0/8"]).unwrap());
        let appended = spelled(client, style, header);
        let mut map = HeaderMap::new();
        let proxy = spelled(ip("10.0.0.9"), style, header);
        map.append(header.name(), HeaderValue::from_str(&format!("{junk}, {appended}, {proxy}")).unwrap());
        let got = client_address(ip("10.0.0.1"), &map, &set, header).map(|a| a.client.ip());
        prop_assert_eq!(got, Ok(normalize(client)));
    }
}
