//! Tests of the log engine on real files: reopen, torn tails, damage, space reclamation,
//! and a model-based property test with simulated power cuts.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

const SMALL: u64 = 4096;

fn open(dir: &Path) -> LogStorage {
    LogStorage::open_with_target(dir, b's', SMALL).unwrap()
}

fn put(k: &[u8], v: &[u8]) -> Op {
    Op::Put(k.to_vec(), v.to_vec())
}

fn del(k: &[u8]) -> Op {
    Op::Delete(k.to_vec())
}

fn seg(n: u64) -> Vec<u8> {
    let mut k = vec![b's'];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Every entry, ascending.
fn dump(s: &LogStorage) -> BTreeMap<Vec<u8>, Vec<u8>> {
    s.range(&[], &[0xff; 16], usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn log_files(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(file_number))
        .collect();
    v.sort_unstable();
    v
}

fn corrupt(e: Result<LogStorage, LogOpenError>) -> String {
    match e {
        Err(LogOpenError::Corrupt(why)) => why,
        Err(LogOpenError::Io(e)) => panic!("expected corruption, got I/O error {e}"),
        Ok(_) => panic!("expected corruption, the store opened"),
    }
}

#[test]
fn entries_survive_reopen_and_queries_agree() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        assert!(s.is_empty());
        s.apply(vec![
            put(b"m/format", b"1"),
            put(&seg(1), b"one"),
            put(&seg(2), b"two"),
        ])
        .unwrap();
        s.apply(vec![
            put(&seg(3), b"three"),
            del(&seg(1)),
            put(b"l\0", b"loss"),
        ])
        .unwrap();
        s.flush().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.get(b"m/format").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(&seg(1)).unwrap(), None);
    let segs = s.range(&seg(0), b"t", 10).unwrap();
    let keys: Vec<_> = segs.iter().map(|(k, _)| k.to_vec()).collect();
    assert_eq!(keys, vec![seg(2), seg(3)]);
    assert_eq!(
        s.floor(&seg(0), &seg(2)).unwrap().unwrap().1.as_ref(),
        b"two"
    );
    assert_eq!(s.last(&seg(0), b"t").unwrap().unwrap().1.as_ref(), b"three");
    assert_eq!(s.range(&seg(0), b"t", 1).unwrap().len(), 1);
    assert!(!s.is_empty());
}

#[test]
fn a_second_handle_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    match LogStorage::open(dir.path(), b's') {
        Err(LogOpenError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        _ => panic!("a second open must fail with WouldBlock"),
    }
    drop(s);
    open(dir.path());
}

#[test]
fn a_torn_final_frame_is_cut_off_and_writing_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(dir.path(), 1);
    let good = {
        let s = open(dir.path());
        s.apply(vec![put(b"a", b"kept")]).unwrap();
        s.flush().unwrap();
        s.writer().end
    };
    let end = {
        let s = open(dir.path());
        s.apply(vec![put(b"b", &[7; 100])]).unwrap();
        s.writer().end
    };
    // Every possible tear of the second frame.
    let full = std::fs::read(&path).unwrap()[..end as usize].to_vec();
    for cut in (good + 1)..end {
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        let s = open(dir.path());
        let d = dump(&s);
        assert_eq!(d.len(), 1, "tear at {cut}");
        assert_eq!(d[&b"a".to_vec()], b"kept");
        drop(s);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            good,
            "tail cut at {cut}"
        );
    }
    let s = open(dir.path());
    s.apply(vec![put(b"c", b"after")]).unwrap();
    s.flush().unwrap();
    drop(s);
    assert_eq!(dump(&open(dir.path())).len(), 2);
}

#[test]
fn garbage_after_the_last_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(vec![put(b"a", b"kept")]).unwrap();
        s.flush().unwrap();
    }
    let path = file_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x5a; 300]);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(dump(&open(dir.path())).len(), 1);
}

