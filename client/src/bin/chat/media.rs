//! Media helpers shared by the subcommands: what to declare for a file (mime type, kind,
//! image size), how to show an attachment, and saving one to a directory.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use chat_client::{pb, Connection, MediaSpec};
use serde_json::json;

/// The server's default `media.max_asset_bytes`; servers may be configured otherwise.
pub const DEFAULT_LIMIT: u64 = 16 << 20;
/// The most any server accepts (its configuration allows at most 4 GiB): larger files are
/// refused before they are read into memory.
const PROTOCOL_LIMIT: u64 = 4 << 30;

/// Extension (lowercase) to mime type, and back (the first extension of a type wins).
const MIME_TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/opus"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("weba", "audio/webm"),
    ("webm", "audio/webm"),
    ("mp4", "video/mp4"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
];

const FALLBACK_MIME: &str = "application/octet-stream";

/// The mime type of a file, from its extension.
pub fn guess_mime(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    MIME_TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or(FALLBACK_MIME, |(_, m)| m)
}

/// The extension files of this mime type are saved with ("bin" when unknown).
pub fn extension_of(mime: &str) -> &'static str {
    MIME_TYPES
        .iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(mime))
        .map_or("bin", |(e, _)| e)
}

/// Image for image/*, voice for audio/*, file otherwise.
pub fn kind_of(mime: &str) -> pb::MediaKind {
    if mime.starts_with("image/") {
        pb::MediaKind::Image
    } else if mime.starts_with("audio/") {
        pb::MediaKind::Voice
    } else {
        pb::MediaKind::File
    }
}

pub fn kind_name(kind: pb::MediaKind) -> &'static str {
    match kind {
        pb::MediaKind::Image => "image",
        pb::MediaKind::Voice => "voice",
        pb::MediaKind::File => "file",
        pb::MediaKind::Unspecified => "media",
    }
}

/// Reads a file to send and works out what to declare for it. `mime` overrides the guess
/// from the extension.
pub fn read_file(
    path: &Path,
    mime: Option<&str>,
    voice_ms: Option<u32>,
) -> anyhow::Result<(Vec<u8>, MediaSpec)> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        bail!("{shown} is not a file");
    }
    if meta.len() > PROTOCOL_LIMIT {
        bail!(
            "{shown} is {}: too large to send (servers accept at most {} by default)",
            human_size(meta.len()),
            human_size(DEFAULT_LIMIT)
        );
    }
    let data = std::fs::read(path).map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    if data.is_empty() {
        bail!("{shown} is empty");
    }
    let mime_type = mime
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| guess_mime(path).to_string());
    let kind = kind_of(&mime_type);
    let (width, height) = if kind == pb::MediaKind::Image {
        image_size(&data).unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spec = MediaSpec {
        kind,
        mime_type,
        duration_ms: voice_ms.unwrap_or(0),
        width,
        height,
        file_name,
    };
    Ok((data, spec))
}

/// Turns the server's refusals of an upload into advice about the file.
pub fn explain_upload_error(
    e: chat_client::ClientError,
    path: &Path,
    spec: &MediaSpec,
    size: usize,
) -> anyhow::Error {
    let msg = match e.code() {
        Some(pb::ErrorCode::AssetTooLarge) => format!(
            "{} is {}: more than the server accepts (the default limit is {}; the server says: {})",
            path.display(),
            human_size(size as u64),
            human_size(DEFAULT_LIMIT),
            server_message(&e)
        ),
        Some(pb::ErrorCode::UnsupportedMediaType) => format!(
            "the server does not accept {} files ({}); by default it takes jpeg, png, gif, webp, \
             heic images, ogg, opus, mp3, m4a, aac, webm audio, mp4, pdf, text and \
             application/octet-stream; --mime declares another type",
            spec.mime_type,
            path.display()
        ),
        _ => format!("could not upload {}: {e}", path.display()),
    };
    anyhow::Error::from(e).context(msg)
}

