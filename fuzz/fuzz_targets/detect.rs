//! Protocol detection (`transport::detect`): a connection's first bytes,
//! arriving in arbitrary pieces.
//!
//! Input: byte 0 picks how the bytes are cut into reads; the rest is what
//! the client sends. Checks: no panic; [`detect`] reads at most
//! `DETECT_BUFFER` bytes and hands back exactly a prefix of what was sent;
//! its outcome agrees with [`classify`] of those bytes; and a decision
//! taken on a prefix never changes when more bytes arrive (detection stops
//! at the first decision, so a later byte must not have meant otherwise).
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use weft_proxy::transport::detect::{DETECT_BUFFER, Outcome, classify, detect};

/// Sends `data` in reads of 1..=`step` bytes (varied), then EOF.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.turn += 1;
        let n = (1 + (self.turn * 7) % self.step).min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime")
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else { return };
    let step = 1 + usize::from(mode) * 8;
    let mut io = Pieces { data, step, turn: 0 };
    let (outcome, read) =
        runtime().block_on(detect(&mut io, Duration::from_secs(3600))).expect("reading from memory cannot fail");

    assert!(read.len() <= DETECT_BUFFER, "read {} bytes, more than DETECT_BUFFER", read.len());
    assert!(data.starts_with(&read), "the bytes to replay are not what the client sent");
    match classify(&read) {
        Some(decided) => assert_eq!(outcome, decided, "detect disagrees with classify on {read:?}"),
        None if read.is_empty() => assert_eq!(outcome, Outcome::Closed),
        // Undecided: the client closed early or the buffer filled up.
        None => assert_eq!(outcome, Outcome::Opaque),
    }

    // A decision on a prefix stands whatever follows.
    let whole = &data[..data.len().min(2 * DETECT_BUFFER)];
    if let Some(final_outcome) = classify(whole) {
        for cut in [whole.len() / 2, usize::from(mode) % (whole.len() + 1), read.len().min(whole.len())] {
            if let Some(early) = classify(&whole[..cut]) {
                assert_eq!(
                    early,
                    final_outcome,
                    "{:?} decided {early:?}, but with more bytes {final_outcome:?}",
                    &whole[..cut]
                );
            }
        }
    }
});
