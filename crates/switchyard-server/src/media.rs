//! Media in requests: `data:` URLs and base64 (size-checked), local files (only under
//! `--media-dir`), and remote URLs (only with `--allow-remote-media`, and never to an address
//! that is not globally reachable).
//!
//! A remote URL is parsed here as a browser would (WHATWG rules, the `url` crate: backslashes,
//! userinfo, percent-encoding and IPv6 forms are resolved the way the fetcher resolves them);
//! the server then fetches it itself ([`crate::remote`]): its host is resolved once, every
//! address is checked against the IANA special-purpose registries for IPv4 and IPv6 (including
//! IPv4 addresses embedded in IPv6: mapped, compatible, NAT64, 6to4, Teredo), and only a checked
//! address is connected to. Backends get the bytes, never the URL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use switchyard::MediaInput;

use crate::error::ApiError;

/// Limits applied while converting media.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Most media items per request.
    pub max_items: usize,
    /// Most decoded bytes per item.
    pub max_bytes: usize,
    /// Whether the server fetches `http(s)` URLs (never from private addresses).
    pub allow_remote: bool,
    /// A directory clients may reference with `file://` URLs.
    pub local_dir: Option<std::path::PathBuf>,
    /// Longest a remote fetch may take, redirects and body included (`--media-timeout-s`).
    pub fetch_timeout: Duration,
    /// Longest a connection to a media host may take to open (`--media-connect-timeout-s`).
    pub connect_timeout: Duration,
    /// Test-only: remote media may also come from loopback addresses (127.0.0.0/8, ::1), so a
    /// test can serve them locally. Set by `SWITCHYARD_MEDIA_ALLOW_LOOPBACK_FOR_TESTS=1`; never
    /// on by default.
    #[doc(hidden)]
    pub allow_loopback_for_tests: bool,
}

impl Default for MediaLimits {
    /// The CLI's defaults: 4 items of at most 8 MiB, no remote URLs, no local files; remote
    /// fetches (when allowed) time out after 10 s, connections after 5 s.
    fn default() -> Self {
        Self {
            max_items: 4,
            max_bytes: 8 << 20,
            allow_remote: false,
            local_dir: None,
            fetch_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            allow_loopback_for_tests: false,
        }
    }
}

/// Whether an IPv4 address is globally reachable (not in a special-purpose block).
fn v4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // 0.0.0.0/8 "this network"
        || a == 10                              // 10.0.0.0/8 private
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared (CGN)
        || a == 127                             // loopback
        || (a == 169 && b == 254)               // link-local (cloud metadata)
        || (a == 172 && (16..32).contains(&b))  // 172.16.0.0/12 private
        || (a == 192 && b == 0 && c == 0)       // 192.0.0.0/24 IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)     // 6to4 relay anycast
        || (a == 192 && b == 168)               // private
        || (a == 198 && (b == 18 || b == 19))   // 198.18.0.0/15 benchmarking
        || (a == 198 && b == 51 && c == 100)    // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)     // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

/// Whether an IPv6 address is globally reachable; IPv4 embedded in it is judged as IPv4.
fn v6_is_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_is_public(v4); // ::ffff:0:0/96
    }
    if s[..6] == [0; 6] {
        return false; // ::/128, ::1, and the deprecated IPv4-compatible ::/96
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48): judged by the IPv4 inside,
        // and the local-use block never.
        return s[2..6] == [0; 4] && v4_is_public(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_is_public(embedded(s[1], s[2])); // 6to4
    }
    if s[0] == 0x2001 && s[1] < 0x200 {
        return false; // 2001::/23 IETF protocol assignments (Teredo 2001::/32 among them)
    }
    !((s[0] == 0x100 && s[1..4] == [0; 3])  // 100::/64 discard
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0         // 3fff::/20 documentation
        || (s[0] & 0xfe00) == 0xfc00         // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80         // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0         // fec0::/10 site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00) // multicast
}

/// Whether an address is globally reachable (not in any IANA special-purpose block).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

