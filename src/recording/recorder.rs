//! The local recording of one call: the bridge hands a [`Recorder`] the frames it forwards,
//! as the bytes that arrived (a reference count, no copy), and never waits: when the writer
//! falls behind its queue fills and frames are dropped and counted. The writer task reads
//! them, places them with [`Playout`], decodes them and writes the WAV, updating its header
//! as it goes.

use super::playout::Playout;
use super::wav;
use crate::events::LocalRecording;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Frames queued for the writer at most: ten seconds of a call, both ways.
const QUEUE: usize = 1000;
/// Bytes of samples gathered before a write: half a second.
const WRITE_EVERY: usize = 16_000;
/// How often the header's sizes are brought up to date while the call lasts: a process killed
/// mid-call leaves a file valid up to here even before it is repaired.
const HEADER_EVERY: u64 = 2 * 32_000;

/// What the bridge saw, in the order it saw it.
#[derive(Debug)]
enum Feed {
    /// A `media` message from Twilio (the callee).
    Callee(Bytes),
    /// A `reply.audio` message from the agent, as forwarded to Twilio.
    Agent(Bytes),
    /// A `clear` sent to Twilio.
    Clear,
    /// A mark of the recording's sent to Twilio.
    Mark(String),
    /// A mark Twilio echoed (any mark: the model knows its own).
    Echo(String),
}

/// The prefix of the recording's marks (Twilio echoes them; the bridge ignores the echoes).
pub const MARK_PREFIX: &str = "dialer-rec-";

/// The bridge's end of a call's recording.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Feed>,
    dropped: Arc<AtomicU64>,
    marks: Arc<AtomicU64>,
}

impl Recorder {
    /// A callee `media` message, as received.
    #[inline]
    pub fn callee(&self, frame: &Bytes) {
        self.push(Feed::Callee(frame.clone()));
    }

    /// An agent `reply.audio` message, as received (its audio went to Twilio unchanged).
    #[inline]
    pub fn agent(&self, frame: &Bytes) {
        self.push(Feed::Agent(frame.clone()));
    }

    /// Twilio was told to drop the audio it has not played.
    pub fn clear(&self) {
        self.push(Feed::Clear);
    }

