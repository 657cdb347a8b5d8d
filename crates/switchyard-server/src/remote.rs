//! Remote media, fetched by the server itself so every backend gets checked bytes
//! (`MediaInput::Bytes`) and no backend ever resolves a client's host name a second time.
//!
//! For each hop (the URL, then at most [`MAX_REDIRECTS`] redirects, each one checked anew): an
//! IP-literal host is checked as it is; a name is resolved once and every address it resolves
//! to must be public ([`crate::media::is_public`]), or the URL is refused. The request then goes
//! out on a client whose only name resolution is that checked list (`resolve_to_addrs`, and a
//! resolver that refuses every other name), with no proxy (a proxy would resolve the name
//! itself) and no automatic redirects. The body is read chunk by chunk and abandoned once it
//! passes `max_bytes`; the whole fetch is bounded by `fetch_timeout`, each connection by
//! `connect_timeout`. Content types are checked loosely: `image/*`, `video/*`, `audio/*`,
//! `application/octet-stream` or none. Every failure is a 400 naming the host and the problem.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use switchyard::{ChatRequest, MediaInput};
use url::{Host, Url};

use crate::error::ApiError;
use crate::media::{MediaLimits, is_public, remote_url};

/// Most redirects followed for one media URL.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// Why a remote medium could not be fetched (the message follows "media URL host `h`").
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("does not resolve ({0})")]
    Unresolved(String),
    #[error("is (or resolves to) {0}, which is not a public address; refused")]
    NotPublic(IpAddr),
    #[error("could not be reached: {0}")]
    Unreachable(String),
    #[error(
        "could not be reached: connecting timed out after {} s (--media-connect-timeout-s)",
        .0.as_secs_f64()
    )]
    ConnectTimeout(Duration),
    #[error(
        "did not deliver the medium within {} s (--media-timeout-s)",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    #[error("redirected to an unusable URL: {0}")]
    BadRedirect(String),
    #[error("sent more than {0} bytes, the limit (--max-media-mb)")]
    TooBig(usize),
    #[error("sent an empty body")]
    Empty,
    #[error("sent content type `{0}`, not an image, video or audio file")]
    ContentType(String),
}

/// Replaces every `http(s)` medium of `request` by the bytes fetched from it. URLs got here
/// only through `check_media`, so only when `--allow-remote-media` is on.
pub(crate) async fn fetch_remote_media(
    request: &mut ChatRequest,
    limits: &MediaLimits,
) -> Result<(), ApiError> {
    let remote = request
        .images
        .iter_mut()
        .chain(request.videos.iter_mut())
        .chain(request.audios.iter_mut())
        .filter(|m| matches!(m, MediaInput::Url { url } if url.starts_with("http://") || url.starts_with("https://")));
    let fetches = remote.map(|item| async move {
        if let MediaInput::Url { url } = &*item {
            let fetched = fetch(url, limits).await?;
            *item = fetched;
        }
        Ok::<(), ApiError>(())
    });
    futures::future::try_join_all(fetches).await?;
    Ok(())
}

/// Where a fetch stands, for its error message: the host of the current hop and the first one.
struct Hop {
    host: String,
    first: String,
}

impl Hop {
    fn error(&self, e: &FetchError) -> ApiError {
        let via = if self.host == self.first {
            String::new()
        } else {
            format!(" (redirected from `{}`)", self.first)
        };
        ApiError::invalid(
            format!("media URL host `{}`{via} {e}", self.host),
            Some("messages"),
        )
    }
}

/// Fetches one medium (redirects followed and checked), within `fetch_timeout`.
async fn fetch(raw: &str, limits: &MediaLimits) -> Result<MediaInput, ApiError> {
    let url = remote_url(raw)?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let mut hop = Hop {
        host: host.clone(),
        first: host,
    };
    match tokio::time::timeout(limits.fetch_timeout, fetch_hops(url, limits, &mut hop)).await {
        Ok(Ok(media)) => Ok(media),
        Ok(Err(e)) => Err(hop.error(&e)),
        Err(_) => Err(hop.error(&FetchError::Timeout(limits.fetch_timeout))),
    }
}

