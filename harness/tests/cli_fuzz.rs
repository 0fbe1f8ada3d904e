//! The real CLI on hostile images (issue 12): `udp-repair restore IMAGE --
//! /bin/sh -c "touch MARKER"` on a sample of images dumped from real
//! sockets and then mutated (bytes flipped or overwritten, record lengths
//! and kinds rewritten, records dropped or duplicated, cuts, runs
//! inserted), most of them resealed (body length and CRC32C trailer
//! recomputed, so that the mutation reaches the parser) and some not (the
//! checksum must refuse them), plus images whose CHECKPOINT announces far
//! more datagrams or bytes than they hold.
//!
//! Each run must exit 0 or 1, within [`common::TIME_LIMIT`], not by a
//! signal (a panic exits 101). Exit 1 (refused): stderr says why (the
//! decoder's reason after the image path, or the restore step that
//! failed), and the command did not run. Exit 0: the command ran, and
//! `udp_repair_proto::decode` accepts the image. Whatever `decode`
//! refuses, the CLI refuses. The figures (images tried, refused by reason,
//! accepted, wall time) are printed.
//!
//! `UDP_REPAIR_CLI_FUZZ_CASES` sets how many mutated images (default
//! 200); `UDP_REPAIR_CLI_FUZZ_SEED` the seed. The seed fixes the
//! mutations, not all the bytes: the images are dumped from live sockets,
//! whose ports and timestamps differ from run to run, so a failing image
//! is also kept (its path is in the failure message). Restores run as
//! this process (root) in its network namespace, each into the address of
//! a socket the test has closed; the images are its own (mode 0600), so
//! restore grants them privileged values.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
#[path = "../../proto/tests/support/mod.rs"]
mod support;
use common::{restore_cli, Outcome};
use support::{reseal, Rng};
use udp_repair_proto::v1::Checkpoint;
use udp_repair_proto::{
    decode, encode, ImageError, HEADER_LEN, RECORD_CHECKPOINT, RECORD_DATAGRAM, TRAILER_LEN,
    TRAILER_LEN_SHA256,
};