    /// A new mark for the bridge to send to Twilio, and to hand back with [`Recorder::mark`]:
    /// one just before each reply's first audio, and one just before each `clear`. Their echoes say
    /// where Twilio's playback is (see [`super::playout`]).
    pub fn next_mark(&self) -> String {
        format!(
            "{MARK_PREFIX}{}",
            self.marks.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The mark was sent to Twilio.
    pub fn mark(&self, name: String) {
        self.push(Feed::Mark(name));
    }

    /// Twilio echoed a mark (the recording's own, or one the bridge told it about).
    pub fn echo(&self, name: &str) {
        self.push(Feed::Echo(name.to_string()));
    }

    /// Never waits: a full queue loses the frame, and the loss is counted.
    #[inline]
    fn push(&self, feed: Feed) {
        if self.tx.try_send(feed).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot write the recording {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the recording's writer stopped")]
    Stopped,
}

/// The writer's end: what the call awaits once the bridge is done.
pub struct Writing {
    task: JoinHandle<Result<LocalRecording, RecordingError>>,
}

impl Writing {
    /// Wait for the file to be complete (the bridge's [`Recorder`]s must be dropped first).
    pub async fn finish(self) -> Result<LocalRecording, RecordingError> {
        self.task.await.map_err(|_| RecordingError::Stopped)?
    }

    /// Stop writing at once, as a killed process would (tests of recovery).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Start recording into `path`: a recorder for the bridge and the writer's handle.
pub fn start(path: PathBuf) -> (Recorder, Writing) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(write(path, rx, dropped.clone()));
    let marks = Arc::new(AtomicU64::new(0));
    (Recorder { tx, dropped, marks }, Writing { task })
}

#[derive(Deserialize)]
struct TwilioMedia<'a> {
    #[serde(borrow)]
    media: MediaBody<'a>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow, default)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct ReplyAudio<'a> {
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
}

/// μ-law from base64; `None` for what is not valid base64 (it reached nobody's ears either).
fn audio(b64: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

struct File {
    path: PathBuf,
    file: tokio::fs::File,
    /// Bytes of samples written so far (after the header).
    data: u64,
    /// `data` when the header was last brought up to date.
    header_at: u64,
}

impl File {
    async fn create(path: PathBuf) -> Result<Self, RecordingError> {
        let err = |source| RecordingError::Write {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(err)?;
        }
        let mut file = tokio::fs::File::create(&path).await.map_err(err)?;
        file.write_all(&wav::header(0)).await.map_err(err)?;
        Ok(Self {
            path,
            file,
            data: 0,
            header_at: 0,
        })
    }

    fn err(&self, source: std::io::Error) -> RecordingError {
        RecordingError::Write {
            path: self.path.clone(),
            source,
        }
    }

    async fn append(&mut self, pcm: &[u8]) -> Result<(), RecordingError> {
        self.file.write_all(pcm).await.map_err(|e| self.err(e))?;
        self.data += pcm.len() as u64;
        if self.data - self.header_at >= HEADER_EVERY {
            self.fix_header().await?;
        }
        Ok(())
    }

    async fn fix_header(&mut self) -> Result<(), RecordingError> {
        let header = wav::header(self.data);
        let r: std::io::Result<()> = async {
            self.file.seek(std::io::SeekFrom::Start(0)).await?;
            self.file.write_all(&header).await?;
            self.file.seek(std::io::SeekFrom::End(0)).await?;
            Ok(())
        }
        .await;
        r.map_err(|e| self.err(e))?;
        self.header_at = self.data;
        Ok(())
    }

    async fn close(mut self) -> Result<(), RecordingError> {
        self.fix_header().await?;
        self.file.flush().await.map_err(|e| self.err(e))?;
        self.file.sync_all().await.map_err(|e| self.err(e))
    }
}

async fn write(
    path: PathBuf,
    mut rx: mpsc::Receiver<Feed>,
    dropped: Arc<AtomicU64>,
) -> Result<LocalRecording, RecordingError> {
    let mut file = match File::create(path).await {
        Ok(file) => file,
        Err(e) => {
            // Nothing can be written: let the bridge's sends fail fast instead of queueing.
            rx.close();
            return Err(e);
        }
    };
    let mut playout = Playout::new();
    let mut pairs: Vec<[u8; 2]> = Vec::new();
    let mut pcm: Vec<u8> = Vec::with_capacity(WRITE_EVERY * 2);
    while let Some(feed) = rx.recv().await {
        match feed {
            Feed::Callee(frame) => {
                let Ok(msg) = serde_json::from_slice::<TwilioMedia<'_>>(&frame) else {
                    continue;
                };
                let Some(samples) = audio(&msg.media.payload) else {
                    continue;
                };
                // Without a timestamp the frame follows the previous one.
                let at = msg
                    .media
                    .timestamp
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(playout.position() / 8);
                pairs.clear();
                playout.callee(at, &samples, &mut pairs);
                wav::encode_pairs(&pairs, &mut pcm);
            }
            Feed::Agent(frame) => {
                if let Ok(msg) = serde_json::from_slice::<ReplyAudio<'_>>(&frame)
                    && let Some(samples) = audio(&msg.data)
                {
                    playout.agent(&samples);
                }
            }
            Feed::Clear => playout.clear(),
            Feed::Mark(name) => playout.mark(name),
            Feed::Echo(name) => playout.echo(&name),
        }
        if pcm.len() >= WRITE_EVERY {
            file.append(&pcm).await?;
            pcm.clear();
        }
    }
    // The call is over: what Twilio still held was never played, unless a mark said so.
    pairs.clear();
    playout.finish(&mut pairs);
    wav::encode_pairs(&pairs, &mut pcm);
    file.append(&pcm).await?;
    let path = file.path.display().to_string();
    file.close().await?;
    Ok(LocalRecording {
        path,
        frames_dropped: dropped.load(Ordering::Relaxed),
    })
}

/// How long a call waits for its recording to be complete once the bridge is done: the writer
/// has at most a few seconds of audio left to decode and write.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::playout::SILENCE;
    use crate::recording::wav::ulaw_to_pcm;
    use base64::engine::general_purpose::STANDARD;

    fn media(ts: u64, audio: &[u8]) -> Bytes {
        Bytes::from(
            serde_json::json!({"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2","timestamp":ts.to_string(),"payload":STANDARD.encode(audio)},"streamSid":"MZ1"})
                .to_string(),
        )
    }

    fn reply(audio: &[u8]) -> Bytes {
        Bytes::from(
            serde_json::json!({"type":"reply.audio","reply_id":"r","data":STANDARD.encode(audio)})
                .to_string(),
        )
    }

    fn pcm(codes: &[u8]) -> Vec<i16> {
        codes.iter().map(|&c| ulaw_to_pcm(c)).collect()
    }

    /// 20 ms callee frames of distinct codes (so a misplaced one shows).
    fn frame(n: u8) -> Vec<u8> {
        (0..160)
            .map(|i| n.wrapping_mul(31).wrapping_add(i as u8) | 1)
            .collect()
    }

    #[tokio::test]
    async fn both_channels_are_bit_exact_and_cleared_audio_is_not_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec").join("CA1.wav");
        let (recorder, writing) = start(path.clone());
        let mut callee = Vec::new();
        // No window of the greeting repeats, so a cleared part cannot hide in a heard one.
        let greeting: Vec<u8> = (0..600usize)
            .map(|i| ((i * 7) % 256 + i / 256) as u8)
            .collect();
        let answer: Vec<u8> = (0..100).map(|i| 200 - (i % 50) as u8).collect();
        for n in 0..10u8 {
            if n == 4 {
                continue;
            }
            recorder.callee(&media(u64::from(n) * 20, &frame(n)));
            callee.extend(frame(n));
            if n == 1 {
                // 600 samples of greeting, sent at once after frame 1, behind a mark that
                // Twilio echoes at once (at 40 ms).
                let mark = recorder.next_mark();
                recorder.mark(mark.clone());
                recorder.agent(&reply(&greeting[..300]));
                recorder.agent(&reply(&greeting[300..]));
                recorder.echo(&mark);
            }
            if n == 3 {
                // The callee barged in at 80 ms: a mark, the clear, and the answer right away.
                let (cleared, answered) = (recorder.next_mark(), recorder.next_mark());
                recorder.mark(cleared.clone());
                recorder.clear();
                recorder.mark(answered.clone());
                recorder.agent(&reply(&answer));
                // Twilio got the clear 20 ms later: by then 480 samples had been heard, and
                // the other 120 are cleared. The answer starts then.
                recorder.callee(&media(80, &frame(4)));
                callee.extend(frame(4));
                recorder.echo(&cleared);
                recorder.echo(&answered);
                recorder.echo("dialer-end-call");
                continue;
            }
        }
        drop(recorder);
        let done = writing.finish().await.unwrap();
        assert_eq!(done.path, path.display().to_string());
        assert_eq!(done.frames_dropped, 0);
        let (left, right) = wav::read(&path).unwrap();
        assert_eq!(left, pcm(&callee), "the callee's side, bit for bit");
        let mut heard = vec![SILENCE; 320];
        heard.extend_from_slice(&greeting[..480]);
        heard.extend_from_slice(&answer);
        heard.resize(1600, SILENCE);
        assert_eq!(right.len(), 1600);
        assert_eq!(right, pcm(&heard), "the agent's side as heard");
        assert!(
            !right
                .windows(120)
                .any(|w| w == pcm(&greeting[480..]).as_slice()),
            "the cleared greeting is not in the file"
        );
    }

    #[tokio::test]
    async fn a_writer_killed_mid_call_leaves_a_file_that_is_valid_or_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CA2.wav");
        let (recorder, writing) = start(path.clone());
        // Five seconds of callee audio: past a header update and several writes.
        for n in 0..250u64 {
            recorder.callee(&media(n * 20, &frame(n as u8)));
        }
        // Let the writer get the frames to disk, then kill it without closing the file.
        let on_disk = 44 + 5 * 32_000 - WRITE_EVERY as u64;
        let wait = async {
            while std::fs::metadata(&path).map_or(0, |m| m.len()) < on_disk {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap();
        writing.abort();
        drop(recorder);
        // The header was brought up to date as the call went on: already a valid file, if a
        // shorter one than the data written since.
        let bytes = std::fs::read(&path).unwrap();
        let data = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]) as u64;
        assert!(
            data >= HEADER_EVERY && data.is_multiple_of(wav::BLOCK),
            "{data}"
        );
        // Recovery makes it describe every sample on disk.
        wav::repair(&path).unwrap();
        let (left, _) = wav::read(&path).unwrap();
        assert_eq!(
            left.len() as u64 * wav::BLOCK + 44,
            std::fs::metadata(&path).unwrap().len()
        );
        assert!(left.len() as u64 * wav::BLOCK >= on_disk - 44);
        let expected: Vec<u8> = (0..250u64).flat_map(|n| frame(n as u8)).collect();
        assert_eq!(left, pcm(&expected[..left.len()]));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        // A folder that cannot be created: the writer stops at once.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let (recorder, writing) = start(blocker.join("CA3.wav"));
        let err = writing.finish().await.unwrap_err();
        assert!(err.to_string().contains("CA3.wav"), "{err}");
        for n in 0..(QUEUE as u64 + 5) {
            recorder.callee(&media(n * 20, &frame(1)));
        }
        assert_eq!(
            recorder.dropped.load(Ordering::Relaxed),
            QUEUE as u64 + 5,
            "every frame refused at once"
        );
    }
}