/// A payload may hold bytes that form a frame (a hostile device, or chance): when a torn
/// write leaves them behind, they must not pass for a good frame and turn the torn tail
/// into "damage in the middle" (which would move the whole store aside).
#[test]
fn a_frame_inside_a_payload_cannot_turn_a_torn_tail_into_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(dir.path(), 1);
    let s = open(dir.path());
    let mut fake = Vec::new();
    let guess = [frame::FrameOp::Put {
        key: b"x",
        crc: frame::crc(b"y"),
        value: b"y",
    }];
    for salt in [0, 1, u64::MAX] {
        let mut one = Vec::new();
        frame::encode(&guess, salt, &mut one).unwrap();
        fake.extend_from_slice(&one);
    }
    s.apply(vec![put(b"a", b"kept")]).unwrap();
    s.flush().unwrap();
    let good = s.writer().end;
    drop(s);
    let s = open(dir.path());
    s.apply(vec![put(b"b", &fake)]).unwrap();
    drop(s);
    // A power cut that lost the first block of the last write but kept the rest.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[good as usize..good as usize + 24] {
        *b = 0;
    }
    std::fs::write(&path, &bytes).unwrap();
    let s = open(dir.path());
    assert_eq!(dump(&s).len(), 1);
    drop(s);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
}

#[test]
fn a_bad_frame_followed_by_a_good_one_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(vec![put(b"a", b"first")]).unwrap();
        s.apply(vec![put(b"b", b"second")]).unwrap();
        s.flush().unwrap();
    }
    let path = file_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // A key byte of the first frame (24 file header + 24 frame header + 7 op header).
    bytes[24 + 24 + 7] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let why = corrupt(LogStorage::open_with_target(dir.path(), b's', SMALL));
    assert!(why.contains("good frame follows"), "{why}");
}

#[test]
fn damage_in_an_older_file_or_a_missing_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for i in 0..40u64 {
            s.apply(vec![put(&seg(i), &[1; 500])]).unwrap();
        }
        s.flush().unwrap();
    }
    let files = log_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let p = file_path(dir.path(), files[0]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[24 + 2] ^= 1; // frame header of the first frame
    std::fs::write(&p, &bytes).unwrap();
    let why = corrupt(LogStorage::open_with_target(dir.path(), b's', SMALL));
    assert!(why.contains("frame at offset 24"), "{why}");
    bytes[24 + 2] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(dump(&open(dir.path())).len(), 40);
    std::fs::remove_file(file_path(dir.path(), files[1])).unwrap();
    let why = corrupt(LogStorage::open_with_target(dir.path(), b's', SMALL));
    assert!(why.contains("missing"), "{why}");
}

#[test]
fn a_rotten_value_in_an_older_file_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for i in 0..20u64 {
            s.apply(vec![put(&seg(i), &[i as u8; 500])]).unwrap();
        }
        s.flush().unwrap();
    }
    let p = file_path(dir.path(), 1);
    let mut bytes = std::fs::read(&p).unwrap();
    // The last byte of the first frame's value.
    let end = 24 + 24 + 7 + 9 + 4 + 500;
    bytes[end - 1] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let s = open(dir.path());
    assert_eq!(s.get(&seg(0)).unwrap().unwrap().len(), 0);
    assert_eq!(s.get(&seg(1)).unwrap().unwrap().as_ref(), &[1; 500]);
}

#[test]
fn dead_files_are_removed_and_long_lived_keys_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.apply(vec![put(b"m/format", b"1")]).unwrap();
    for i in 0..100u64 {
        s.apply(vec![
            put(&seg(i), &[2; 300]),
            put(b"m/state", &i.to_be_bytes()),
        ])
        .unwrap();
        if i >= 10 {
            // A queue: the oldest records are consumed as new ones arrive.
            s.apply(vec![del(&seg(i - 10))]).unwrap();
        }
        s.flush().unwrap();
    }
    let files = log_files(dir.path());
    assert!(files.len() <= 3, "old files must be reclaimed: {files:?}");
    assert!(files[0] > 1, "{files:?}");
    drop(s);
    let s = open(dir.path());
    let d = dump(&s);
    assert_eq!(d[&b"m/format".to_vec()], b"1");
    assert_eq!(d[&b"m/state".to_vec()], 99u64.to_be_bytes());
    let segs: Vec<_> = d.keys().filter(|k| k[0] == b's').cloned().collect();
    assert_eq!(segs, (90..100).map(seg).collect::<Vec<_>>());
}

