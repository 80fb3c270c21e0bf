//! Images, voice notes and files: chunked resumable uploads, media messages, fetches and
//! who may make them.

use chat_client::{pb, MediaSpec};
use rand::RngCore;

use crate::support::{code, next_message, TestServer};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

fn image() -> MediaSpec {
    MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/jpeg".into(),
        width: 640,
        height: 480,
        file_name: "cat.jpg".into(),
        ..Default::default()
    }
}

fn voice() -> MediaSpec {
    MediaSpec {
        kind: pb::MediaKind::Voice,
        mime_type: "audio/ogg".into(),
        duration_ms: 4200,
        ..Default::default()
    }
}

#[test]
fn image_1to1_and_voice_note_in_a_group_arrive_and_fetch_identical() {
    let server = TestServer::start(2);
    let (alice, a) = server.user("alice");
    let (bob, b) = server.user("bob");
    let (carol, c) = server.user("carol");
    let (dave, _) = server.user("dave");
    for conn in [&bob, &carol] {
        conn.sync(None).unwrap();
    }

    // 300 KiB: five chunks of 64 KiB, the last one short.
    let photo = random_bytes(300 * 1024 + 17);
    let mut media = alice.upload(&photo, &image()).unwrap();
    assert_eq!(media.asset_id.len(), 16);
    assert_eq!(media.size, photo.len() as u64);
    assert_eq!(media.sha256[..], chat_client::sha256(&photo)[..]);
    assert_eq!((media.width, media.height), (640, 480));
    media.thumbnail = vec![7u8; 1000].into();
    let ack = alice.send_media(b.user_id, &media, "look").unwrap();

    let got = next_message(&bob);
    assert_eq!(got.seq, ack.seq);
    assert_eq!(got.text, "look");
    let m = got.media.expect("the message carries media");
    assert_eq!(m.asset_id, media.asset_id);
    assert_eq!(m.kind(), pb::MediaKind::Image);
    assert_eq!(m.mime_type, "image/jpeg");
    assert_eq!(m.thumbnail.len(), 1000);
    assert_eq!(m.file_name, "cat.jpg");
    assert_eq!(bob.fetch_asset(&m, 0).unwrap(), photo);
    assert_eq!(alice.fetch_asset(&m, 0).unwrap(), photo);
    // History keeps the media too.
    let page = bob.history(a.user_id, 0, 10).unwrap();
    assert_eq!(
        page.messages[0].media.as_ref().unwrap().asset_id,
        media.asset_id
    );

    // Nobody else may fetch it, and that looks like an asset that does not exist.
    assert_eq!(code(dave.fetch_asset(&m, 0)), pb::ErrorCode::AssetNotFound);
    assert_eq!(
        code(carol.fetch_asset_range(&m.asset_id, 0, 10, 0)),
        pb::ErrorCode::AssetNotFound
    );
    let unknown = random_bytes(16);
    assert_eq!(
        code(dave.fetch_asset_range(&unknown, 0, 10, 0)),
        pb::ErrorCode::AssetNotFound
    );
    // Nor send it on: only the uploader and those it was sent to may share it.
    assert_eq!(
        code(dave.send_media(c.user_id, &m, "")),
        pb::ErrorCode::AssetNotFound
    );

    // A voice note in a group, caption-less.
    let group = alice.create_group("band", &[b.user_id, c.user_id]).unwrap();
    let note = random_bytes(150 * 1024);
    let media = alice.upload(&note, &voice()).unwrap();
    assert_eq!(media.duration_ms, 4200);
    let ack = alice.send_group_media(group.group_id, &media, "").unwrap();
    for member in [&bob, &carol] {
        let got = loop {
            match crate::support::next_event(member).kind {
                Some(pb::event::Kind::Message(m)) => break m,
                _ => continue,
            }
        };
        assert_eq!((got.group_id, got.seq), (group.group_id, ack.seq));
        let m = got.media.expect("media");
        assert_eq!(m.kind(), pb::MediaKind::Voice);
        assert_eq!(m.duration_ms, 4200);
        assert_eq!(member.fetch_asset(&m, group.group_id).unwrap(), note);
    }
    // Members fetch group media through the group; outsiders cannot, with or without it.
    assert_eq!(
        code(dave.fetch_asset(&media, group.group_id)),
        pb::ErrorCode::AssetNotFound
    );
    assert_eq!(
        code(dave.fetch_asset(&media, 0)),
        pb::ErrorCode::AssetNotFound
    );
    // A member who leaves loses access.
    carol.leave_group(group.group_id).unwrap();
    assert_eq!(
        code(carol.fetch_asset(&media, group.group_id)),
        pb::ErrorCode::AssetNotFound
    );

    // Ranges: a slice in the middle, and past the end.
    let part = bob
        .fetch_asset_range(&media.asset_id, 1000, 5000, group.group_id)
        .unwrap();
    assert_eq!(part.data[..], note[1000..6000]);
    assert_eq!(part.size, note.len() as u64);
    // Across the boundary of two stored chunks (64 KiB each here).
    let across = bob
        .fetch_asset_range(&media.asset_id, 60_000, 10_000, group.group_id)
        .unwrap();
    assert_eq!(across.data[..], note[60_000..70_000]);
    let past = bob
        .fetch_asset_range(&media.asset_id, note.len() as u64, 10, group.group_id)
        .unwrap();
    assert!(past.data.is_empty());
}

