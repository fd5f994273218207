//! `X-Twilio-Signature` as the fake writes it, built from Twilio's published algorithm and
//! checked against Twilio's published vectors. It shares no code with the client's validator
//! (`src/twilio/signature.rs`): if the two agreed only because they were the same code, a bug
//! in it would sign and validate every test request alike and no test could see it.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature Twilio puts on a request to `url` with form `params` (none for GET requests
/// and Media Stream handshakes, whose URL is the whole message): HMAC-SHA1, keyed with the Auth
/// Token, over the URL followed by each parameter's name immediately followed by its value,
/// names in byte order, base64.
///
/// A name sent more than once contributes each distinct value once, values in byte order:
/// what Twilio's helper libraries do, so their vectors hold.
pub(crate) fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        by_name.entry(name).or_default().insert(value);
    }
    let mut message = String::from(url);
    for (name, values) in by_name {
        for value in values {
            message.push_str(name);
            message.push_str(value);
        }
    }
    let mut mac = <Hmac<Sha1>>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature the fake would put on this request: the check the fake's
/// tests make on what it sent, exactly, with none of the URL variants a server must tolerate.
#[cfg(test)]
pub(crate) fn is_signed(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> bool {
    header == Some(sign(auth_token, url, params).as_str())
}

#[cfg(test)]
mod tests {
    //! Vectors: twilio-python's `tests/unit/test_request_validator.py` (the same inputs are in
    //! twilio-php's and twilio-csharp's tests), the docs' worked example, the variant with the
    //! callers of the docs' code samples, and one computed for a handshake. Each was recomputed
    //! with a separate HMAC implementation before being written down.
    use super::{is_signed, sign};

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn call_params(caller: &str) -> Vec<(String, String)> {
        // Out of order on purpose: signing sorts them.
        params(&[
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("From", caller),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
        ])
    }

    /// The callers Twilio's docs' code samples use, with the helper libraries' URL: the vector
    /// third-party validators cite most often.
    #[test]
    fn docs_callers_vector() {
        assert_eq!(
            sign(TOKEN, URL, &call_params("+12349013030")),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn helper_library_vectors() {
        let p = call_params("+14158675309");
        assert_eq!(sign(TOKEN, URL, &p), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        // The same request signed for the URL with its port written out.
        assert_eq!(
            sign(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", &p),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            sign(TOKEN, "http://mycompany.com:1234/myapp.php?foo=1&bar=2", &p),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
    }

    #[test]
    fn repeated_names_sign_each_distinct_value_in_order() {
        let p = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign(TOKEN, URL, &p), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn docs_worked_example() {
        let p = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            sign(TOKEN, "https://example.com/myapp.php?foo=1&bar=2", &p),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn handshake_signs_the_url_alone() {
        assert_eq!(
            sign(TOKEN, "wss://example.com/media-stream", &[]),
            "XFfwGS2Ev7f9qAP9MmRoMS7C724="
        );
    }

    #[test]
    fn checker_wants_the_exact_signature() {
        let p = call_params("+12349013030");
        let good = Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(is_signed(TOKEN, URL, &p, good));
        assert!(!is_signed(TOKEN, URL, &p, None));
        assert!(!is_signed(TOKEN, URL, &p, Some("")));
        assert!(!is_signed("54321", URL, &p, good));
        assert!(!is_signed(
            TOKEN,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &p,
            good
        ));
        let mut tampered = p.clone();
        tampered[1].1 = "9999".into();
        assert!(!is_signed(TOKEN, URL, &tampered, good));
    }
}