/// Files are preallocated ahead of need; the zeros after the last frame are free space,
/// not a torn tail, and stay allocated across a reopen.
#[test]
fn preallocated_files_are_used_and_their_free_space_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut i = 0u64;
    // Fill past half of the first file, let the spare be prepared, then roll into it.
    while log_files(dir.path()).len() < 2 {
        s.apply(vec![put(&seg(i), &[3; 300])]).unwrap();
        s.flush().unwrap();
        i += 1;
        if i == 8 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let second = file_path(dir.path(), 2);
    let len = std::fs::metadata(&second).unwrap().len();
    assert!(len >= SMALL, "the new file was preallocated: {len} bytes");
    drop(s);
    let s = open(dir.path());
    assert_eq!(dump(&s).len() as u64, i);
    assert_eq!(
        std::fs::metadata(&second).unwrap().len(),
        len,
        "free space kept"
    );
    s.apply(vec![put(b"after", b"reopen")]).unwrap();
    s.flush().unwrap();
    drop(s);
    assert_eq!(dump(&open(dir.path())).len() as u64, i + 1);
    // No spare outlives its store.
    let spares = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("spare-"))
        })
        .count();
    assert_eq!(spares, 0);
}

/// Segments are consumed in order and die where they are: a file that still holds one is
/// kept, however few; once it holds none, its other live values move forward and it goes.
#[test]
fn files_holding_segments_are_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.apply(vec![put(b"m/format", b"1")]).unwrap();
    let mut n = 0u64;
    while log_files(dir.path()).len() < 3 {
        s.apply(vec![put(&seg(n), &[5; 400])]).unwrap();
        s.flush().unwrap();
        n += 1;
    }
    // Which segments are in file 1?
    let in_first: Vec<u64> = (0..n)
        .filter(|&i| s.state().index.get(&seg(i)).is_some_and(|l| l.file == 1))
        .collect();
    assert!(in_first.len() > 2);
    // Acknowledge all but the last segment of file 1: it stays.
    for &i in &in_first[..in_first.len() - 1] {
        s.apply(vec![del(&seg(i))]).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(
        log_files(dir.path())[0],
        1,
        "a file with a live segment is kept"
    );
    let written = s.writer().end;
    s.apply(vec![del(&seg(*in_first.last().unwrap()))]).unwrap();
    s.flush().unwrap();
    assert!(log_files(dir.path())[0] > 1, "then it goes");
    // Only the format marker moved (plus the delete): a frame of a few dozen bytes.
    assert!(
        s.writer().end - written < 200,
        "{}",
        s.writer().end - written
    );
    drop(s);
    assert_eq!(dump(&open(dir.path()))[&b"m/format".to_vec()], b"1");
}