#[test]
fn an_interrupted_upload_resumes_after_a_reconnect_and_a_restart() {
    let mut server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (_bob, b) = server.user("bob");
    let data = random_bytes(400 * 1024);
    let sha = chat_client::sha256(&data);
    let spec = MediaSpec {
        kind: pb::MediaKind::File,
        mime_type: "application/pdf".into(),
        file_name: "report.pdf".into(),
        ..Default::default()
    };

    let status = alice.upload_start(data.len() as u64, &sha, &spec).unwrap();
    assert_eq!(status.offset, 0);
    assert_eq!(status.max_chunk_bytes, 64 * 1024);
    let reached = alice.upload_from(&data, &status, 128 * 1024).unwrap();
    assert_eq!(reached, 128 * 1024);
    drop(alice);

    // A new connection finds the upload where it stopped.
    let (alice, _) = server.login("alice");
    let again = alice.upload_start(data.len() as u64, &sha, &spec).unwrap();
    assert_eq!(again.upload_id, status.upload_id);
    assert_eq!(again.offset, 128 * 1024);
    // A chunk at the wrong offset is refused, and says where the upload stands.
    let err = alice
        .upload_chunk(&again.upload_id, 0, &data[..10])
        .unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::UploadOffsetMismatch));
    assert!(err.to_string().contains("131072"), "{err}");
    assert_eq!(
        code(alice.upload_finish(&again.upload_id)),
        pb::ErrorCode::UploadIncomplete
    );
    alice.upload_from(&data, &again, 256 * 1024).unwrap();
    drop(alice);

    // And so does the server after a restart (the running checksum is rebuilt).
    server.restart();
    let (alice, _) = server.login("alice");
    let again = alice.upload_start(data.len() as u64, &sha, &spec).unwrap();
    assert_eq!(again.offset, 256 * 1024);
    alice.upload_from(&data, &again, u64::MAX).unwrap();
    let media = alice.upload_finish(&again.upload_id).unwrap();
    assert_eq!(media.file_name, "report.pdf");
    alice.send_media(b.user_id, &media, "the report").unwrap();
    let (bob, _) = server.login("bob");
    bob.sync(None).unwrap();
    let got = next_message(&bob);
    assert_eq!(
        bob.fetch_asset(got.media.as_ref().unwrap(), 0).unwrap(),
        data
    );
    // A finished upload is gone: starting the same file again is a new upload.
    let fresh = alice.upload_start(data.len() as u64, &sha, &spec).unwrap();
    assert_ne!(fresh.upload_id, status.upload_id);
    assert_eq!(fresh.offset, 0);
}

