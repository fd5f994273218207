//! Twilio's request signature (`X-Twilio-Signature`): computing it (the fake Twilio signs what
//! it sends) and validating it the way Twilio's own helper libraries do, including the port
//! variants that Twilio's edges are inconsistent about.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// The signature of a request to `url` carrying form `params` (empty for GET and WebSocket
/// handshakes): HMAC-SHA1 keyed with the Auth Token over the URL followed by every parameter's
/// name and value, sorted by name in byte order. Repeated names contribute each distinct value,
/// values sorted, as the official libraries do.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request. Tries the URL as given, with its default
/// port added, and with its port removed (Twilio strips the port on some HTTPS callbacks and the
/// libraries accept either), and for WebSocket URLs also with a trailing slash.
pub fn is_valid(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    if signature.is_empty() || auth_token.is_empty() {
        return false;
    }
    let mut ok = false;
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        // Evaluate every variant so timing does not reveal which one matched.
        ok |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
    }
    ok
}

fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest
            .find(['/', '?'])
            .map_or((rest, ""), |i| rest.split_at(i));
        let default_port = match scheme {
            "https" | "wss" => Some("443"),
            "http" | "ws" => Some("80"),
            _ => None,
        };
        // An IPv6 literal ends with `]`; a port follows the last `:` outside it.
        let port_split = authority
            .rfind(':')
            .filter(|&i| !authority[i..].contains(']'));
        match (port_split, default_port) {
            (Some(i), _) => out.push(format!("{scheme}://{}{tail}", &authority[..i])),
            (None, Some(p)) => out.push(format!("{scheme}://{authority}:{p}{tail}")),
            (None, None) => {}
        }
        if matches!(scheme, "ws" | "wss") && !url.ends_with('/') {
            let more: Vec<String> = out.iter().map(|u| format!("{u}/")).collect();
            out.extend(more);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Vectors from twilio-python's `test_request_validator.py`, twilio-node's
    //! `spec/validation.spec.js` and the docs' worked example.
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn library_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn library_vector() {
        assert_eq!(
            compute("12345", URL, &library_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    /// The same request with the callers of the docs' code samples: the vector third-party
    /// validators cite most often, recomputed independently before being written down.
    #[test]
    fn docs_callers_vector() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            compute("12345", URL, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(is_valid(
            "12345",
            URL,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn port_vectors() {
        let params = library_params();
        assert_eq!(
            compute(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            compute(
                "12345",
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                &params
            ),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert_eq!(
            compute(
                "12345",
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                &params
            ),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
    }

    #[test]
    fn validation_accepts_port_variants() {
        let params = library_params();
        // Signed with :443, presented without it, and the reverse.
        assert!(is_valid(
            "12345",
            URL,
            &params,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(is_valid(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(is_valid(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &params,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn repeated_params_are_deduplicated_and_sorted() {
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            compute("12345", URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn docs_worked_example() {
        let params = p(&[
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(
            compute(
                "12345",
                "https://example.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn websocket_handshake_vectors() {
        assert_eq!(
            compute("12345", "wss://example.com/media-stream", &[]),
            "XFfwGS2Ev7f9qAP9MmRoMS7C724="
        );
        assert_eq!(
            compute("12345", "wss://example.com/media-stream/", &[]),
            "7J0iz81itFhCXVuZK8EmM4YZwLA="
        );
        // Twilio may sign the URL with a trailing slash.
        assert!(is_valid(
            "12345",
            "wss://example.com/media-stream",
            &[],
            "7J0iz81itFhCXVuZK8EmM4YZwLA="
        ));
    }

    /// A request as the server sees it: the Auth Token, the URL and the form.
    #[derive(Debug, Clone)]
    struct Request {
        token: String,
        url: String,
        params: Vec<(String, String)>,
    }

    /// URLs of every shape the server builds (schemes, ports, IPv6 hosts, queries) with paths
    /// and parameters of any characters.
    fn request(rng: &mut rand::rngs::StdRng) -> Request {
        use crate::props;
        use rand::Rng;
        let scheme = ["https", "http", "wss", "ws"][rng.random_range(0..4)];
        let host =
            ["example.com", "abc.ngrok.app", "127.0.0.1", "[::1]", "h"][rng.random_range(0..5)];
        let port = ["", "", ":443", ":80", ":8080"][rng.random_range(0..5)];
        let path = props::random_text(rng, &["/", "twilio", "status", "?", "&", "=", ":"], 12);
        let params = (0..rng.random_range(0..6))
            .map(|_| {
                let name = props::random_text(rng, &["CallSid", "CallStatus", "Digits"], 3);
                let value = props::random_text(rng, &["+1415", "completed", "CA12"], 4);
                (name, value)
            })
            .collect();
        Request {
            token: props::random_text(rng, &["12345"], 4),
            url: format!("{scheme}://{host}{port}/{path}"),
            params,
        }
    }

    /// What Twilio's algorithm signs, written independently: the URL, then the distinct
    /// parameters sorted, each name followed by its value.
    fn signed_text(url: &str, params: &[(String, String)]) -> String {
        let mut sorted = params.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .iter()
            .fold(url.to_string(), |text, (k, v)| text + k + v)
    }

    /// Whatever the token, URL, parameters and signature (empty, not base64, megabytes, any
    /// characters), validation answers without panicking, and only a signature of the shape
    /// HMAC-SHA1 in base64 has can pass.
    #[test]
    fn validation_never_panics() {
        use crate::props;
        use rand::Rng;
        props::check(
            31,
            props::cases(),
            |rng| {
                let mut r = request(rng);
                if rng.random_bool(0.3) {
                    r.url = props::random_text(
                        rng,
                        &["://", "https", "wss", ":", "[", "]", "/", "?"],
                        10,
                    );
                }
                if rng.random_bool(0.01) {
                    r.url.push_str(&props::long_text(rng));
                }
                let signature = match rng.random_range(0..5) {
                    0 => String::new(),
                    1 => compute(&r.token, &r.url, &r.params),
                    2 => props::random_text(rng, &["A", "=", "+", "/"], 40),
                    3 => props::long_text(rng),
                    _ => String::from_utf8_lossy(&props::random_bytes(rng, 40)).into_owned(),
                };
                (r, signature)
            },
            |(r, signature)| {
                let valid = is_valid(&r.token, &r.url, &r.params, signature);
                if valid {
                    assert_eq!(signature.len(), 28);
                    assert!(!r.token.is_empty());
                }
                assert_eq!(compute(&r.token, &r.url, &r.params).len(), 28);
            },
        );
    }

    /// A signature holds for its request, with or without the default port, and for nothing
    /// else: not another token, not a URL changed by one character, not a parameter changed,
    /// added or removed, not a signature changed by one character. The only exceptions are
    /// Twilio's own: requests whose URL and parameters concatenate to the same text (the
    /// scheme does not separate them), a WebSocket URL's trailing slash included.
    #[test]
    fn a_signature_holds_for_its_request_only() {
        use crate::props;
        use rand::Rng;
        props::check(
            32,
            props::cases(),
            |rng| {
                let mut original = request(rng);
                // An empty Auth Token validates nothing (see `validation_never_panics`).
                original.token.insert(0, 'k');
                let mut forged = original.clone();
                let mut signature = compute(&original.token, &original.url, &original.params);
                let c = props::random_text(rng, &[], 1)
                    .chars()
                    .next()
                    .unwrap_or('x');
                match rng.random_range(0..5) {
                    // Not a NUL: HMAC pads a short key with zeros, so "k" and "k\0" are one
                    // key (as in every HMAC; Auth Tokens are hexadecimal).
                    0 => forged.token.push(if c == '\0' { 'x' } else { c }),
                    1 => {
                        // After the path's first slash: a port change (even to an empty
                        // port, `h:/`) is a variant Twilio allows.
                        let path = forged.url.find("://").unwrap() + 3;
                        let path = path + forged.url[path..].find('/').unwrap() + 1;
                        let mut chars: Vec<char> = forged.url[path..].chars().collect();
                        let at = rng.random_range(0..=chars.len());
                        match rng.random_range(0..3) {
                            0 => chars.insert(at, c),
                            1 if at < chars.len() => {
                                chars.remove(at);
                            }
                            _ if at < chars.len() => chars[at] = c,
                            _ => chars.push(c),
                        }
                        let tail: String = chars.into_iter().collect();
                        forged.url.replace_range(path.., &tail);
                    }
                    2 if !forged.params.is_empty() => {
                        let i = rng.random_range(0..forged.params.len());
                        match rng.random_range(0..3) {
                            0 => forged.params[i].0.push(c),
                            1 => forged.params[i].1.insert(0, c),
                            _ => {
                                forged.params.remove(i);
                            }
                        }
                    }
                    2 | 3 => forged
                        .params
                        .push((props::random_text(rng, &["CallStatus"], 3), c.to_string())),
                    _ => {
                        let at = rng.random_range(0..signature.len());
                        let mut bytes = signature.into_bytes();
                        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                        signature = String::from_utf8(bytes).unwrap();
                    }
                }
                (original, forged, signature)
            },
            |(original, forged, signature)| {
                let sig = compute(&original.token, &original.url, &original.params);
                assert!(is_valid(
                    &original.token,
                    &original.url,
                    &original.params,
                    &sig
                ));
                if let Some((scheme, rest)) = original.url.split_once("://")
                    && let Some(slash) = rest.find('/')
                    && !rest[..slash].contains(":")
                {
                    let port = if scheme.len() == 5 || scheme == "wss" {
                        "443"
                    } else {
                        "80"
                    };
                    let with_port =
                        format!("{scheme}://{}:{port}{}", &rest[..slash], &rest[slash..]);
                    assert!(is_valid(
                        &original.token,
                        &with_port,
                        &original.params,
                        &sig
                    ));
                }
                let signed = signed_text(&original.url, &original.params);
                let same_text = signed_text(&forged.url, &forged.params) == signed
                    || (forged.url.starts_with("ws")
                        && signed_text(&format!("{}/", forged.url), &forged.params) == signed);
                let forged_ok = is_valid(&forged.token, &forged.url, &forged.params, signature);
                let unchanged = forged.token == original.token && *signature == sig;
                if !(unchanged && same_text) {
                    assert!(!forged_ok, "{forged:?} accepted with {signature}");
                }
            },
        );
    }

    #[test]
    fn forged_or_wrong_key_rejected() {
        let params = library_params();
        assert!(!is_valid("12345", URL, &params, ""));
        assert!(!is_valid(
            "54321",
            URL,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert!(!is_valid(
            "12345",
            URL,
            &tampered,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }
}
