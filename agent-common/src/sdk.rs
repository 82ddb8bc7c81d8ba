//! Which client made a metadata request, as a small bounded id: the kernel recognises the
//! `User-Agent` header's leading product token (`dfa::headers`) and only this id crosses to
//! userspace, whatever the header holds.
//!
//! The version counts only where it decides the family (Java `1.` vs `2.`, JavaScript `2.` vs
//! `3.`). Where each SDK sends which string is documented next to its emulation in
//! `tests/clients/sdk_user_agents.py`, with the SDK source file it comes from.

/// The SDK family of a request. `None`: the request carried no `User-Agent`; `Other`: one that
/// names no family below (or one the kernel could not read whole).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sdk {
    None = 0,
    Other = 1,
    JavaV1 = 2,
    JavaV2 = 3,
    Botocore = 4,
    GoV1 = 5,
    GoV2 = 6,
    JsV2 = 7,
    JsV3 = 8,
    Rust = 9,
    Dotnet = 10,
    Ruby = 11,
    Php = 12,
    Cpp = 13,
    PythonHttp = 14,
    GoHttp = 15,
    JavaHttp = 16,
    Curl = 17,
}

impl Sdk {
    /// Every value, in id order (the label's whole range).
    pub const ALL: [Sdk; 18] = [
        Sdk::None,
        Sdk::Other,
        Sdk::JavaV1,
        Sdk::JavaV2,
        Sdk::Botocore,
        Sdk::GoV1,
        Sdk::GoV2,
        Sdk::JsV2,
        Sdk::JsV3,
        Sdk::Rust,
        Sdk::Dotnet,
        Sdk::Ruby,
        Sdk::Php,
        Sdk::Cpp,
        Sdk::PythonHttp,
        Sdk::GoHttp,
        Sdk::JavaHttp,
        Sdk::Curl,
    ];

    /// An id from the kernel; anything out of range (a kernel bug) reads as `Other`.
    pub const fn from_u8(v: u8) -> Self {
        if (v as usize) < Self::ALL.len() { Self::ALL[v as usize] } else { Self::Other }
    }

    /// The `sdk` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Other => "other",
            Self::JavaV1 => "java_v1",
            Self::JavaV2 => "java_v2",
            Self::Botocore => "botocore",
            Self::GoV1 => "go_v1",
            Self::GoV2 => "go_v2",
            Self::JsV2 => "js_v2",
            Self::JsV3 => "js_v3",
            Self::Rust => "rust",
            Self::Dotnet => "dotnet",
            Self::Ruby => "ruby",
            Self::Php => "php",
            Self::Cpp => "cpp",
            Self::PythonHttp => "python_http",
            Self::GoHttp => "go_http",
            Self::JavaHttp => "java_http",
            Self::Curl => "curl",
        }
    }
}