fn server_message(e: &chat_client::ClientError) -> String {
    match e {
        chat_client::ClientError::Server { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Pixel size of a PNG, GIF or JPEG image, from its header.
pub fn image_size(data: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *data.get(i)?,
            *data.get(i + 1)?,
        ])))
    };
    if data.starts_with(b"\x89PNG\r\n\x1a\n") && data.get(12..16) == Some(b"IHDR") {
        let be32 = |i: usize| -> Option<u32> {
            Some(u32::from_be_bytes(data.get(i..i + 4)?.try_into().ok()?))
        };
        return Some((be32(16)?, be32(20)?));
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        let le16 = |i: usize| -> Option<u32> {
            Some(u32::from(u16::from_le_bytes([
                *data.get(i)?,
                *data.get(i + 1)?,
            ])))
        };
        return Some((le16(6)?, le16(8)?));
    }
    if data.starts_with(&[0xFF, 0xD8]) {
        // Walk the JPEG segments to the first start-of-frame.
        let mut i = 2;
        while i + 3 < data.len() {
            if data[i] != 0xFF {
                return None;
            }
            let marker = data[i + 1];
            if marker == 0xFF {
                i += 1; // fill byte
                continue;
            }
            if matches!(marker, 0xD0..=0xD9 | 0x01) {
                i += 2; // no length
                continue;
            }
            let len = usize::try_from(be16(i + 2)?).ok()?;
            let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
            if sof {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

/// Bytes as people read them: "512 B", "3.5 KiB", "300 KiB", "1.2 MiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// An attachment in a few words: "image cat.jpg 640x480 300 KiB", "voice 0:12 40 KiB".
pub fn describe(m: &pb::Media) -> String {
    let mut parts = vec![kind_name(m.kind()).to_string()];
    if !m.file_name.is_empty() {
        parts.push(printable(&m.file_name));
    } else if m.kind() == pb::MediaKind::File {
        parts.push(printable(&m.mime_type));
    }
    if m.width > 0 && m.height > 0 {
        parts.push(format!("{}x{}", m.width, m.height));
    }
    if m.duration_ms > 0 {
        let secs = m.duration_ms.div_ceil(1000);
        parts.push(format!("{}:{:02}", secs / 60, secs % 60));
    }
    parts.push(human_size(m.size));
    parts.join(" ")
}

/// The attachment as a JSON object.
pub fn to_json(m: &pb::Media) -> serde_json::Value {
    json!({
        "asset_id": hex(&m.asset_id), "kind": kind_name(m.kind()), "mime_type": m.mime_type,
        "size": m.size, "sha256": hex(&m.sha256), "file_name": m.file_name,
        "duration_ms": m.duration_ms, "width": m.width, "height": m.height,
        "has_thumbnail": !m.thumbnail.is_empty(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A peer's file name made safe to print: control characters become '?'.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The file name an attachment is saved under: `<seq>-<name>.<ext>`, where name is the
/// sender's file name (or the asset id) with path separators, control and other unsafe
/// characters replaced and leading dots dropped, and ext comes from the name or else the
/// mime type.
pub fn save_name(seq: u64, m: &pb::Media) -> String {
    let cleaned: String = m
        .file_name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' ']);
    // Keep the name short, whole characters only.
    let mut name: String = cleaned.chars().take(100).collect();
    if name.is_empty() {
        name = hex(&m.asset_id);
    }
    if name.is_empty() {
        name = "media".into();
    }
    let has_ext = Path::new(&name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            (1..=5).contains(&e.len()) && e.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if !has_ext {
        name = format!("{name}.{}", extension_of(&m.mime_type));
    }
    format!("{seq}-{name}")
}

/// Downloads the attachment of `msg` into `dir` (see `save_name`) and returns the path. A
/// file already there with the same bytes is reused; a different one is not overwritten
/// (the new file gets a "-2", "-3", ... suffix).
pub fn save(conn: &Connection, msg: &pb::Message, dir: &Path) -> anyhow::Result<PathBuf> {
    let media = msg
        .media
        .as_deref()
        .ok_or_else(|| anyhow!("the message has no media"))?;
    let data = conn.fetch_asset(media, msg.group_id)?;
    let name = save_name(msg.seq, media);
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) => (stem.to_string(), format!(".{ext}")),
        None => (name.clone(), String::new()),
    };
    for n in 1..1000 {
        let file = if n == 1 {
            name.clone()
        } else {
            format!("{stem}-{n}{ext}")
        };
        let path = dir.join(&file);
        match std::fs::read(&path) {
            Ok(existing) if existing == data => return Ok(path),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        }
        // Write beside it and rename, so a failed write leaves no partial file behind.
        let part = dir.join(format!(".{file}.part"));
        std::fs::write(&part, &data).map_err(|e| {
            let _ = std::fs::remove_file(&part);
            anyhow!("cannot write {}: {e}", part.display())
        })?;
        std::fs::rename(&part, &path)
            .map_err(|e| anyhow!("cannot move {} to {}: {e}", part.display(), path.display()))?;
        return Ok(path);
    }
    bail!("too many files named like {} in {}", name, dir.display())
}

/// Creates the directory media is saved to.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))
}

/// Saves a message's attachment, if it has one, and reports where (or why not); never fails,
/// so a bad download does not end a listen.
pub fn save_and_report(
    conn: &Connection,
    msg: &pb::Message,
    dir: Option<&Path>,
    out: crate::output::Output,
) {
    let (Some(dir), Some(media)) = (dir, msg.media.as_deref()) else {
        return;
    };
    match save(conn, msg, dir) {
        Ok(path) => out.saved(msg, media, &path),
        Err(e) => {
            let what = format!(
                "could not save the {} of message seq {} (asset {}): {e}",
                kind_name(media.kind()),
                msg.seq,
                hex(&media.asset_id)
            );
            out.error(&e.context(what));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn mime_types_come_from_extensions() {
        assert_eq!(guess_mime(Path::new("a/cat.JPG")), "image/jpeg");
        assert_eq!(guess_mime(Path::new("note.oga")), "audio/ogg");
        assert_eq!(guess_mime(Path::new("song.mp3")), "audio/mpeg");
        assert_eq!(guess_mime(Path::new("clip.mp4")), "video/mp4");
        assert_eq!(guess_mime(Path::new("README")), FALLBACK_MIME);
        assert_eq!(guess_mime(Path::new("x.tar.gz")), FALLBACK_MIME);
        assert_eq!(kind_of("image/png"), pb::MediaKind::Image);
        assert_eq!(kind_of("audio/ogg"), pb::MediaKind::Voice);
        assert_eq!(kind_of("video/mp4"), pb::MediaKind::File);
        assert_eq!(extension_of("audio/mpeg"), "mp3");
        assert_eq!(extension_of("application/octet-stream"), "bin");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(300 * 1024), "300 KiB");
        assert_eq!(human_size(16 << 20), "16 MiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }

    fn media(file_name: &str, mime: &str) -> pb::Media {
        pb::Media {
            asset_id: vec![0xab, 0x01].into(),
            mime_type: mime.into(),
            file_name: file_name.into(),
            kind: kind_of(mime) as i32,
            size: 300 * 1024,
            ..Default::default()
        }
    }

    #[test]
    fn saved_names_are_safe() {
        assert_eq!(save_name(7, &media("cat.jpg", "image/jpeg")), "7-cat.jpg");
        assert_eq!(save_name(7, &media("", "image/png")), "7-ab01.png");
        assert_eq!(save_name(7, &media("notes", "text/plain")), "7-notes.txt");
        assert_eq!(
            save_name(7, &media("../../etc/passwd", "text/plain")),
            "7-_.._etc_passwd.txt"
        );
        assert_eq!(
            save_name(7, &media("...hidden", "image/gif")),
            "7-hidden.gif"
        );
        assert_eq!(
            save_name(7, &media("a\\b\n.pdf", "application/pdf")),
            "7-a_b_.pdf"
        );
        assert_eq!(
            save_name(7, &media("..", "application/x-what")),
            "7-ab01.bin"
        );
        let long = "x".repeat(500);
        assert!(save_name(1, &media(&long, "text/plain")).len() < 120);
    }

    #[test]
    fn attachments_are_described() {
        assert_eq!(
            describe(&media("cat.jpg", "image/jpeg")),
            "image cat.jpg 300 KiB"
        );
        let mut voice = media("", "audio/ogg");
        voice.duration_ms = 12_300;
        assert_eq!(describe(&voice), "voice 0:13 300 KiB");
        let mut img = media("a\x1b[2J.png", "image/png");
        img.width = 640;
        img.height = 480;
        assert_eq!(describe(&img), "image a?[2J.png 640x480 300 KiB");
        let j = to_json(&img);
        assert_eq!(j["asset_id"], "ab01");
        assert_eq!(j["kind"], "image");
    }

    #[test]
    fn image_sizes_from_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((640, 480)));
        let gif = b"GIF89a\x80\x02\xe0\x01rest";
        assert_eq!(image_size(gif), Some((640, 480)));
        // SOI, an APP0 segment of length 4, then SOF0 with height 480, width 640.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01,
            0xE0, 0x02, 0x80, 0x03,
        ];
        assert_eq!(image_size(&jpeg), Some((640, 480)));
        assert_eq!(image_size(&jpeg[..12]), None);
        assert_eq!(image_size(b"\xFF\xD8\xFF"), None);
        assert_eq!(image_size(b"plain"), None);
    }
}
