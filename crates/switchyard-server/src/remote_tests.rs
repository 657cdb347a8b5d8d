//! The fetch rules against a raw HTTP/1.1 server on a loopback port (reached only under the
//! test-only loopback hook): the body-size cut-off, redirects (followed, re-checked, counted),
//! status, content type, timeouts, and every host checked before any connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What the test server does for a path.
enum Reply {
    /// A whole response (head and body) written as is.
    Raw(Vec<u8>),
    /// A 200 whose body never ends (no length; chunks until the client hangs up).
    Endless,
    /// Nothing for a long while.
    Hang,
}

/// A loopback HTTP server answering by path; returns its base URL and its request counter.
async fn serve(route: fn(&str) -> Reply) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                match route(&path) {
                    Reply::Raw(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                        let _ = socket.shutdown().await;
                    }
                    Reply::Endless => {
                        let head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n";
                        if socket.write_all(head).await.is_err() {
                            return;
                        }
                        let chunk = vec![7u8; 64 << 10];
                        while socket.write_all(&chunk).await.is_ok() {}
                    }
                    Reply::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    (base, hits)
}

fn response(status: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Reply::Raw(bytes)
}

fn routes(path: &str) -> Reply {
    match path {
        "/img.png" => response("200 OK", &["Content-Type: image/png"], b"0123456789"),
        "/raw" => response(
            "200 OK",
            &["Content-Type: application/octet-stream"],
            b"abc",
        ),
        "/page" => response(
            "200 OK",
            &["Content-Type: text/html; charset=utf-8"],
            b"<p>",
        ),
        "/big" => response("200 OK", &["Content-Type: image/png"], &[1u8; 64]),
        "/empty" => response("200 OK", &["Content-Type: image/png"], b""),
        "/endless" => Reply::Endless,
        "/hang" => Reply::Hang,
        "/to-img" => response("302 Found", &["Location: /img.png"], b""),
        "/to-private" => response("301 Moved", &["Location: http://10.0.0.1/x.png"], b""),
        "/to-metadata" => response(
            "307 Temporary Redirect",
            &["Location: http://[::ffff:169.254.169.254]/latest"],
            b"",
        ),
        "/to-ftp" => response("302 Found", &["Location: ftp://8.8.8.8/x.png"], b""),
        "/loop" => response("302 Found", &["Location: /loop"], b""),
        "/hop1" => response("302 Found", &["Location: /hop2"], b""),
        "/hop2" => response("302 Found", &["Location: /hop3"], b""),
        "/hop3" => response("302 Found", &["Location: /img.png"], b""),
        _ => response("404 Not Found", &["Content-Type: text/plain"], b"no"),
    }
}

fn limits(max_bytes: usize) -> MediaLimits {
    MediaLimits {
        max_bytes,
        allow_remote: true,
        fetch_timeout: Duration::from_secs(5),
        allow_loopback_for_tests: true,
        ..MediaLimits::default()
    }
}

fn bytes_of(media: MediaInput) -> (Vec<u8>, Option<String>) {
    let MediaInput::Bytes {
        data_base64,
        mime_type,
    } = media
    else {
        panic!("not bytes: {media:?}");
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data_base64)
        .unwrap();
    (raw, mime_type)
}

async fn refused(url: &str, limits: &MediaLimits) -> String {
    let e = fetch(url, limits).await.expect_err(url);
    assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{e:?}");
    e.message
}

#[tokio::test]
async fn a_body_within_the_limit_comes_back_as_bytes_with_its_type() {
    let (base, _) = serve(routes).await;
    let (raw, mime) = bytes_of(
        fetch(&format!("{base}/img.png"), &limits(10))
            .await
            .unwrap(),
    );
    assert_eq!(raw, b"0123456789");
    assert_eq!(mime.as_deref(), Some("image/png"));
    let (raw, mime) = bytes_of(fetch(&format!("{base}/raw"), &limits(10)).await.unwrap());
    assert_eq!((raw.as_slice(), mime), (&b"abc"[..], None));
}

