//! Media inputs of `chat` (`/image PATH`, `/video PATH`) and `batch` (`images`/`videos` lists):
//! a `data:` or `http(s):` URL is passed on as it is; anything else is a file path, read and
//! sent as base64 with a MIME type from its extension. The limits are those `switchyard api`
//! applies by default (`--max-media`, `--max-media-mb`).

use std::path::Path;

use base64::Engine as _;
use switchyard::MediaInput;
use switchyard::placeholders::MediaKind;

/// Most media items (images, videos and audio together) in one request.
pub const MAX_ITEMS: usize = 4;
/// Largest media file, in bytes.
pub const MAX_BYTES: u64 = 8 << 20;

/// The MIME type for a file name's extension, when the kind knows it.
fn mime_of(path: &Path, kind: MediaKind) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let mime = match (kind, ext.as_str()) {
        (MediaKind::Image, "png") => "image/png",
        (MediaKind::Image, "jpg" | "jpeg") => "image/jpeg",
        (MediaKind::Image, "webp") => "image/webp",
        (MediaKind::Image, "gif") => "image/gif",
        (MediaKind::Image, "bmp") => "image/bmp",
        (MediaKind::Video, "mp4") => "video/mp4",
        (MediaKind::Video, "webm") => "video/webm",
        (MediaKind::Video, "mkv") => "video/x-matroska",
        (MediaKind::Video, "mov") => "video/quicktime",
        (MediaKind::Video, "avi") => "video/x-msvideo",
        (MediaKind::Audio, "wav") => "audio/wav",
        (MediaKind::Audio, "mp3") => "audio/mpeg",
        (MediaKind::Audio, "ogg") => "audio/ogg",
        (MediaKind::Audio, "flac") => "audio/flac",
        _ => return None,
    };
    Some(mime)
}

/// One media input from `spec` (a URL or a path; a relative path is taken from `base`).
pub fn load(spec: &str, base: &Path, kind: MediaKind) -> Result<MediaInput, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(format!("an empty entry in `{}`", kind.field()));
    }
    if spec.starts_with("data:") || spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(MediaInput::Url {
            url: spec.to_owned(),
        });
    }
    let path = base.join(spec);
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > MAX_BYTES {
        return Err(format!(
            "{} is {} bytes; the limit per media file is {} MiB",
            path.display(),
            meta.len(),
            MAX_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(MediaInput::Bytes {
        data_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        mime_type: mime_of(&path, kind).map(str::to_owned),
    })
}

/// Checks the count of media in one request against [`MAX_ITEMS`].
pub fn check_count(n: usize) -> Result<(), String> {
    if n > MAX_ITEMS {
        return Err(format!(
            "{n} media items in one request; the limit is {MAX_ITEMS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_relative_to_the_base_and_urls_pass() {
        let dir = std::env::temp_dir().join(format!("switchyard-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.PNG"), b"\x89PNG").unwrap();
        let m = load("a.PNG", &dir, MediaKind::Image).unwrap();
        // `printf '\x89PNG' | base64` gives iVBORw==.
        assert_eq!(
            m,
            MediaInput::Bytes {
                data_base64: "iVBORw==".into(),
                mime_type: Some("image/png".into())
            }
        );
        let url = "data:image/png;base64,AA";
        assert_eq!(
            load(url, &dir, MediaKind::Image).unwrap(),
            MediaInput::Url { url: url.into() }
        );
        let e = load("missing.jpg", &dir, MediaKind::Image).unwrap_err();
        assert!(e.contains("missing.jpg"), "{e}");
        assert!(check_count(MAX_ITEMS + 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
