//! Recording in the example: `Record` / `StartRecording` / `StopRecording` (`PROTOCOL.md`)
//! on a [`RecordingTransport`] per participant, created on first use.
//!
//! Without `--record-dir` the RTP goes to `--record-host` from a port pair of the
//! participant's own (`--record-port`, then 16 ports further for each next participant),
//! for a receiver of the user's choosing: `Record` answers the SDP to give it. With
//! `--record-dir DIR` (and ffmpeg on the PATH) the server records itself: `StartRecording`
//! writes the track's SDP next to its file, starts `ffmpeg -c copy` into
//! `DIR/<room>-<publisher>-<unix time>.mkv`, waits until ffmpeg listens, then starts
//! sending (so the first keyframe is not lost); `StopRecording`, the publisher leaving the
//! participant's view or the participant leaving stops ffmpeg (`q` on its stdin), which
//! finishes the file.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rheomesh::router::Router;
use rheomesh::transport::RecordingTransport;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// Ports each participant's recording transport may use (8 tracks).
const PORTS_PER_PARTICIPANT: u32 = 16;
/// Participants whose port ranges are handed out before they are reused.
const PORT_RANGES: u32 = 1000;
/// How long ffmpeg may take to start listening.
const FFMPEG_START: Duration = Duration::from_secs(5);

/// The server's recording settings (`--record-host`, `--record-port`, `--record-dir`).
pub struct RecordSettings {
    host: String,
    port: u16,
    dir: Option<PathBuf>,
    next_range: AtomicU32,
}

impl RecordSettings {
    pub fn new(host: String, port: u16, dir: Option<PathBuf>) -> RecordSettings {
        RecordSettings {
            host,
            port,
            dir,
            next_range: AtomicU32::new(0),
        }
    }

    /// The first port of the next participant's range.
    fn next_base(&self) -> u16 {
        let room = (u32::from(u16::MAX) - u32::from(self.port)) / PORTS_PER_PARTICIPANT;
        let ranges = PORT_RANGES.min(room.max(1));
        let k = self.next_range.fetch_add(1, Ordering::Relaxed) % ranges;
        (u32::from(self.port) + k * PORTS_PER_PARTICIPANT).min(u32::from(u16::MAX - 1)) as u16
    }
}

/// One participant's recordings.
pub struct Recorder {
    settings: Arc<RecordSettings>,
    room: String,
    transport: Option<RecordingTransport>,
    /// ffmpeg of each track recorded into `--record-dir`.
    ffmpeg: HashMap<String, Child>,
}

impl Recorder {
    pub fn new(settings: Arc<RecordSettings>, room: &str) -> Recorder {
        Recorder {
            settings,
            room: room.to_owned(),
            transport: None,
            ffmpeg: HashMap::new(),
        }
    }

    async fn transport(&mut self, router: &Router) -> Result<RecordingTransport, String> {
        if let Some(t) = &self.transport {
            if !t.is_closed() {
                return Ok(t.clone());
            }
        }
        let port = self.settings.next_base();
        let t = router
            .create_recording_transport(self.settings.host.clone(), port)
            .await
            .map_err(|e| e.to_string())?;
        self.transport = Some(t.clone());
        Ok(t)
    }

    /// The SDP of these tracks as they will be sent (`Record`).
    pub async fn describe(&mut self, router: &Router, ids: &[String]) -> Result<String, String> {
        let t = self.transport(router).await?;
        t.generate_sdp_for(ids).await.map_err(|e| e.to_string())
    }

    /// Start sending a track (`StartRecording`); into a file with `--record-dir`, whose
    /// name it returns.
    pub async fn start(&mut self, router: &Router, id: &str) -> Result<Option<String>, String> {
        let t = self.transport(router).await?;
        let mut file = None;
        if let Some(dir) = self.settings.dir.clone() {
            if self.ffmpeg.contains_key(id) {
                return Err(format!("already recording {id}"));
            }
            let sdp = t
                .generate_sdp(id.to_owned())
                .await
                .map_err(|e| e.to_string())?;
            let port = t.port_of(id).ok_or("no port")?;
            let (child, out) =
                start_ffmpeg(&dir, &self.room, id, &sdp, &self.settings.host, port).await?;
            self.ffmpeg.insert(id.to_owned(), child);
            file = out.file_name().map(|f| f.to_string_lossy().into_owned());
        }
        match t.start_recording(id.to_owned()).await {
            Ok(_) => Ok(file),
            Err(e) => {
                if let Some(child) = self.ffmpeg.remove(id) {
                    stop_ffmpeg(child).await;
                }
                Err(e.to_string())
            }
        }
    }

    /// Stop sending a track (`StopRecording`) and finish its file: ffmpeg first, while
    /// packets still come (it reads its stdin between packets).
    pub async fn stop(&mut self, id: &str) -> Result<(), String> {
        if let Some(child) = self.ffmpeg.remove(id) {
            stop_ffmpeg(child).await;
        }
        match &self.transport {
            Some(t) => t.stop_recording(id).await.map_err(|e| e.to_string()),
            None => Err(format!("not recording {id}")),
        }
    }

    /// Stop everything (the participant leaves).
    pub async fn close(&mut self) {
        for (_, child) in self.ffmpeg.drain() {
            stop_ffmpeg(child).await;
        }
        if let Some(t) = self.transport.take() {
            t.close().await;
        }
    }
}

/// A file name part from a client-chosen id: letters, digits, `-` and `_` only.
fn file_part(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Start ffmpeg recording `sdp` into `dir` and wait until it listens on `port`.
async fn start_ffmpeg(
    dir: &std::path::Path,
    room: &str,
    id: &str,
    sdp: &str,
    host: &str,
    port: u16,
) -> Result<(Child, PathBuf), String> {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let base = dir.join(format!("{}-{}-{unix}", file_part(room), file_part(id)));
    let sdp_path = base.with_extension("sdp");
    let out = base.with_extension("mkv");
    tokio::fs::write(&sdp_path, sdp)
        .await
        .map_err(|e| format!("cannot write {}: {e}", sdp_path.display()))?;
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,rtp,udp", "-i"])
        .arg(&sdp_path)
        .args(["-c", "copy", "-y"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
    // ffmpeg listens once it has bound the port: until then binding it here succeeds.
    let deadline = tokio::time::Instant::now() + FFMPEG_START;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("ffmpeg exited at start: {status}"));
        }
        if UdpSocket::bind((host, port)).is_err() {
            tracing::info!(file = %out.display(), "recording");
            return Ok((child, out));
        }
        if tokio::time::Instant::now() >= deadline {
            stop_ffmpeg(child).await;
            return Err("ffmpeg did not start listening".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ask ffmpeg to finish its file: `q` on its stdin (read between packets), then, if no
/// packet comes to let it read that (the publisher left), SIGINT (which also interrupts a
/// blocked read; ffmpeg still writes the file's end), then kill.
async fn stop_ffmpeg(mut child: Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"q").await;
        let _ = stdin.flush().await;
    }
    async fn waited(child: &mut Child, secs: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(secs), child.wait())
            .await
            .is_ok()
    }
    if waited(&mut child, 2).await {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
    }
    if !waited(&mut child, 3).await {
        let _ = child.kill().await;
    }
}