/// A remote media URL parsed with the WHATWG rules, or why it is refused before any lookup:
/// not `http(s)`, or carrying a user name or password. Its host is checked when it is fetched.
pub(crate) fn remote_url(raw: &str) -> Result<url::Url, ApiError> {
    let refuse = |why: String| ApiError::invalid(why, Some("messages"));
    let url = url::Url::parse(raw).map_err(|e| refuse(format!("bad media URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("media URLs must be http(s)".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "media URLs with a user name or password are refused".into(),
        ));
    }
    if url.host().is_none() {
        return Err(refuse("media URL has no host".into()));
    }
    Ok(url)
}

pub fn check_media(item: MediaInput, limits: &MediaLimits) -> Result<MediaInput, ApiError> {
    let too_big = |n: usize| {
        ApiError::invalid(
            format!(
                "a media item decodes to {n} bytes; the limit is {} bytes",
                limits.max_bytes
            ),
            Some("messages"),
        )
    };
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| {
                ApiError::invalid(
                    format!("media data is not valid base64: {e}"),
                    Some("messages"),
                )
            })
    };
    match item {
        MediaInput::Bytes {
            data_base64,
            mime_type,
        } => {
            let n = decode(&data_base64)?.len();
            if n > limits.max_bytes {
                return Err(too_big(n));
            }
            Ok(MediaInput::Bytes {
                data_base64,
                mime_type,
            })
        }
        MediaInput::Url { url } => {
            if let Some(rest) = url.strip_prefix("data:") {
                let (meta, data) = rest.split_once(',').ok_or_else(|| {
                    ApiError::invalid("malformed data: URL (no comma)", Some("messages"))
                })?;
                if !meta.ends_with(";base64") {
                    return Err(ApiError::invalid(
                        "data: URLs must be base64-encoded",
                        Some("messages"),
                    ));
                }
                let n = decode(data)?.len();
                if n > limits.max_bytes {
                    return Err(too_big(n));
                }
                return Ok(MediaInput::Bytes {
                    data_base64: data.to_owned(),
                    mime_type: Some(meta.trim_end_matches(";base64").to_owned()),
                });
            }
            if let Some(path) = url.strip_prefix("file://") {
                let Some(dir) = &limits.local_dir else {
                    return Err(ApiError::invalid(
                        "local file URLs are disabled; start the server with --media-dir DIR to allow files under DIR",
                        Some("messages"),
                    ));
                };
                let full = std::fs::canonicalize(path).map_err(|e| {
                    ApiError::invalid(format!("cannot open {path}: {e}"), Some("messages"))
                })?;
                if !full.starts_with(dir) {
                    return Err(ApiError::invalid(
                        format!("{path} is outside the allowed media directory"),
                        Some("messages"),
                    ));
                }
                return Ok(MediaInput::Url {
                    url: format!("file://{}", full.display()),
                });
            }
            if url.starts_with("http://") || url.starts_with("https://") {
                if !limits.allow_remote {
                    return Err(ApiError::invalid(
                        "remote media URLs are disabled; send a data: URL, or start the server with --allow-remote-media",
                        Some("messages"),
                    ));
                }
                // Fetched (and its host checked) by `remote::fetch_remote_media`.
                return Ok(MediaInput::Url {
                    url: remote_url(&url)?.to_string(),
                });
            }
            Err(ApiError::invalid(
                "unsupported media URL scheme; use data:, http(s): or file:",
                Some("messages"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_canonical_and_refused_by_form() {
        assert_eq!(
            remote_url("HTTP://8.8.8.8:80/a/../x.png").unwrap().as_str(),
            "http://8.8.8.8/x.png"
        );
        assert_eq!(
            remote_url("http://169.254.169.254\\@8.8.8.8/x.png")
                .unwrap()
                .host_str(),
            Some("169.254.169.254"),
            "a backslash ends the host, as in a browser"
        );
        for url in [
            "http://user:pw@8.8.8.8/x.png",
            "http://user@8.8.8.8/x.png",
            "file:///etc/passwd",
            "ftp://8.8.8.8/x.png",
            "http://",
        ] {
            assert!(remote_url(url).is_err(), "{url} was let through");
        }
    }

    #[test]
    fn special_purpose_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "fe80::1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::1",
            "::",
            "fc00::5",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "10.1.2.3",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as private");
        }
    }
}