async fn fetch_hops(
    mut url: Url,
    limits: &MediaLimits,
    hop: &mut Hop,
) -> Result<MediaInput, FetchError> {
    for redirects in 0..=MAX_REDIRECTS {
        hop.host = url.host_str().unwrap_or_default().to_owned();
        let response = get(&url, limits).await?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            if redirects == MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FetchError::Status(status))?;
            url = next_hop(&url, location)?;
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        return read_body(response, limits.max_bytes).await;
    }
    Err(FetchError::TooManyRedirects)
}

/// The URL a `Location` header points to, held to the rules of the first URL: `http(s)`, no
/// user info. Its host is checked when it is fetched.
pub(crate) fn next_hop(base: &Url, location: &str) -> Result<Url, FetchError> {
    let bad = |why: String| FetchError::BadRedirect(why);
    let next = base
        .join(location)
        .map_err(|e| bad(format!("`{location}`: {e}")))?;
    remote_url(next.as_str()).map_err(|e| bad(format!("`{next}`: {}", e.message)))
}

/// The addresses `url`'s host may be reached at: an IP literal as it is, a name resolved once;
/// every address must be public (or loopback, under the test-only hook).
pub(crate) async fn checked_addrs(
    url: &Url,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, FetchError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let ips: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| FetchError::Unresolved(e.to_string()))?
            .map(|a| a.ip())
            .collect(),
        None => Vec::new(),
    };
    if ips.is_empty() {
        return Err(FetchError::Unresolved("no addresses".into()));
    }
    if let Some(bad) = ips
        .iter()
        .find(|ip| !(is_public(**ip) || (allow_loopback && ip.is_loopback())))
    {
        return Err(FetchError::NotPublic(*bad));
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// A resolver for names nobody checked: every lookup fails, so the client can reach only the
/// addresses given to `resolve_to_addrs`.
struct NoLookup;

impl reqwest::dns::Resolve for NoLookup {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move { Err(format!("`{name}` was not checked; refused").into()) })
    }
}

/// One GET, connecting only to the addresses checked for `url`'s host.
async fn get(url: &Url, limits: &MediaLimits) -> Result<reqwest::Response, FetchError> {
    let addrs = checked_addrs(url, limits.allow_loopback_for_tests).await?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(limits.connect_timeout)
        .pool_max_idle_per_host(0)
        .dns_resolver(Arc::new(NoLookup))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(name)) = url.host() {
        builder = builder.resolve_to_addrs(name, &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| FetchError::Unreachable(root_cause(&e)))?;
    client
        .get(url.clone())
        .header(
            ACCEPT,
            "image/*, video/*, audio/*, application/octet-stream;q=0.5",
        )
        .send()
        .await
        .map_err(|e| request_error(&e, limits.connect_timeout))
}

fn request_error(e: &reqwest::Error, connect_timeout: Duration) -> FetchError {
    if e.is_connect() && e.is_timeout() {
        FetchError::ConnectTimeout(connect_timeout)
    } else {
        FetchError::Unreachable(root_cause(e))
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The medium's type from `Content-Type`, checked loosely; `None` when it names no type.
pub(crate) fn media_type(content_type: Option<&str>) -> Result<Option<String>, FetchError> {
    let Some(v) = content_type else {
        return Ok(None);
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ["image/", "video/", "audio/"]
        .iter()
        .any(|p| essence.starts_with(p))
    {
        Ok(Some(essence))
    } else if essence.is_empty() || essence == "application/octet-stream" {
        Ok(None)
    } else {
        Err(FetchError::ContentType(essence))
    }
}

/// Reads the body up to `max_bytes` (refused at once when `Content-Length` says more; abandoned
/// as soon as the bytes read pass the limit).
async fn read_body(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<MediaInput, FetchError> {
    let mime_type = media_type(
        response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?")),
    )?;
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(FetchError::TooBig(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Unreachable(root_cause(&e)))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(FetchError::TooBig(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(MediaInput::Bytes {
        data_base64: base64::engine::general_purpose::STANDARD.encode(&body),
        mime_type,
    })
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
