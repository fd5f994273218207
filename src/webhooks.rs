//! The addresses Twilio is given for this process, built once at startup from `PUBLIC_URL`.
//! The call service hands them to Twilio and the server checks signatures over them, so both
//! take this value and neither needs to know the other.

/// Path segments under `/twilio/` that the server routes and the URLs name.
pub(crate) mod paths {
    pub(crate) const PREFIX: &str = "twilio";
    pub(crate) const STATUS: &str = "status";
    pub(crate) const AMD: &str = "amd";
    pub(crate) const MEDIA: &str = "media";
    /// A phone number's Voice URL (incoming calls), with no token.
    pub(crate) const VOICE: &str = "voice";
    pub(crate) const DIAL: &str = "dial";
}

/// The public base URL and what is derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    base: String,
    ws_base: String,
}

impl PublicUrls {
    /// `base` is `https://host[/prefix]` without a trailing slash (settings guarantee it).
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_string();
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.clone()
        };
        Self { base, ws_base }
    }

    /// `https://…`: what Twilio signs webhooks against.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The status callback of the call with this token.
    pub fn status(&self, token: &str) -> String {
        format!("{}/{}/{}/{token}", self.base, paths::PREFIX, paths::STATUS)
    }

    /// The asynchronous answering-machine-detection callback of the call with this token.
    pub fn amd(&self, token: &str) -> String {
        format!("{}/{}/{}/{token}", self.base, paths::PREFIX, paths::AMD)
    }

    /// The Voice URL to set on a phone number for incoming calls.
    pub fn voice(&self) -> String {
        format!("{}/{}/{}", self.base, paths::PREFIX, paths::VOICE)
    }

    /// The status callback to set on a phone number: no token, the call is found by its SID.
    pub fn number_status(&self) -> String {
        format!("{}/{}/{}", self.base, paths::PREFIX, paths::STATUS)
    }

    /// The `<Dial action>` of a transferred call with this token.
    pub fn dial(&self, token: &str) -> String {
        format!("{}/{}/{}/{token}", self.base, paths::PREFIX, paths::DIAL)
    }

    /// The Media Stream URL (`wss://…`), the same for every call: Twilio signs the handshake
    /// over it as written, so the token travels as a stream parameter instead.
    pub fn media(&self) -> String {
        format!("{}/{}/{}", self.ws_base, paths::PREFIX, paths::MEDIA)
    }

    /// The full URL of a request that reached the server at `path_and_query`, as Twilio
    /// requested it (a proxy in front may have rewritten the host).
    pub fn http(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// The same for a WebSocket handshake.
    pub fn ws(&self, path: &str) -> String {
        format!("{}{path}", self.ws_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_becomes_wss_and_paths_join_once() {
        let u = PublicUrls::new("https://abc.ngrok.app/");
        assert_eq!(u.base(), "https://abc.ngrok.app");
        assert_eq!(u.status("t1"), "https://abc.ngrok.app/twilio/status/t1");
        assert_eq!(u.amd("t1"), "https://abc.ngrok.app/twilio/amd/t1");
        assert_eq!(u.dial("t1"), "https://abc.ngrok.app/twilio/dial/t1");
        assert_eq!(u.media(), "wss://abc.ngrok.app/twilio/media");
        assert_eq!(u.ws("/twilio/media"), "wss://abc.ngrok.app/twilio/media");
        assert_eq!(
            u.http("/twilio/status/t1?x=1"),
            "https://abc.ngrok.app/twilio/status/t1?x=1"
        );
    }

    #[test]
    fn plain_http_on_loopback_becomes_ws() {
        let u = PublicUrls::new("http://127.0.0.1:8080");
        assert_eq!(u.media(), "ws://127.0.0.1:8080/twilio/media");
    }

    #[test]
    fn a_path_prefix_is_kept() {
        let u = PublicUrls::new("https://example.com/dialer");
        assert_eq!(u.status("t"), "https://example.com/dialer/twilio/status/t");
        assert_eq!(u.media(), "wss://example.com/dialer/twilio/media");
    }
}