#[test]
fn bad_uploads_are_refused_with_clear_codes() {
    let server = TestServer::start_with(2, |c| c.media.max_asset_bytes = 1 << 20, |_| {});
    let (alice, _) = server.user("alice");
    let (eve, _) = server.user("eve");
    let data = random_bytes(100 * 1024);
    let sha = chat_client::sha256(&data);

    // Too large for the server: refused before any byte is sent.
    let err = alice.upload_start(2 << 20, &sha, &image()).unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::AssetTooLarge));
    // Not an allowed type.
    let exe = MediaSpec {
        mime_type: "application/x-msdownload".into(),
        ..image()
    };
    assert_eq!(
        code(alice.upload_start(data.len() as u64, &sha, &exe)),
        pb::ErrorCode::UnsupportedMediaType
    );
    // Malformed declarations.
    let bad_sha = alice.request(pb::envelope::Body::UploadStart(pb::UploadStart {
        size: 10,
        mime_type: "image/png".into(),
        sha256: vec![1u8; 31].into(),
        kind: pb::MediaKind::Image as i32,
        ..Default::default()
    }));
    assert_eq!(code(bad_sha), pb::ErrorCode::InvalidArgument);

    // A chunk past the declared size.
    let status = alice
        .upload_start(data.len() as u64, &sha, &image())
        .unwrap();
    let too_long = vec![0u8; 64 * 1024];
    alice.upload_chunk(&status.upload_id, 0, &too_long).unwrap();
    assert_eq!(
        code(alice.upload_chunk(&status.upload_id, 64 * 1024, &too_long)),
        pb::ErrorCode::AssetTooLarge
    );
    // Someone else's upload does not exist for eve.
    assert_eq!(
        code(eve.upload_chunk(&status.upload_id, 64 * 1024, &data[..10])),
        pb::ErrorCode::AssetNotFound
    );
    assert_eq!(
        code(eve.upload_finish(&status.upload_id)),
        pb::ErrorCode::AssetNotFound
    );

    // Bytes that do not match the declared SHA-256: refused, and the upload is gone.
    let wrong = random_bytes(data.len());
    let status = alice
        .upload_start(wrong.len() as u64, &sha, &voice())
        .unwrap();
    assert_eq!(status.offset, 64 * 1024, "the same declared file resumes");
    let other_sha = chat_client::sha256(b"something else");
    let status = alice
        .upload_start(wrong.len() as u64, &other_sha, &voice())
        .unwrap();
    alice.upload_from(&wrong, &status, u64::MAX).unwrap();
    assert_eq!(
        code(alice.upload_finish(&status.upload_id)),
        pb::ErrorCode::ChecksumMismatch
    );
    assert_eq!(
        code(alice.upload_finish(&status.upload_id)),
        pb::ErrorCode::AssetNotFound
    );

    // A send naming an asset that does not exist.
    let fake = pb::Media {
        asset_id: random_bytes(16).into(),
        ..Default::default()
    };
    let (_bob, b) = server.user("bob");
    assert_eq!(
        code(alice.send_media(b.user_id, &fake, "")),
        pb::ErrorCode::AssetNotFound
    );
    // The connection is still fine after all of that.
    alice.ping().unwrap();
}

#[test]
fn the_same_file_uploaded_twice_is_stored_once() {
    let mut server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let data = random_bytes(200 * 1024);
    let first = alice.upload(&data, &image()).unwrap();
    let second = alice.upload(&data, &image()).unwrap();
    assert_ne!(
        first.asset_id, second.asset_id,
        "each upload is its own asset"
    );
    assert_eq!(alice.fetch_asset(&first, 0).unwrap(), data);
    assert_eq!(alice.fetch_asset(&second, 0).unwrap(), data);
    drop(alice);
    server.stop();
    let mut total = (0, 0);
    for shard in 0..server.shards {
        let dir = server.dir.path().join(format!("shard-{shard}"));
        let store = chat_storage::Store::open(&dir, chat_storage::Durability::Wal).unwrap();
        let (contents, bytes) = store.content_stats().unwrap();
        total = (total.0 + contents, total.1 + bytes);
    }
    assert_eq!(total, (1, data.len() as u64));
}

#[test]
fn a_media_send_keeps_its_place_among_pipelined_sends() {
    let server = TestServer::start(2);
    let (alice, _) = server.user("alice");
    let (bob, b) = server.user("bob");
    bob.sync(None).unwrap();
    let media = alice.upload(&random_bytes(10_000), &image()).unwrap();
    // Ten sends in flight at once, every third with media (which is checked on the
    // asset's shard first): bob must get them in the order they were sent.
    let pending: Vec<_> = (1..=10u64)
        .map(|i| {
            let body = pb::envelope::Body::SendMessage(pb::SendMessage {
                to_user_id: b.user_id,
                client_msg_id: i,
                text: format!("m{i}"),
                media: (i % 3 == 1).then(|| {
                    Box::new(pb::Media {
                        asset_id: media.asset_id.clone(),
                        ..Default::default()
                    })
                }),
                reply_to_us: 0,
            });
            alice.start(body).unwrap()
        })
        .collect();
    for rx in pending {
        alice.finish(rx).unwrap();
    }
    for i in 1..=10u64 {
        let got = next_message(&bob);
        assert_eq!(got.text, format!("m{i}"));
        assert_eq!(got.media.is_some(), i % 3 == 1);
    }
}

#[test]
fn mime_types_are_trimmed_and_lowercased_then_matched_exactly() {
    let server = TestServer::start(1);
    let (alice, _) = server.user("alice");
    let data = random_bytes(1000);
    let spec = |mime: &str| MediaSpec {
        mime_type: mime.into(),
        ..image()
    };
    let media = alice.upload(&data, &spec("  Image/JPEG\t")).unwrap();
    assert_eq!(
        media.mime_type, "image/jpeg",
        "the asset keeps the normal form"
    );
    let sha = chat_client::sha256(&data);
    for refused in ["image/jpeg; q=1", "image/*", "image/jpe g"] {
        assert_eq!(
            code(alice.upload_start(data.len() as u64, &sha, &spec(refused))),
            pb::ErrorCode::UnsupportedMediaType,
            "{refused:?}"
        );
    }
}