#[tokio::test]
async fn a_body_past_the_limit_is_cut_off() {
    let (base, _) = serve(routes).await;
    // Declared by Content-Length: refused before the body is read.
    let msg = refused(&format!("{base}/big"), &limits(63)).await;
    assert!(msg.contains("more than 63 bytes"), "{msg}");
    assert!(msg.contains("--max-media-mb"), "{msg}");
    assert!(fetch(&format!("{base}/big"), &limits(64)).await.is_ok());
    // No length and no end: reading stops at the limit, long before the 5 s timeout.
    let started = std::time::Instant::now();
    let msg = refused(&format!("{base}/endless"), &limits(1 << 20)).await;
    assert!(msg.contains("more than 1048576 bytes"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn redirects_are_followed_at_most_three_times_and_each_hop_is_checked() {
    let (base, hits) = serve(routes).await;
    let (raw, _) = bytes_of(fetch(&format!("{base}/to-img"), &limits(10)).await.unwrap());
    assert_eq!(raw, b"0123456789");
    // Three redirects, then the image: allowed.
    assert!(fetch(&format!("{base}/hop1"), &limits(10)).await.is_ok());
    let before = hits.load(Ordering::SeqCst);
    let msg = refused(&format!("{base}/loop"), &limits(10)).await;
    assert!(msg.contains("redirected more than 3 times"), "{msg}");
    assert_eq!(
        hits.load(Ordering::SeqCst) - before,
        4,
        "the URL and 3 redirects"
    );

    let msg = refused(&format!("{base}/to-private"), &limits(10)).await;
    assert!(
        msg.contains("`10.0.0.1` (redirected from `127.0.0.1`)")
            && msg.contains("not a public address"),
        "{msg}"
    );
    let msg = refused(&format!("{base}/to-metadata"), &limits(10)).await;
    assert!(msg.contains("169.254.169.254"), "{msg}");
    let msg = refused(&format!("{base}/to-ftp"), &limits(10)).await;
    assert!(msg.contains("redirected to an unusable URL"), "{msg}");
}

#[tokio::test]
async fn status_type_and_empty_bodies_are_named() {
    let (base, _) = serve(routes).await;
    let msg = refused(&format!("{base}/missing.png"), &limits(10)).await;
    assert!(
        msg.contains("`127.0.0.1`") && msg.contains("HTTP 404"),
        "{msg}"
    );
    let msg = refused(&format!("{base}/page"), &limits(10)).await;
    assert!(msg.contains("`text/html`"), "{msg}");
    let msg = refused(&format!("{base}/empty"), &limits(10)).await;
    assert!(msg.contains("empty"), "{msg}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (base, _) = serve(routes).await;
    let limits = MediaLimits {
        fetch_timeout: Duration::from_millis(300),
        ..limits(10)
    };
    let msg = refused(&format!("{base}/hang"), &limits).await;
    assert!(
        msg.contains("within 0.3 s") && msg.contains("--media-timeout-s"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let msg = refused(&format!("http://127.0.0.1:{port}/x.png"), &limits(10)).await;
    assert!(msg.contains("could not be reached"), "{msg}");
}

#[tokio::test]
async fn loopback_is_refused_without_the_test_hook_before_any_connection() {
    let (base, hits) = serve(routes).await;
    let limits = MediaLimits {
        allow_loopback_for_tests: false,
        ..limits(10)
    };
    let msg = refused(&format!("{base}/img.png"), &limits).await;
    assert!(
        msg.contains("127.0.0.1, which is not a public address"),
        "{msg}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn special_purpose_and_disguised_hosts_are_refused() {
    for url in [
        "http://127.0.0.1/x.png",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fc00::5]/",
        "http://100.64.0.1/",
        "http://198.18.0.1/",
        "http://192.0.0.8/",
        "http://169.254.169.254\\@8.8.8.8/x.png",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://017700000001/",
        "http://10.1.2.3:8080/a",
        "http://224.0.0.1/",
        "http://localhost/x.png",
    ] {
        let url = remote_url(url).unwrap();
        assert!(
            matches!(
                checked_addrs(&url, false).await,
                Err(FetchError::NotPublic(_))
            ),
            "{url} was let through"
        );
    }
    let public = remote_url("http://8.8.8.8:8080/x.png").unwrap();
    assert_eq!(
        checked_addrs(&public, false).await.unwrap(),
        vec!["8.8.8.8:8080".parse().unwrap()]
    );
}

#[test]
fn redirect_targets_keep_the_rules_of_the_first_url() {
    let base = Url::parse("https://example.com/a/b.png").unwrap();
    assert_eq!(
        next_hop(&base, "../c.png").unwrap().as_str(),
        "https://example.com/c.png"
    );
    assert_eq!(
        next_hop(&base, "//cdn.example.net/x").unwrap().as_str(),
        "https://cdn.example.net/x"
    );
    for bad in [
        "ftp://example.com/x",
        "http://u:p@example.com/",
        "file:///etc/passwd",
    ] {
        assert!(
            matches!(next_hop(&base, bad), Err(FetchError::BadRedirect(_))),
            "{bad}"
        );
    }
}

#[test]
fn content_types_are_checked_loosely() {
    assert_eq!(
        media_type(Some("Image/PNG; q=1")).unwrap().as_deref(),
        Some("image/png")
    );
    assert_eq!(
        media_type(Some("video/mp4")).unwrap().as_deref(),
        Some("video/mp4")
    );
    assert_eq!(media_type(Some("application/octet-stream")).unwrap(), None);
    assert_eq!(media_type(None).unwrap(), None);
    assert!(media_type(Some("text/html")).is_err());
    assert!(media_type(Some("application/json")).is_err());
}