/// Leading product tokens (lower case: the kernel compares case-insensitively) and the family
/// each names. A value that starts with one of them is that family; any other value is `Other`.
/// No entry is a prefix of another (checked when the table is built).
pub const PRODUCTS: &[(&[u8], Sdk)] = &[
    // Java v1 and v2 share the product name; the major version tells them apart.
    (b"aws-sdk-java/1.", Sdk::JavaV1),
    (b"aws-sdk-java/2.", Sdk::JavaV2),
    // botocore itself, and what is built on it and names itself instead (boto3 sessions, the
    // AWS CLI v1 and v2): all refresh with botocore's RefreshableCredentials.
    (b"botocore/", Sdk::Botocore),
    (b"boto3/", Sdk::Botocore),
    (b"aws-cli/", Sdk::Botocore),
    (b"aws-sdk-go/", Sdk::GoV1),
    (b"aws-sdk-go-v2/", Sdk::GoV2),
    (b"aws-sdk-js/2.", Sdk::JsV2),
    (b"aws-sdk-nodejs/", Sdk::JsV2),
    (b"aws-sdk-js/3.", Sdk::JsV3),
    (b"aws-sdk-rust/", Sdk::Rust),
    // aws-sdk-dotnet-coreclr, -netstandard, -45, -35, …
    (b"aws-sdk-dotnet", Sdk::Dotnet),
    // aws-sdk-ruby3, aws-sdk-ruby2, aws-sdk-ruby
    (b"aws-sdk-ruby", Sdk::Ruby),
    (b"aws-sdk-php/", Sdk::Php),
    (b"aws-sdk-cpp/", Sdk::Cpp),
    // HTTP libraries that SDK code paths (or hand-rolled clients) send their own name from.
    (b"python-urllib3/", Sdk::PythonHttp),
    (b"python-requests/", Sdk::PythonHttp),
    (b"python-urllib/", Sdk::PythonHttp),
    (b"go-http-client/", Sdk::GoHttp),
    (b"apache-httpclient/", Sdk::JavaHttp),
    (b"okhttp/", Sdk::JavaHttp),
    (b"java-http-client/", Sdk::JavaHttp),
    // HttpURLConnection's default
    (b"java/", Sdk::JavaHttp),
    (b"curl/", Sdk::Curl),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dfa::{LARGE_STATES, STRIDE, headers};

    #[test]
    fn ids_round_trip_and_labels_are_distinct() {
        for (i, sdk) in Sdk::ALL.iter().enumerate() {
            assert_eq!(*sdk as usize, i);
            assert_eq!(Sdk::from_u8(i as u8), *sdk);
        }
        let mut labels: Vec<_> = Sdk::ALL.iter().map(|s| s.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Sdk::ALL.len());
        assert_eq!(Sdk::from_u8(200), Sdk::Other);
    }

    #[test]
    fn every_family_but_none_and_other_has_a_product() {
        for sdk in &Sdk::ALL[2..] {
            assert!(PRODUCTS.iter().any(|(_, s)| s == sdk), "{sdk:?}");
        }
        for (token, _) in PRODUCTS {
            assert_eq!(token.to_ascii_lowercase(), *token, "lower case");
        }
    }

    /// `User-Agent` values as the SDKs and libraries send them (the SDK source each comes from is
    /// cited in tests/clients/sdk_user_agents.py), and the family each must give.
    const SENT: &[(&str, Sdk)] = &[
        (
            "aws-sdk-java/1.12.780 Linux/6.1.0-18-cloud-amd64 OpenJDK_64-Bit_Server_VM/17.0.10+7 java/17.0.10 en_US",
            Sdk::JavaV1,
        ),
        (
            "aws-sdk-java/2.25.60 Linux/6.1.0-18-cloud-amd64 OpenJDK_64-Bit_Server_VM/17.0.10+7 Java/17.0.10 vendor/Debian",
            Sdk::JavaV2,
        ),
        ("Botocore/1.44.8 Python/3.11.2 Linux/6.18.0", Sdk::Botocore),
        ("Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1 lang/python#3.11.2", Sdk::Botocore),
        ("aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.debian.12", Sdk::Botocore),
        ("aws-sdk-go/1.55.5 (go1.22.5; linux; amd64)", Sdk::GoV1),
        (
            "aws-sdk-go-v2/1.30.3 ua/2.1 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 ft/ec2-imds",
            Sdk::GoV2,
        ),
        ("aws-sdk-nodejs/2.1691.0 linux/v20.11.1", Sdk::JsV2),
        ("aws-sdk-js/2.1691.0 promise", Sdk::JsV2),
        ("aws-sdk-js/3.620.0 ua/2.1 os/linux#6.1.0 lang/js md/nodejs#20.11.1", Sdk::JsV3),
        ("aws-sdk-rust/1.3.3 os/linux lang/rust/1.80.0", Sdk::Rust),
        (
            "aws-sdk-dotnet-coreclr/3.7.400.4 aws-sdk-dotnet-core/3.7.400.4 .NET_Core/8.0.6 OS/Linux ClientAsync",
            Sdk::Dotnet,
        ),
        ("aws-sdk-dotnet-45/3.3.0.0 .NET_Runtime/4.0", Sdk::Dotnet),
        ("aws-sdk-ruby3/3.201.3", Sdk::Ruby),
        ("aws-sdk-ruby2/2.11.632", Sdk::Ruby),
        ("aws-sdk-php/3.316.2 GuzzleHttp/7", Sdk::Php),
        ("aws-sdk-cpp/1.11.350 Linux/6.1.0-18-cloud-amd64 x86_64 GCC/12.2.0", Sdk::Cpp),
        ("python-urllib3/2.2.2", Sdk::PythonHttp),
        ("python-requests/2.32.3", Sdk::PythonHttp),
        ("Python-urllib/3.11", Sdk::PythonHttp),
        ("Go-http-client/1.1", Sdk::GoHttp),
        ("Apache-HttpClient/4.5.14 (Java/17.0.10)", Sdk::JavaHttp),
        ("okhttp/4.12.0", Sdk::JavaHttp),
        ("Java/17.0.10", Sdk::JavaHttp),
        ("Java-http-client/17.0.10", Sdk::JavaHttp),
        ("curl/7.88.1", Sdk::Curl),
        // Names no family, or only nearly.
        ("Mozilla/5.0 (X11; Linux x86_64)", Sdk::Other),
        ("Wget/1.21.3", Sdk::Other),
        ("boto/2.49.0 Python/2.7", Sdk::Other),
        ("aws-sdk-java/3.0.0", Sdk::Other),
        ("aws-sdk-java/1", Sdk::Other),
        ("aws-sdk-js/4.0.0", Sdk::Other),
        ("aws-sdk-go", Sdk::Other),
        ("aws-sdk-go-v3/1.0", Sdk::Other),
        ("javascript/1.0", Sdk::Other),
        ("curl", Sdk::Other),
        ("", Sdk::Other),
        ("  \t", Sdk::Other),
        ("x aws-sdk-java/1.12.0", Sdk::Other),
    ];

    fn request(headers: &str) -> Vec<u8> {
        format!(
            "GET /latest/meta-data/iam/security-credentials/r HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
        )
        .into_bytes()
    }

    fn sdk_of(chunks: &[&[u8]]) -> Sdk {
        let scan = headers::scan_chunks(chunks);
        assert_ne!(scan.flags & headers::FLAG_END, 0, "the block ends");
        Sdk::from_u8(scan.sdk)
    }

    #[test]
    fn each_sdks_user_agent_gives_its_family() {
        for &(agent, want) in SENT {
            for name in ["User-Agent", "user-agent", "USER-AGENT", "uSeR-aGeNt"] {
                for space in ["", " ", "\t ", "   "] {
                    let req = request(&format!("{name}:{space}{agent}\r\n"));
                    assert_eq!(sdk_of(&[&req]), want, "{name}:{space}{agent}");
                }
            }
            // The value's case does not matter either.
            let req = request(&format!("User-Agent: {}\r\n", agent.to_ascii_uppercase()));
            assert_eq!(sdk_of(&[&req]), want, "upper-cased {agent}");
        }
    }

    #[test]
    fn no_user_agent_is_none_and_look_alikes_are_not_one() {
        for headers in [
            "",
            "Accept: */*\r\n",
            "X-User-Agent: Botocore/1.0\r\n",
            "User-Agents: Botocore/1.0\r\n",
            "User-Agent : Botocore/1.0\r\n",
            "Referer: x\r\n User-Agent: Botocore/1.0\r\n",
            "Accept: User-Agent: Botocore/1.0\r\n",
        ] {
            assert_eq!(sdk_of(&[&request(headers)]), Sdk::None, "{headers:?}");
        }
        // After the block has ended, a User-Agent line is body, not a header.
        let mut req = request("");
        req.extend_from_slice(b"User-Agent: Botocore/1.0\r\n\r\n");
        assert_eq!(sdk_of(&[&req]), Sdk::None);
    }

    #[test]
    fn found_anywhere_in_the_block_and_across_any_split() {
        let filler = format!("Cookie: {}\r\n", "c".repeat(1500));
        let blocks = [
            "X-aws-ec2-metadata-token: AQAEAF\r\nUser-Agent: aws-sdk-java/1.12.780 Linux\r\n"
                .to_string(),
            format!("{filler}Accept: */*\r\nuser-agent: aws-sdk-java/1.12.780\r\n"),
            format!("User-Agent: aws-sdk-java/1.12.780\r\n{filler}X-aws-ec2-metadata-token: t\r\n"),
        ];
        for block in &blocks {
            let req = request(block);
            for i in 0..=req.len() {
                assert_eq!(sdk_of(&[&req[..i], &req[i..]]), Sdk::JavaV1, "split at {i}");
            }
            let at = req.windows(10).position(|w| w.eq_ignore_ascii_case(b"user-agent")).unwrap();
            for i in at..at + 30 {
                for j in i..at + 30 {
                    let chunks = [&req[..i], &req[i..j], &req[j..]];
                    assert_eq!(sdk_of(&chunks), Sdk::JavaV1, "split at {i},{j}");
                }
            }
        }
        // The token header is still found next to it.
        let scan = headers::scan_chunks(&[&request(&blocks[0])]);
        assert_eq!(scan.flags, headers::FLAG_TOKEN | headers::FLAG_END);
    }

    #[test]
    fn only_the_first_user_agent_counts() {
        let two = "User-Agent: aws-sdk-java/1.12.0\r\nUser-Agent: Botocore/1.0\r\n";
        assert_eq!(sdk_of(&[&request(two)]), Sdk::JavaV1);
        let two = "User-Agent: Mozilla/5.0\r\nUser-Agent: Botocore/1.0\r\n";
        assert_eq!(sdk_of(&[&request(two)]), Sdk::Other);
        // Without set-once, java_v1 (2) | botocore (4) would read as go_v2 (6).
        let ids: Vec<u8> = [Sdk::JavaV1, Sdk::Botocore].iter().map(|s| *s as u8).collect();
        assert_eq!(Sdk::from_u8(ids[0] | ids[1]), Sdk::GoV2);
    }

    #[test]
    fn hostile_values_are_other_never_a_family() {
        let mut rng = 0x5eed_1717_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for n in 0..500 {
            // Binary bytes (no NUL, CR or LF: they end or pad a line), any length.
            let len = (next() % 3000) as usize;
            let mut value: Vec<u8> = (0..len).map(|_| (next() % 253) as u8 + 3).collect();
            value.retain(|&b| b != b'\r' && b != b'\n');
            if value.first().is_some_and(|b| b.is_ascii_alphabetic()) {
                value[0] = 0x80;
            }
            let mut req = request("");
            req.truncate(req.len() - 2);
            req.extend_from_slice(b"User-Agent: ");
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\nX-aws-ec2-metadata-token: t\r\n\r\n");
            let scan = headers::scan_chunks(&[&req]);
            assert_eq!(Sdk::from_u8(scan.sdk), Sdk::Other, "case {n}");
            assert_eq!(scan.flags, headers::FLAG_TOKEN | headers::FLAG_END, "case {n}");
        }
        // A known token followed by kilobytes of anything is that family: only the leading
        // token is read, the rest of the line is skipped.
        let long = format!("User-Agent: Botocore/1.0 {}\r\n", "\u{ff}".repeat(5000));
        assert_eq!(sdk_of(&[&request(&long)]), Sdk::Botocore);
    }

    #[test]
    fn the_table_is_closed_and_ids_are_in_range() {
        for s in 0..LARGE_STATES {
            for b in 0..STRIDE {
                let entry = headers::TABLE[s * STRIDE + b];
                let next = (entry & 0xff) as usize;
                assert!(next < headers::STATES_USED || next == s, "{s} {b}");
                assert!(usize::from((entry >> 8) as u8 >> 3) < Sdk::ALL.len(), "{s} {b}");
            }
        }
        println!("header automaton: {} states used", headers::STATES_USED);
    }
}