/// A newest file that was created but never written (a crash or a full disk while
/// starting it) is removed, and the file before it is recovered as the newest: it may
/// have been written on after the failed start, so its torn tail is cut, not taken for
/// damage in an older file.
#[test]
fn a_file_created_but_never_written_is_removed_and_the_one_before_recovered() {
    for never_written in [&[0u8; 5][..], &[0u8; 24][..], &[0u8; 4096][..]] {
        let dir = tempfile::tempdir().unwrap();
        let good = {
            let s = open(dir.path());
            s.apply(vec![put(b"a", b"1")]).unwrap();
            s.flush().unwrap();
            s.writer().end
        };
        std::fs::write(file_path(dir.path(), 2), never_written).unwrap();
        // A torn frame after the failed start, in the file before it.
        let mut bytes = std::fs::read(file_path(dir.path(), 1)).unwrap();
        bytes.truncate(good as usize);
        let mut torn = Vec::new();
        frame::encode(
            &[frame::FrameOp::Put {
                key: b"b",
                crc: frame::crc(b"lost"),
                value: b"lost",
            }],
            0,
            &mut torn,
        )
        .unwrap();
        bytes.extend_from_slice(&torn[..torn.len() - 2]);
        std::fs::write(file_path(dir.path(), 1), &bytes).unwrap();

        let s = open(dir.path());
        assert_eq!(dump(&s).len(), 1);
        assert_eq!(log_files(dir.path()), vec![1]);
        s.apply(vec![put(b"c", b"3")]).unwrap();
        s.flush().unwrap();
        drop(s);
        let d = dump(&open(dir.path()));
        assert_eq!(
            d.keys().cloned().collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
    }
}

/// The only file of a store, created but never written, starts over.
#[test]
fn a_store_whose_only_file_was_never_written_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(file_path(dir.path(), 1), [0u8; 7]).unwrap();
    let s = open(dir.path());
    assert!(s.is_empty());
    s.apply(vec![put(b"a", b"1")]).unwrap();
    s.flush().unwrap();
    drop(s);
    assert_eq!(dump(&open(dir.path())).len(), 1);
    let header = std::fs::read(file_path(dir.path(), 1)).unwrap();
    assert!(frame::parse_file_header(&header[..24], 1).is_some());
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Step {
    Apply(Vec<(bool, u8, u16)>),
    Flush,
    Reopen,
    /// A power cut: the newest file loses an arbitrary part of what was not flushed.
    PowerCut(u16),
}

fn step() -> impl Strategy<Value = Step> {
    let op = (any::<bool>(), 0u8..24, 0u16..700);
    prop_oneof![
        6 => proptest::collection::vec(op, 1..6).prop_map(Step::Apply),
        3 => Just(Step::Flush),
        1 => Just(Step::Reopen),
        1 => any::<u16>().prop_map(Step::PowerCut),
    ]
}

fn key_of(k: u8) -> Vec<u8> {
    if k < 16 {
        seg(u64::from(k))
    } else {
        vec![b'm', k]
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The engine matches an in-memory map across reopens, and after a power cut it holds
    /// the last flushed state plus a prefix of the batches applied after it: never a torn
    /// batch, never a batch without the ones before it.
    #[test]
    fn engine_matches_model_across_power_cuts(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Some(open(dir.path()));
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // States after each batch applied since the last flush (first: the flushed state),
        // and where each batch ended in the newest file.
        let mut since_flush: Vec<(Map, u32, u64)> = Vec::new();
        let mark = |s: &LogStorage| {
            let w = s.writer();
            (w.active, w.end)
        };
        let (a, e) = mark(s.as_ref().unwrap());
        since_flush.push((model.clone(), a, e));
        for (n, st) in steps.into_iter().enumerate() {
            let store = s.as_ref().unwrap();
            match st {
                Step::Apply(ops) => {
                    let mut batch = Vec::new();
                    for (is_put, k, len) in ops {
                        let key = key_of(k);
                        if is_put {
                            let v = vec![(n % 251) as u8; usize::from(len)];
                            model.insert(key.clone(), v.clone());
                            batch.push(Op::Put(key, v));
                        } else {
                            model.remove(&key);
                            batch.push(Op::Delete(key));
                        }
                    }
                    store.apply(batch).unwrap();
                    let (a, e) = mark(store);
                    since_flush.push((model.clone(), a, e));
                }
                Step::Flush => {
                    store.flush().unwrap();
                    let (a, e) = mark(store);
                    since_flush = vec![(model.clone(), a, e)];
                }
                Step::Reopen => {
                    drop(s.take());
                    s = Some(open(dir.path()));
                    prop_assert_eq!(dump(s.as_ref().unwrap()), model.clone());
                    let (a, e) = mark(s.as_ref().unwrap());
                    since_flush = vec![(model.clone(), a, e)];
                }
                Step::PowerCut(r) => {
                    let (active, end) = mark(store);
                    drop(s.take());
                    // Everything before the last flush is on disk; in the newest file the
                    // unflushed bytes are cut at an arbitrary point.
                    let (_, fa, fe) = since_flush[0].clone();
                    let floor = if fa == active { fe } else { frame::FILE_HEADER };
                    let cut = floor + u64::from(r) % (end - floor + 1);
                    let f = OpenOptions::new()
                        .write(true)
                        .open(file_path(dir.path(), active))
                        .unwrap();
                    let mut cut = cut;
                    if r % 2 == 0 {
                        // A file that was preallocated (or a growing file whose new size
                        // reached the disk before its data): the lost bytes read as zeros.
                        // Zeroing bytes that were zero loses nothing: the effective cut is
                        // the first non-zero byte.
                        let bytes = std::fs::read(file_path(dir.path(), active)).unwrap();
                        let len = bytes.len() as u64;
                        write_at(&f, &vec![0; (len - cut) as usize], cut).unwrap();
                        cut = (cut..end).find(|&i| bytes[i as usize] != 0).unwrap_or(end);
                    } else {
                        f.set_len(cut).unwrap();
                    }
                    drop(f);
                    s = Some(open(dir.path()));
                    let got = dump(s.as_ref().unwrap());
                    // Exactly the batches that ended at or before the cut survive (all of
                    // those that ended in older files, which were synced when the newest
                    // file was started).
                    let want = since_flush
                        .iter()
                        .rev()
                        .find(|(_, a, e)| *a != active || *e <= cut)
                        .map(|(m, _, _)| m.clone())
                        .unwrap();
                    prop_assert_eq!(&got, &want, "power cut at {}", cut);
                    model = got;
                    let (a, e) = mark(s.as_ref().unwrap());
                    since_flush = vec![(model.clone(), a, e)];
                }
            }
        }
    }
}