/// Writes `bytes` to a new file `name` of mode 0600 in `dir` (an image of
/// one's own: restore trusts it with privileged values), replacing any.
fn write_image(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// A real image: a socket bound to `local` (port 0), connected to its
/// sender if `connect`, with one queued datagram of each of `sizes` bytes,
/// dumped by the engine and encoded. Both sockets are closed on return, so
/// that a restore can bind the image's address.
fn dumped_image(local: &str, sizes: &[usize], connect: bool) -> Vec<u8> {
    let a = UdpSocket::bind(local).expect("binding the socket to dump");
    let b = UdpSocket::bind(local).expect("binding the sender");
    if connect {
        a.connect(b.local_addr().expect("sender address"))
            .expect("connecting");
    }
    let to: SocketAddr = a.local_addr().expect("socket address");
    for (i, &n) in sizes.iter().enumerate() {
        b.send_to(&vec![i as u8 ^ 0x5a; n], to).expect("sending");
    }
    // Loopback delivery is quick, but not synchronous with send_to.
    let deadline = Instant::now() + Duration::from_secs(2);
    let cp = loop {
        let cp = udp_repair_engine::dump::dump(a.as_fd()).expect("dumping a plain socket");
        let count = cp.receive_queue.as_ref().map_or(0, |q| q.count as usize);
        if count == sizes.len() || Instant::now() >= deadline {
            assert_eq!(count, sizes.len(), "datagrams queued on {to}");
            break cp;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    encode(&cp).expect("a dumped checkpoint encodes")
}

/// The records of `img` (kind byte to end of data), as far as they fit in
/// the body: what the record-wise mutations work on.
fn records(img: &[u8]) -> Vec<Range<usize>> {
    let end = img.len().saturating_sub(TRAILER_LEN);
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while at + 5 <= end {
        let len = u32::from_le_bytes(img[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        if len > end - at - 5 {
            break;
        }
        out.push(at..at + 5 + len);
        at += 5 + len;
    }
    out
}

/// One random change to the body of `img` (its trailer slot is left in
/// place, so that [`reseal`] can recompute it).
fn mutate(img: &mut Vec<u8>, rng: &mut Rng) {
    let body = HEADER_LEN..img.len().saturating_sub(TRAILER_LEN);
    if body.is_empty() {
        return;
    }
    let at = body.start + rng.below(body.len());
    let recs = records(img);
    let rec = (!recs.is_empty()).then(|| recs[rng.below(recs.len())].clone());
    match (rng.below(9), rec) {
        (0, _) => img[at] ^= 1 << rng.below(8),
        (1, _) => img[at] = rng.next() as u8,
        (2, Some(r)) => {
            // A record's length field: off by one, or a boundary value.
            let len = (r.len() - 5) as u32;
            let v = [
                0,
                1,
                len.wrapping_sub(1),
                len + 1,
                0xffff,
                70_001,
                0x00ff_ffff,
                u32::MAX,
                rng.next() as u32,
            ][rng.below(9)];
            img[r.start + 1..r.start + 5].copy_from_slice(&v.to_le_bytes());
        }
        (3, Some(r)) => {
            img.drain(r);
        }
        (4, Some(r)) => {
            // Duplicated, right after itself or at another record's place.
            let copy = img[r.clone()].to_vec();
            let to = if rng.below(2) == 0 {
                r.end
            } else {
                recs[rng.below(recs.len())].start
            };
            img.splice(to..to, copy);
        }
        (5, Some(r)) => {
            img[r.start] = [0, RECORD_CHECKPOINT, RECORD_DATAGRAM, 3, 0xff][rng.below(5)];
        }
        (6, _) => {
            // Cut: the body ends at `at`.
            img.drain(at..body.end);
        }
        (7, _) => {
            let n = 1 + rng.below(16);
            let run: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            img.splice(at..at, run);
        }
        _ => {
            let e = (at + 1 + rng.below(16)).min(body.end);
            img.drain(at..e);
        }
    }
}

/// An image of `honest`'s records whose CHECKPOINT announces `count`
/// datagrams and `bytes` payload bytes instead, resealed.
fn lying_image(honest: &[u8], count: u32, bytes: u64) -> Vec<u8> {
    let recs = records(honest);
    let first = recs.first().expect("a CHECKPOINT record").clone();
    let mut cp: Checkpoint =
        prost::Message::decode(&honest[first.start + 5..first.end]).expect("the CHECKPOINT");
    let q = cp.receive_queue.get_or_insert_with(Default::default);
    q.count = count;
    q.bytes = bytes;
    let lying = prost::Message::encode_to_vec(&cp);
    let mut img = honest[..HEADER_LEN].to_vec();
    img.push(RECORD_CHECKPOINT);
    img.extend_from_slice(&(lying.len() as u32).to_le_bytes());
    img.extend_from_slice(&lying);
    img.extend_from_slice(&honest[first.end..]);
    reseal(img)
}

/// The class of a decoder refusal, for the figures.
fn decode_reason(e: &ImageError) -> &'static str {
    match e {
        ImageError::TooShort(_) => "decode: too short",
        ImageError::BadMagic => "decode: bad magic",
        ImageError::UnsupportedFormat(_) => "decode: format",
        ImageError::ReservedFlags(_) => "decode: flags",
        ImageError::BodyTooLarge(_) => "decode: body too large",
        ImageError::Truncated { .. } => "decode: truncated",
        ImageError::TrailingBytes(_) => "decode: trailing bytes",
        ImageError::ChecksumMismatch => "decode: checksum",
        ImageError::BadRecord { .. } => "decode: bad record",
        ImageError::MissingCheckpoint => "decode: missing checkpoint",
        ImageError::Invalid(_) => "decode: invalid checkpoint",
    }
}

/// The restore step named in `stderr` (`restore failed at STEP: ...`),
/// without its numbers and addresses, for the figures.
fn restore_step(stderr: &str) -> Option<String> {
    let (_, rest) = stderr.split_once("restore failed at ")?;
    let step: String = rest
        .chars()
        .take_while(|c| !c.is_ascii_digit() && !matches!(c, '(' | ':' | '\n'))
        .collect();
    let step = step.trim();
    (!step.is_empty()).then(|| format!("restore: {step}"))
}

/// Runs the CLI on `bytes` (written to `name` in `dir`), checks every
/// property of the module documentation, and returns the class of the
/// outcome: `accepted`, or the reason of the refusal. On a failure the
/// image is kept (see [`keep`]); `case` names it in the message.
fn check(dir: &tempfile::TempDir, name: &str, bytes: &[u8], case: &str) -> String {
    let img = write_image(dir, name, bytes);
    let r = restore_cli(&img, &[]);
    verdict(&img, bytes, &r)
        .unwrap_or_else(|why| panic!("{case}: {why} (image kept at {})", keep(name, bytes)))
}

/// Copies a failing image out of the test's directory, which is removed:
/// the base images come from live sockets (their ports and timestamps
/// differ from run to run), so the seed alone may not give the same bytes.
fn keep(name: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("udp-repair-cli-fuzz-failed-{name}"));
    match std::fs::write(&path, bytes) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("nowhere: writing {}: {e}", path.display()),
    }
}

/// Whether `r`, the CLI's run on the image `bytes` at `img`, is one of the
/// outcomes the module documentation allows: its class, or what is wrong.
fn verdict(img: &Path, bytes: &[u8], r: &Outcome) -> Result<String, String> {
    let lib = decode(bytes);
    let Some(status) = r.status else {
        return Err(format!(
            "still running after {:?}: a hang; stderr: {}",
            common::TIME_LIMIT,
            r.stderr
        ));
    };
    if let Some(sig) = status.signal() {
        return Err(format!("killed by signal {sig}; stderr: {}", r.stderr));
    }
    match (r.code(), &lib) {
        (Some(0), _) if !r.ran => Err(format!(
            "exit 0, but the command did not run; stderr: {}",
            r.stderr
        )),
        (Some(0), Err(e)) => Err(format!(
            "the CLI accepted an image the decoder refuses ({e})"
        )),
        (Some(0), Ok(_)) => Ok("accepted".into()),
        (Some(1), _) if r.ran => Err(format!(
            "refused, but the command after `--` ran; stderr: {}",
            r.stderr
        )),
        (Some(1), _) if r.stderr.trim().is_empty() => Err("refused without a reason".into()),
        // load_owned: format!("{}: {e}", path.display()).
        (Some(1), Err(e)) => {
            let why = format!("{}: {e}", img.display());
            if r.stderr.contains(&why) {
                Ok(decode_reason(e).into())
            } else {
                Err(format!(
                    "the decoder refuses with {why:?}, the CLI says: {}",
                    r.stderr
                ))
            }
        }
        (Some(1), Ok(_)) => match restore_step(&r.stderr) {
            Some(step) => Ok(step),
            None if r.stderr.contains(&img.display().to_string()) => {
                Ok("other (names the image)".into())
            }
            None => Err(format!(
                "refused without a known reason (no image path, no restore step): {}",
                r.stderr
            )),
        },
        (code, _) => Err(format!(
            "exit {code:?} (101 is a panic), expected 0 or 1; stderr: {}",
            r.stderr
        )),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn restore_refuses_hostile_images_with_a_reason_and_runs_nothing() {
    let cases: usize = env_or("UDP_REPAIR_CLI_FUZZ_CASES", 200);
    let seed: u64 = env_or("UDP_REPAIR_CLI_FUZZ_SEED", 0x5eed_c11f_0022_0001);
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("udp-repair-cli-fuzz-")
        .tempdir()
        .expect("creating the image directory");
    // Real sockets: a zero-length datagram (which the default dump takes,
    // vouched for or not), small ones and one of 9000 bytes; connected;
    // IPv6.
    let bases = [
        dumped_image("127.0.0.1:0", &[0, 1, 17, 300, 1400, 9000], false),
        dumped_image("127.0.0.1:0", &[5, 64, 512], true),
        dumped_image("[::1]:0", &[3, 1200, 0, 40], false),
    ];

    // The images as dumped restore: the accepted path works, so that a
    // CLI refusing everything fails this test.
    for (b, img) in bases.iter().enumerate() {
        let case = format!("base image {b} (seed {seed:#x})");
        let got = check(&dir, &format!("base-{b}.img"), img, &case);
        assert_eq!(got, "accepted", "{case}: refused as dumped");
    }

    // Lying counts: refused by name, never run.
    let lies = [
        (u32::MAX, 0u64),
        (1 << 20, u64::MAX),
        (6, 1 << 40),
        (1000, 0),
    ];
    for (count, bytes) in lies {
        let case = format!("lying count {count}, bytes {bytes} (seed {seed:#x})");
        let img = lying_image(&bases[0], count, bytes);
        let why = decode(&img)
            .expect_err("a lying count is refused")
            .to_string();
        assert!(why.contains("announces"), "{case}: {why}");
        let got = check(&dir, "lying.img", &img, &case);
        assert_eq!(got, "decode: invalid checkpoint", "{case}");
    }

    // xorshift needs a state other than 0: seed 0 runs as seed 1.
    let mut rng = Rng::new(seed);
    let mut figures: BTreeMap<String, usize> = BTreeMap::new();
    let mut unchanged = 0usize;
    let mut unsealed = 0usize;
    for i in 0..cases {
        let base = &bases[i % bases.len()];
        let mut m = base.clone();
        for _ in 0..1 + rng.below(2) {
            mutate(&mut m, &mut rng);
        }
        // One in eight keeps the header and trailer of the original.
        let sealed = rng.below(8) != 0;
        let m = if sealed { reseal(m) } else { m };
        if m == *base {
            unchanged += 1;
            continue;
        }
        let case = format!(
            "case {i} (UDP_REPAIR_CLI_FUZZ_SEED={seed} UDP_REPAIR_CLI_FUZZ_CASES={})",
            i + 1
        );
        if !sealed {
            unsealed += 1;
            assert!(
                decode(&m).is_err(),
                "{case}: a changed image with its old checksum decodes (image kept at {})",
                keep(&format!("case-{i}.img"), &m)
            );
        }
        let got = check(&dir, &format!("case-{i}.img"), &m, &case);
        *figures.entry(got).or_default() += 1;
    }

    let accepted = figures.remove("accepted").unwrap_or(0);
    let refused: usize = figures.values().sum();
    println!(
        "CLI fuzz: {} images through `udp-repair restore` in {:.1} s (seed {seed:#x}): \
         {} as dumped, all accepted; {} with lying counts, all refused; {} mutated \
         ({unsealed} not resealed, {unchanged} more left unchanged by their mutations and \
         not run): {refused} refused {figures:?}, {accepted} accepted (the command ran)",
        bases.len() + lies.len() + refused + accepted,
        t0.elapsed().as_secs_f64(),
        bases.len(),
        lies.len(),
        refused + accepted,
    );
    assert_eq!(refused + accepted + unchanged, cases);
    assert!(
        refused > cases / 2,
        "most mutated images should be refused: {refused} of {cases}"
    );
}
